//! Prometheus metrics of the consumer, served at `/metrics`.

use common::web::metrics::HttpMetrics;
use prometheus::{
    GaugeVec, Histogram, HistogramOpts, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts,
    Registry,
};

/// The consumer's counters. Each application owns its registry, so several can run in one process.
pub(crate) struct Metrics {
    registry: Registry,
    /// Rows newly inserted.
    pub messages_stored: IntCounter,
    /// Deliveries whose id was already stored (redeliveries), skipped.
    pub messages_duplicate: IntCounter,
    /// Deliveries rejected to the dead-letter queue.
    pub messages_dead_lettered: IntCounter,
    /// Copies to the dead-letter queue that the broker refused (the queue is at its length limit, or
    /// the broker is out of resources), and originals rejected without a copy because the broker blocks
    /// the dead-letter connection (a resource alarm); a quorum queue keeps each until the dead-letter
    /// queue takes it.
    pub dead_letters_refused: IntCounter,
    /// Keyed messages dead-lettered because their key names a stored message with other content.
    pub key_conflicts: IntCounter,
    /// Messages per insert.
    pub batch_size: Histogram,
    /// Time of one batch insert.
    pub batch_seconds: Histogram,
    /// Time from a message's acceptance by the publisher (`received_at`) to the commit of its row.
    pub end_to_end_seconds: Histogram,
    /// 1 while subscribed to the queue.
    pub broker_connected: IntGauge,
    /// 1 while the last write succeeded.
    pub database_up: IntGauge,
    /// Messages in each queue of the topology, dead letters included, by state: `ready` as the broker
    /// reports it, `unacknowledged` as this process holds them.
    pub queue_messages: IntGaugeVec,
    /// Consumers of each drained queue, as the broker reports them.
    pub queue_consumers: IntGaugeVec,
    /// Messages in the dead-letter queue.
    pub dead_letter_messages: IntGaugeVec,
    /// Messages this process settled from each queue per second, between the last two looks.
    pub drain_rate: GaugeVec,
    /// Messages arriving in each queue per second, as this process estimates them.
    pub inflow_rate: GaugeVec,
    /// Batch writers each queue may run at once.
    pub writers: IntGaugeVec,
    /// Every decision of the writer scaler, by queue, direction and reason.
    pub scaling_decisions: IntCounterVec,
    /// Event streams and waiting long polls of the feed open now.
    pub feed_followers: IntGauge,
    /// Feed followers refused because `FEED_MAX_FOLLOWERS` were open.
    pub feed_refused: IntCounter,
    /// Event streams closed because their reader took nothing for `FEED_SLOW_READER_SECS`.
    pub feed_slow_readers: IntCounter,
    /// When a maintenance round (partitions ahead, retention) last finished, as a Unix time.
    pub maintenance_last_success: IntGauge,
    /// Maintenance rounds that failed.
    pub maintenance_failures: IntCounter,
    /// Partitions of `messages` (the default one aside).
    pub message_partitions: IntGauge,
    /// Partitions past `RETENTION` by more than an hour: what maintenance should have dropped.
    pub expired_partitions: IntGauge,
    /// 1 when `/readyz` would answer 200, as of the last scrape.
    pub ready: IntGauge,
    /// Requests answered, and their latency.
    pub http: HttpMetrics,
}

