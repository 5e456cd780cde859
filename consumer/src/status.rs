//! What the ingestion loop knows about its peers, for `/readyz` and metrics.

use prometheus::IntGauge;

/// Reachability of the broker and the database as last seen by ingestion. Each is kept in its gauge
/// (`consumer_broker_connected`, `consumer_database_up`), so readiness and metrics cannot disagree.
#[derive(Debug)]
pub struct PeerStatus {
    broker: IntGauge,
    database: IntGauge,
}

impl PeerStatus {
    pub fn new(broker: IntGauge, database: IntGauge) -> Self {
        Self { broker, database }
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
