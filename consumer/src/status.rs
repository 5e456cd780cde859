//! What the ingestion loop knows about its peers, for `/readyz` and metrics.

use std::{
    collections::BTreeMap,
    sync::Mutex,
    time::{Duration, Instant},
};

use prometheus::IntGauge;

/// Reachability of the broker and the database as last seen by ingestion. Each is kept in its gauge
/// (`consumer_broker_connected`, `consumer_database_up`), so readiness and metrics cannot disagree.
#[derive(Debug)]
pub(crate) struct PeerStatus {
    broker: IntGauge,
    database: IntGauge,
    /// When each write in progress began, by a number of its own: several batch writers write at
    /// once, and the oldest of them says whether the database holds writes.
    writes: Mutex<Writes>,
    /// When a write last stored something.
    last_stored: Mutex<Option<Instant>>,
    /// What the broker refuses that only an operator can grant (a permission, a missing queue), by the
    /// step or queue refused: while any is, the consumer is not ready, and says why.
    refusals: Mutex<BTreeMap<String, String>>,
}

impl PeerStatus {
    pub(crate) fn new(broker: IntGauge, database: IntGauge) -> Self {
        Self {
            broker,
            database,
            writes: Mutex::new(Writes::default()),
            refusals: Mutex::new(BTreeMap::new()),
            last_stored: Mutex::new(None),
        }
    }

    /// Ingestion began a write; it ends when the guard is dropped, stored, failed or abandoned.
    pub(crate) fn write_started(&self) -> WriteInProgress<'_> {
        let mut writes = self.writes.lock().expect("status lock poisoned");
        writes.next += 1;
        let id = writes.next;
        writes.started.insert(id, Instant::now());
        WriteInProgress { status: self, id }
    }

    /// A write was committed.
    pub(crate) fn stored(&self) {
        *self.last_stored.lock().expect("status lock poisoned") = Some(Instant::now());
    }

    /// Whether a write was committed after `since`: the database stores, so what it keeps refusing is
    /// about the data.
    pub(crate) fn stored_since(&self, since: Instant) -> bool {
        self.last_stored
            .lock()
            .expect("status lock poisoned")
            .is_some_and(|at| at > since)
    }

    /// How long the oldest write in progress has been running, if it has run longer than `threshold`: a
    /// database that answers pings but holds writes (a lock, a full disk) is not ready to ingest.
    pub(crate) fn write_stuck(&self, threshold: Duration) -> Option<Duration> {
        let writes = self.writes.lock().expect("status lock poisoned");
        let oldest = writes.started.values().min()?;
        Some(oldest.elapsed()).filter(|elapsed| *elapsed > threshold)
    }

    /// The broker refuses `what` (a queue, or a setup step) for `reason`, until an operator acts.
    pub(crate) fn refused(&self, what: &str, reason: String) {
        self.refusals
            .lock()
            .expect("status lock poisoned")
            .insert(what.to_owned(), reason);
    }

    /// The broker took `what` again.
    pub(crate) fn accepted(&self, what: &str) {
        self.refusals
            .lock()
            .expect("status lock poisoned")
            .remove(what);
    }

    /// Every refusal in force, as one sentence per refused step, if there is any.
    pub(crate) fn refusal(&self) -> Option<String> {
        let refusals = self.refusals.lock().expect("status lock poisoned");
        (!refusals.is_empty()).then(|| {
            refusals
                .iter()
                .map(|(what, reason)| format!("{what}: {reason}"))
                .collect::<Vec<_>>()
                .join("; ")
        })
    }

    pub(crate) fn set_broker(&self, up: bool) {
        self.broker.set(i64::from(up));
    }

    pub(crate) fn set_database(&self, up: bool) {
        self.database.set(i64::from(up));
    }

    /// Whether the subscription to the queue is live.
    pub(crate) fn broker(&self) -> bool {
        self.broker.get() == 1
    }

    /// Whether the database is migrated and took the last write.
    pub(crate) fn database(&self) -> bool {
        self.database.get() == 1
    }
}

/// The writes in progress.
#[derive(Debug, Default)]
struct Writes {
    next: u64,
    started: BTreeMap<u64, Instant>,
}

/// One write in progress; dropping it ends the write.
#[must_use = "the write ends when this is dropped"]
pub(crate) struct WriteInProgress<'a> {
    status: &'a PeerStatus,
    id: u64,
}

impl Drop for WriteInProgress<'_> {
    fn drop(&mut self) {
        self.status
            .writes
            .lock()
            .expect("status lock poisoned")
            .started
            .remove(&self.id);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn status() -> PeerStatus {
        PeerStatus::new(
            IntGauge::new("b", "b").unwrap(),
            IntGauge::new("d", "d").unwrap(),
        )
    }

    #[test]
    fn a_write_still_running_is_seen_whatever_the_other_writers_do() {
        let status = status();
        let slow = status.write_started();
        let quick = status.write_started();
        drop(quick);
        assert!(status.write_stuck(Duration::ZERO).is_some());
        drop(slow);
        assert!(status.write_stuck(Duration::ZERO).is_none());
    }

    #[test]
    fn an_abandoned_write_ends_with_its_guard() {
        let status = status();
        {
            let _write = status.write_started();
        }
        assert!(status.write_stuck(Duration::ZERO).is_none());
    }
}