impl Metrics {
    pub(crate) fn new() -> Self {
        let counter = |name: &str, help: &str| IntCounter::new(name, help).expect("valid metric");
        let gauge = |name: &str, help: &str| IntGauge::new(name, help).expect("valid metric");
        let histogram = |name: &str, help: &str, buckets: Vec<f64>| {
            Histogram::with_opts(HistogramOpts::new(name, help).buckets(buckets))
                .expect("valid metric")
        };
        let gauges = |name: &str, help: &str, labels: &[&str]| {
            IntGaugeVec::new(Opts::new(name, help), labels).expect("valid metric")
        };
        let rates = |name: &str, help: &str| {
            GaugeVec::new(Opts::new(name, help), &["queue"]).expect("valid metric")
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
            dead_letters_refused: counter(
                "consumer_dead_letters_refused_total",
                "Dead letters the broker refused to copy (a full dead-letter queue) or that were rejected without a copy while it blocked publishing (a resource alarm); each waits in its source queue",
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
            end_to_end_seconds: histogram(
                "consumer_end_to_end_seconds",
                "Time from a message's acceptance by the publisher to the commit of its row",
                vec![
                    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0,
                ],
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
            queue_consumers: gauges(
                "consumer_queue_consumers",
                "Consumers of each drained queue, as the broker last reported",
                &["queue"],
            ),
            dead_letter_messages: gauges(
                "consumer_dead_letter_messages",
                "Messages in the dead-letter queue, as the broker last reported",
                &["queue"],
            ),
            drain_rate: rates(
                "consumer_queue_drain_per_second",
                "Messages this consumer settled from each queue per second, between its last two looks",
            ),
            inflow_rate: rates(
                "consumer_queue_inflow_per_second",
                "Messages arriving in each queue per second: what this consumer drained plus the backlog's growth",
            ),
            writers: gauges(
                "consumer_writers",
                "Batch writers each queue may run at once",
                &["queue"],
            ),
            scaling_decisions: IntCounterVec::new(
                Opts::new(
                    "consumer_scaling_decisions_total",
                    "Decisions of the batch-writer scaler, by queue, direction (up, down, hold) and reason",
                ),
                &["queue", "direction", "reason"],
            )
            .expect("valid metric"),
            feed_followers: gauge(
                "consumer_feed_followers",
                "Event streams and waiting long polls of GET /message/feed open now",
            ),
            feed_refused: counter(
                "consumer_feed_refused_total",
                "Followers of GET /message/feed refused because FEED_MAX_FOLLOWERS were open",
            ),
            feed_slow_readers: counter(
                "consumer_feed_slow_readers_total",
                "Event streams closed because their reader took nothing for FEED_SLOW_READER_SECS",
            ),
            maintenance_last_success: gauge(
                "consumer_maintenance_last_success_timestamp_seconds",
                "When this pod last finished a maintenance round (partitions ahead, RETENTION), as a Unix time",
            ),
            maintenance_failures: counter(
                "consumer_maintenance_failures_total",
                "Maintenance rounds that failed; the next one tries again",
            ),
            message_partitions: gauge(
                "consumer_message_partitions",
                "Partitions of the messages table, the default one aside, as of the last maintenance round",
            ),
            expired_partitions: gauge(
                "consumer_expired_partitions",
                "Partitions past RETENTION by more than an hour, as of the last maintenance round: maintenance is behind",
            ),
            ready: gauge("consumer_ready", "1 when /readyz answers 200, as of the last scrape"),
            http: HttpMetrics::new("consumer"),
        };
        common::web::metrics::register(
            &metrics.registry,
            vec![
                Box::new(metrics.messages_stored.clone()),
                Box::new(metrics.messages_duplicate.clone()),
                Box::new(metrics.messages_dead_lettered.clone()),
                Box::new(metrics.dead_letters_refused.clone()),
                Box::new(metrics.key_conflicts.clone()),
                Box::new(metrics.feed_followers.clone()),
                Box::new(metrics.feed_refused.clone()),
                Box::new(metrics.feed_slow_readers.clone()),
                Box::new(metrics.maintenance_last_success.clone()),
                Box::new(metrics.maintenance_failures.clone()),
                Box::new(metrics.message_partitions.clone()),
                Box::new(metrics.expired_partitions.clone()),
                Box::new(metrics.batch_size.clone()),
                Box::new(metrics.batch_seconds.clone()),
                Box::new(metrics.end_to_end_seconds.clone()),
                Box::new(metrics.broker_connected.clone()),
                Box::new(metrics.database_up.clone()),
                Box::new(metrics.queue_messages.clone()),
                Box::new(metrics.queue_consumers.clone()),
                Box::new(metrics.dead_letter_messages.clone()),
                Box::new(metrics.drain_rate.clone()),
                Box::new(metrics.inflow_rate.clone()),
                Box::new(metrics.writers.clone()),
                Box::new(metrics.scaling_decisions.clone()),
                Box::new(metrics.ready.clone()),
            ],
        );
        common::web::metrics::register(&metrics.registry, metrics.http.collectors());
        common::web::metrics::register(
            &metrics.registry,
            vec![Box::new(common::telemetry::SpanMetrics::new("consumer"))],
        );
        metrics
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
