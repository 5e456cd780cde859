//! Prometheus metrics of the publisher, served at `/metrics`.

use common::web::metrics::HttpMetrics;
use prometheus::{Histogram, HistogramOpts, IntCounter, IntCounterVec, IntGauge, Opts, Registry};

/// The publisher's counters. Each application owns its registry, so several can run in one process.
pub(crate) struct Metrics {
    registry: Registry,
    /// Messages confirmed by the broker and answered 202.
    pub messages_accepted: IntCounter,
    /// Requests refused, by HTTP status.
    pub requests_refused: IntCounterVec,
    /// Publish failures on the broker side, by kind.
    pub broker_errors: IntCounterVec,
    /// Time from the first publish of a request to its last confirm.
    pub confirm_seconds: Histogram,
    /// 1 while a broker connection is up.
    pub broker_connected: IntGauge,
    /// Usable links in the pool, up to `AMQP_CONNECTIONS`.
    pub broker_links: IntGauge,
    /// Messages published again because their first publish was in doubt.
    pub republished: IntCounter,
    /// Broker connections opened since start: `AMQP_CONNECTIONS`, unless links failed.
    pub connections: IntCounter,
    /// 1 when `/readyz` answers 200, as of the last scrape.
    pub ready: IntGauge,
    /// Bytes held against `MAX_INFLIGHT_BYTES`, as of the last scrape.
    pub inflight_bytes: IntGauge,
    /// Requests answered, and their latency.
    pub http: HttpMetrics,
}

impl Metrics {
    pub(crate) fn new() -> Self {
        let registry = Registry::new();
        let messages_accepted = IntCounter::new(
            "publisher_messages_accepted_total",
            "Messages confirmed by the broker and answered 202",
        )
        .expect("valid metric");
        let requests_refused = IntCounterVec::new(
            Opts::new(
                "publisher_requests_refused_total",
                "Publish requests refused, by status",
            ),
            &["status"],
        )
        .expect("valid metric");
        let broker_errors = IntCounterVec::new(
            Opts::new(
                "publisher_broker_errors_total",
                "Broker-side publish failures, by kind",
            ),
            &["kind"],
        )
        .expect("valid metric");
        for kind in crate::broker::PublishFailure::KINDS {
            broker_errors.with_label_values(&[kind]);
        }
        let confirm_seconds = Histogram::with_opts(
            HistogramOpts::new(
                "publisher_confirm_seconds",
                "Time from publishing a request's messages to their last confirm",
            )
            .buckets(vec![
                0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
            ]),
        )
        .expect("valid metric");
        let broker_connected = IntGauge::new(
            "publisher_broker_connected",
            "1 while a broker connection is up",
        )
        .expect("valid metric");
        let broker_links = IntGauge::new(
            "publisher_broker_links",
            "Usable broker connections in the pool",
        )
        .expect("valid metric");
        let republished = IntCounter::new(
            "publisher_messages_republished_total",
            "Messages published again, with the same id, because an earlier publish of them was in doubt",
        )
        .expect("valid metric");
        let connections = IntCounter::new(
            "publisher_broker_connections_total",
            "Broker connections opened since start",
        )
        .expect("valid metric");
        let ready = IntGauge::new(
            "publisher_ready",
            "1 when /readyz answers 200, as of the last scrape",
        )
        .expect("valid metric");
        let inflight_bytes = IntGauge::new(
            "publisher_inflight_bytes",
            "Request bytes received and not yet written to the broker, held against MAX_INFLIGHT_BYTES, as of the last scrape",
        )
        .expect("valid metric");
        let http = HttpMetrics::new("publisher");
        common::web::metrics::register(
            &registry,
            vec![
                Box::new(messages_accepted.clone()),
                Box::new(requests_refused.clone()),
                Box::new(broker_errors.clone()),
                Box::new(confirm_seconds.clone()),
                Box::new(broker_connected.clone()),
                Box::new(broker_links.clone()),
                Box::new(republished.clone()),
                Box::new(connections.clone()),
                Box::new(ready.clone()),
                Box::new(inflight_bytes.clone()),
            ],
        );
        common::web::metrics::register(&registry, http.collectors());
        common::web::metrics::register(
            &registry,
            vec![Box::new(common::telemetry::SpanMetrics::new("publisher"))],
        );
        Self {
            registry,
            messages_accepted,
            requests_refused,
            broker_errors,
            confirm_seconds,
            broker_connected,
            broker_links,
            republished,
            connections,
            ready,
            inflight_bytes,
            http,
        }
    }

    /// The answer to `GET /metrics`: every metric in the Prometheus text format.
    pub(crate) fn response(&self) -> actix_web::HttpResponse {
        common::web::metrics::response(&self.registry)
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}
