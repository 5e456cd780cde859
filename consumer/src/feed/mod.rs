//! Following the feed: what long polls (`wait=`) and server-sent event streams share.
//!
//! The order itself is the store's (`store::feed`). This module decides when a follower looks again and
//! how many may follow at once:
//! - a follower looks as soon as this process stores new rows (the store marks each commit), and every
//!   `FEED_POLL_MS` for rows that other consumer processes stored; looks are at least [`MIN_LOOK`] apart,
//!   so a busy ingestion costs each follower a bounded number of queries;
//! - followers hold a permit of `FEED_MAX_FOLLOWERS`; without one a request is refused with `503`, so
//!   that neither open streams nor the read pool's connections grow with the number of clients;
//! - every follower ends when the service shuts down.

mod stream;

pub(crate) use stream::events;

use std::{sync::Arc, time::Duration};

use tokio::{
    sync::{watch, OwnedSemaphorePermit, Semaphore},
    time::Instant,
};
use tokio_util::sync::CancellationToken;

use crate::{config::FeedConfig, metrics::Metrics, store::MessageStore};

/// The shortest time between two looks of one follower.
pub(crate) const MIN_LOOK: Duration = Duration::from_millis(20);

/// The followers of one consumer process.
pub(crate) struct Feed {
    followers: Arc<Semaphore>,
    poll: Duration,
    pub heartbeat: Duration,
    pub slow_reader: Duration,
    /// Cancelled when the service begins to shut down.
    pub closing: CancellationToken,
    metrics: Arc<Metrics>,
}

/// One follower's right to wait: returned when it ends.
pub(crate) struct Follower {
    _permit: OwnedSemaphorePermit,
    metrics: Arc<Metrics>,
    commits: watch::Receiver<()>,
    last_look: Instant,
    poll: Duration,
}

/// Why a follower stopped waiting.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Wake {
    /// Something may have been committed: look again.
    Look,
    /// The deadline passed first.
    Deadline,
    /// The service is shutting down.
    Closing,
}

impl Feed {
    pub(crate) fn new(config: &FeedConfig, metrics: Arc<Metrics>) -> Self {
        Self {
            followers: Arc::new(Semaphore::new(config.feed_max_followers)),
            poll: Duration::from_millis(config.feed_poll_ms),
            heartbeat: Duration::from_secs(config.feed_heartbeat_secs),
            slow_reader: Duration::from_secs(config.feed_slow_reader_secs),
            closing: CancellationToken::new(),
            metrics,
        }
    }

    /// A follower of `store`'s commits, or `None` when `FEED_MAX_FOLLOWERS` are already following.
    pub(crate) fn follow(&self, store: &MessageStore) -> Option<Follower> {
        let Ok(permit) = self.followers.clone().try_acquire_owned() else {
            self.metrics.feed_refused.inc();
            return None;
        };
        self.metrics.feed_followers.inc();
        let mut commits = store.commits();
        commits.mark_unchanged();
        Some(Follower {
            _permit: permit,
            metrics: self.metrics.clone(),
            commits,
            last_look: Instant::now(),
            poll: self.poll,
        })
    }
}

impl Follower {
    /// Waits until it is worth looking again (a commit here, or the poll interval), `deadline`, or
    /// `closing`, whichever comes first; never sooner than [`MIN_LOOK`] after the last look.
    pub(crate) async fn wait(&mut self, deadline: Instant, closing: &CancellationToken) -> Wake {
        let poll_at = (self.last_look + self.poll).min(deadline);
        tokio::select! {
            biased;
            () = closing.cancelled() => return Wake::Closing,
            // Were the store gone (an error), the poll alone would be left.
            Ok(()) = self.commits.changed() => {}
            () = tokio::time::sleep_until(poll_at) => {}
        }
        let earliest = (self.last_look + MIN_LOOK).min(deadline);
        tokio::select! {
            () = closing.cancelled() => return Wake::Closing,
            () = tokio::time::sleep_until(earliest) => {}
        }
        if Instant::now() >= deadline {
            return Wake::Deadline;
        }
        Wake::Look
    }

    /// Records a look about to be made: the next wait counts from it, and a commit from now on wakes it
    /// (so one that lands while the look runs is not missed).
    pub(crate) fn looked(&mut self) {
        self.last_look = Instant::now();
        self.commits.mark_unchanged();
    }
}

impl Drop for Follower {
    fn drop(&mut self) {
        self.metrics.feed_followers.dec();
    }
}
