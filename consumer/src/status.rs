//! What the ingestion loop knows about its peers, for `/readyz` and metrics.

use std::{
    sync::Mutex,
    time::{Duration, Instant},
};

use prometheus::IntGauge;

/// Reachability of the broker and the database as last seen by ingestion. Each is kept in its gauge
/// (`consumer_broker_connected`, `consumer_database_up`), so readiness and metrics cannot disagree.
#[derive(Debug)]
pub struct PeerStatus {
    broker: IntGauge,
    database: IntGauge,
    /// When the write in progress began, if one is.
    writing_since: Mutex<Option<Instant>>,
}

impl PeerStatus {
    pub fn new(broker: IntGauge, database: IntGauge) -> Self {
        Self {
            broker,
            database,
            writing_since: Mutex::new(None),
        }
    }

    /// Ingestion began a write.
    pub fn write_started(&self) {
        *self.writing_since.lock().expect("status lock poisoned") = Some(Instant::now());
    }

    /// Ingestion's write ended, stored or failed.
    pub fn write_ended(&self) {
        *self.writing_since.lock().expect("status lock poisoned") = None;
    }

    /// How long the write in progress has been running, if it has run longer than `threshold`: a
    /// database that answers pings but holds writes (a lock, a full disk) is not ready to ingest.
    pub fn write_stuck(&self, threshold: Duration) -> Option<Duration> {
        let since = (*self.writing_since.lock().expect("status lock poisoned"))?;
        Some(since.elapsed()).filter(|elapsed| *elapsed > threshold)
    }

    pub fn set_broker(&self, up: bool) {
        self.broker.set(i64::from(up));
    }

    pub fn set_database(&self, up: bool) {
        self.database.set(i64::from(up));
    }

    /// Whether the subscription to the queue is live.
    pub fn broker(&self) -> bool {
        self.broker.get() == 1
    }

    /// Whether the database is migrated and took the last write.
    pub fn database(&self) -> bool {
        self.database.get() == 1
    }
}
