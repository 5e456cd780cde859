//! Prometheus plumbing shared by both services: each application owns a registry (so several can run in
//! one test process) and serves it in the text exposition format.

use std::time::Instant;

use actix_web::{
    body::MessageBody,
    dev::{ServiceRequest, ServiceResponse},
    middleware::Next,
    HttpResponse,
};
use prometheus::{
    core::Collector, Encoder, HistogramOpts, HistogramVec, IntCounterVec, Opts, Registry,
    TextEncoder,
};

/// Registers collectors that were just created; a name clash is a programming error.
pub fn register(registry: &Registry, collectors: Vec<Box<dyn Collector>>) {
    for collector in collectors {
        registry
            .register(collector)
            .expect("metric registered once");
    }
}

/// The answer to `GET /metrics`: every metric in `registry`, in the text exposition format.
pub fn response(registry: &Registry) -> HttpResponse {
    let mut buffer = Vec::new();
    TextEncoder::new()
        .encode(&registry.gather(), &mut buffer)
        .expect("text encoding cannot fail");
    HttpResponse::Ok()
        .content_type("text/plain; version=0.0.4; charset=utf-8")
        .body(buffer)
}

/// Requests a service answered, by route, method and status, and how long each took to answer: what the
/// 5xx-ratio alert and latency dashboards read. Routes are the matched patterns (`/message/{id}`), and
/// every path no route matches is `other`, so no client can grow the label set.
#[derive(Clone)]
pub struct HttpMetrics {
    requests: IntCounterVec,
    seconds: HistogramVec,
}

impl HttpMetrics {
    /// `<service>_http_requests_total` and `<service>_http_request_duration_seconds`.
    pub fn new(service: &str) -> Self {
        let requests = IntCounterVec::new(
            Opts::new(
                format!("{service}_http_requests_total"),
                "HTTP requests answered, by route pattern, method and status",
            ),
            &["route", "method", "status"],
        )
        .expect("valid metric");
        let seconds = HistogramVec::new(
            HistogramOpts::new(
                format!("{service}_http_request_duration_seconds"),
                "Time from a request's arrival to its response's head, by route pattern and method",
            )
            .buckets(vec![
                0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
                10.0,
            ]),
            &["route", "method"],
        )
        .expect("valid metric");
        Self { requests, seconds }
    }

    /// The collectors to register with the service's registry.
    pub fn collectors(&self) -> Vec<Box<dyn Collector>> {
        vec![
            Box::new(self.requests.clone()),
            Box::new(self.seconds.clone()),
        ]
    }

    fn observe(&self, route: &str, method: &str, status: u16, seconds: f64) {
        self.requests
            .with_label_values(&[route, method, &status.to_string()])
            .inc();
        self.seconds
            .with_label_values(&[route, method])
            .observe(seconds);
    }
}

/// Middleware body recording every request in `metrics`; wrap an app with
/// `from_fn(move |req, next| track(metrics.clone(), req, next))`.
pub async fn track<B: MessageBody>(
    metrics: HttpMetrics,
    request: ServiceRequest,
    next: Next<B>,
) -> Result<ServiceResponse<B>, actix_web::Error> {
    let started = Instant::now();
    let route = request
        .match_pattern()
        .unwrap_or_else(|| "other".to_owned());
    let method = request.method().as_str().to_owned();
    let response = next.call(request).await;
    let status = match &response {
        Ok(response) => response.status(),
        Err(error) => error.as_response_error().status_code(),
    };
    metrics.observe(
        &route,
        &method,
        status.as_u16(),
        started.elapsed().as_secs_f64(),
    );
    response
}
