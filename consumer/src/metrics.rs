//! Prometheus metrics of the consumer, served at `/metrics`.

use prometheus::{Histogram, HistogramOpts, IntCounter, IntGauge, IntGaugeVec, Opts, Registry};

/// The consumer's counters. Each application owns its registry, so several can run in one process.
pub struct Metrics {
    registry: Registry,
    /// Rows newly inserted.
    pub messages_stored: IntCounter,
    /// Deliveries whose id was already stored (redeliveries), skipped.
    pub messages_duplicate: IntCounter,
    /// Deliveries rejected to the dead-letter queue.
    pub messages_dead_lettered: IntCounter,
    /// Keyed messages dead-lettered because their key names a stored message with other content.
    pub key_conflicts: IntCounter,
    /// Messages per insert.
    pub batch_size: Histogram,
    /// Time of one batch insert.
    pub batch_seconds: Histogram,
    /// 1 while subscribed to the queue.
    pub broker_connected: IntGauge,
    /// 1 while the last write succeeded.
    pub database_up: IntGauge,
    /// Messages in each queue of the topology, dead letters included, by state.
    pub queue_messages: IntGaugeVec,
}

impl Metrics {
    pub fn new() -> Self {
        let counter = |name: &str, help: &str| IntCounter::new(name, help).expect("valid metric");
        let gauge = |name: &str, help: &str| IntGauge::new(name, help).expect("valid metric");
        let histogram = |name: &str, help: &str, buckets: Vec<f64>| {
            Histogram::with_opts(HistogramOpts::new(name, help).buckets(buckets))
                .expect("valid metric")
        };
        let metrics = Self {
            registry: Registry::new(),
            messages_stored: counter("consumer_messages_stored_total", "Rows newly inserted"),
            messages_duplicate: counter(
                "consumer_messages_duplicate_total",
                "Redelivered messages whose id was already stored",
            ),
            messages_dead_lettered: counter(
                "consumer_messages_dead_lettered_total",
                "Deliveries rejected to the dead-letter queue",
            ),
            key_conflicts: counter(
                "consumer_key_conflicts_total",
                "Messages dead-lettered because their Idempotency-Key was reused with a different message",
            ),
            batch_size: histogram(
                "consumer_batch_size",
                "Messages per insert",
                vec![1.0, 10.0, 50.0, 100.0, 250.0, 500.0, 1000.0, 2000.0],
            ),
            batch_seconds: histogram(
                "consumer_batch_seconds",
                "Time of one batch insert",
                vec![0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0],
            ),
            broker_connected: gauge(
                "consumer_broker_connected",
                "1 while subscribed to the queue",
            ),
            database_up: gauge("consumer_database_up", "1 while the last write succeeded"),
            queue_messages: IntGaugeVec::new(
                Opts::new(
                    "consumer_queue_messages",
                    "Messages in each queue of the topology (dead letters included), as the broker last reported",
                ),
                &["queue", "state"],
            )
            .expect("valid metric"),
        };
        common::metrics::register(
            &metrics.registry,
            vec![
                Box::new(metrics.messages_stored.clone()),
                Box::new(metrics.messages_duplicate.clone()),
                Box::new(metrics.messages_dead_lettered.clone()),
                Box::new(metrics.key_conflicts.clone()),
                Box::new(metrics.batch_size.clone()),
                Box::new(metrics.batch_seconds.clone()),
                Box::new(metrics.broker_connected.clone()),
                Box::new(metrics.database_up.clone()),
                Box::new(metrics.queue_messages.clone()),
            ],
        );
        metrics
    }

    /// The answer to `GET /metrics`: every metric in the Prometheus text format.
    pub fn response(&self) -> actix_web::HttpResponse {
        common::metrics::response(&self.registry)
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}
