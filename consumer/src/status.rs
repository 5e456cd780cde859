//! What the ingestion loop knows about its peers, for `/readyz` and metrics.

use std::sync::atomic::{AtomicBool, Ordering};

/// Reachability of the broker and the database as last seen by ingestion.
#[derive(Debug, Default)]
pub struct PeerStatus {
    broker: AtomicBool,
    database: AtomicBool,
}

impl PeerStatus {
    pub fn set_broker(&self, up: bool) {
        self.broker.store(up, Ordering::Relaxed);
    }

    pub fn set_database(&self, up: bool) {
        self.database.store(up, Ordering::Relaxed);
    }

    /// Whether the subscription to the queue is live.
    pub fn broker(&self) -> bool {
        self.broker.load(Ordering::Relaxed)
    }

    /// Whether the database is migrated and took the last write.
    pub fn database(&self) -> bool {
        self.database.load(Ordering::Relaxed)
    }
}
