//! Prometheus plumbing shared by both services: each application owns a registry (so several can run in
//! one test process) and serves it in the text exposition format.

use std::time::Instant;

use actix_web::{
    body::MessageBody,
    dev::{ServiceRequest, ServiceResponse},
    middleware::Next,
    HttpMessage, HttpResponse,
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
/// 5xx-ratio alert and latency dashboards read. Routes are the patterns of the routes that served them
/// (`/message/{id}`), and every request no route served is `unmatched`, so no client can grow the label set.
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

/// The route that served a request, set by the route itself (see [`record_route`]) once routing is done,
/// and read by [`track`] when the answer is out. Shared through the request's extensions because the
/// request itself is the router's while it routes.
#[derive(Clone, Default)]
struct ServedBy(std::rc::Rc<std::cell::Cell<Option<&'static str>>>);

/// Called by a route's own middleware: the request is served by the route of `pattern`.
pub fn record_route(request: &ServiceRequest, pattern: &'static str) {
    if let Some(served) = request.extensions().get::<ServedBy>() {
        served.0.set(Some(pattern));
    }
}

/// The label of a request's method: one of the methods HTTP defines, else `other`, so that no client can
/// grow the label set by inventing methods.
fn method_label(method: &actix_web::http::Method) -> &'static str {
    match method.as_str() {
        "GET" => "GET",
        "HEAD" => "HEAD",
        "POST" => "POST",
        "PUT" => "PUT",
        "DELETE" => "DELETE",
        "PATCH" => "PATCH",
        "OPTIONS" => "OPTIONS",
        "CONNECT" => "CONNECT",
        "TRACE" => "TRACE",
        _ => "other",
    }
}

/// Middleware body recording every request in `metrics`, labelled from closed sets only: the pattern of
/// the route that served it (else `unmatched`), a known method (else `other`) and the status. Wrap an
/// app with `from_fn(move |req, next| track(metrics.clone(), req, next))`.
pub async fn track<B: MessageBody>(
    metrics: HttpMetrics,
    request: ServiceRequest,
    next: Next<B>,
) -> Result<ServiceResponse<B>, actix_web::Error> {
    let started = Instant::now();
    let served = ServedBy::default();
    request.extensions_mut().insert(served.clone());
    let method = method_label(request.method());
    let response = next.call(request).await;
    let status = match &response {
        Ok(response) => response.status(),
        Err(error) => error.as_response_error().status_code(),
    };
    metrics.observe(
        served.0.get().unwrap_or("unmatched"),
        method,
        status.as_u16(),
        started.elapsed().as_secs_f64(),
    );
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn methods_are_labelled_from_a_closed_set() {
        use actix_web::http::Method;
        assert_eq!(method_label(&Method::GET), "GET");
        assert_eq!(method_label(&Method::TRACE), "TRACE");
        for invented in ["M00001XXXX", "get", "PROPFIND", "BREW"] {
            let method = Method::from_bytes(invented.as_bytes()).unwrap();
            assert_eq!(method_label(&method), "other", "{invented}");
        }
    }
}
