//! What one queue's pipeline and the queue watch share: how many batch writers the queue may run, how
//! many deliveries the pipeline holds unsettled, and how many it has settled, so the watch can tell the
//! backlog and the drain rate and the pipeline can follow the writer count it is given.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

/// The live figures of one drained queue within one broker session.
#[derive(Debug)]
pub(crate) struct QueueFlow {
    queue: String,
    writers: AtomicUsize,
    held: AtomicU64,
    drained: AtomicU64,
}

impl QueueFlow {
    pub(crate) fn new(queue: impl Into<String>, writers: usize) -> Self {
        Self {
            queue: queue.into(),
            writers: AtomicUsize::new(writers.max(1)),
            held: AtomicU64::new(0),
            drained: AtomicU64::new(0),
        }
    }

    pub(crate) fn queue(&self) -> &str {
        &self.queue
    }

    /// How many batches of this queue may be written at once.
    pub(crate) fn writers(&self) -> usize {
        self.writers.load(Ordering::Relaxed)
    }

    pub(crate) fn set_writers(&self, writers: usize) {
        self.writers.store(writers.max(1), Ordering::Relaxed);
    }

    /// The batch size that lets every writer have a batch while the next one is gathered, within the
    /// prefetch: `prefetch / (writers + 1)`, at most `batch_size` and at least 1. With one writer and the
    /// defaults (prefetch 1,000, batches of 500) that is the configured batch; with more writers the
    /// batches get smaller, so the memory the prefetch bounds is the same.
    pub(crate) fn batch_limit(&self, batch_size: usize, prefetch: u16) -> usize {
        (usize::from(prefetch) / (self.writers() + 1)).clamp(1, batch_size.max(1))
    }

    /// `count` deliveries were gathered into a batch.
    pub(crate) fn gathered(&self, count: usize) {
        self.held.fetch_add(count as u64, Ordering::Relaxed);
    }

    /// `count` deliveries were settled: stored and acknowledged, or dead-lettered.
    pub(crate) fn settled(&self, count: usize) {
        self.held.fetch_sub(count as u64, Ordering::Relaxed);
        self.drained.fetch_add(count as u64, Ordering::Relaxed);
    }

    /// Deliveries gathered and not yet settled: this process's share of the queue's unacknowledged
    /// messages (the broker may hold a few more in flight to it, within the prefetch).
    pub(crate) fn held(&self) -> u64 {
        self.held.load(Ordering::Relaxed)
    }

    /// Deliveries settled since the session began.
    pub(crate) fn drained(&self) -> u64 {
        self.drained.load(Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn batches_shrink_as_writers_grow_so_the_prefetch_still_bounds_what_is_held() {
        let flow = QueueFlow::new("q", 1);
        assert_eq!(flow.batch_limit(500, 1_000), 500);
        flow.set_writers(4);
        assert_eq!(flow.batch_limit(500, 1_000), 200);
        assert_eq!(flow.batch_limit(100, 1_000), 100);
        assert_eq!(flow.batch_limit(500, 3), 1);
        flow.set_writers(0);
        assert_eq!(flow.writers(), 1);
    }

    #[test]
    fn settling_moves_deliveries_from_held_to_drained() {
        let flow = QueueFlow::new("q", 1);
        flow.gathered(300);
        flow.gathered(200);
        flow.settled(300);
        assert_eq!((flow.held(), flow.drained()), (200, 300));
    }
}
