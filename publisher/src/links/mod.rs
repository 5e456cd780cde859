//! The publisher's connections to the broker: a deadpool pool of `AMQP_CONNECTIONS` links, each a
//! connection with its confirm-mode channels, made on a node of `AMQP_URL` that answers.
//!
//! A request takes a link from the pool and gives it back at once, keeping a handle: links are shared,
//! not lent out one request at a time, so the pool (in FIFO order) spreads requests over its links and
//! so over their I/O threads and nodes. What the pool adds to bare connections lives on the link and in
//! the manager's hooks:
//!
//! - `create` connects with backoff: while the broker is unreachable, attempts are spaced from 100 ms
//!   to 2 s apart and one runs at a time, so requests fail fast (503) instead of each waiting for a
//!   connection;
//! - a `post_create` hook listens to the connection's events, so a resource alarm marks the link
//!   blocked and `/readyz` and requests answer 503 until the broker unblocks it;
//! - `recycle` refuses a link that is down or that a publish found broken, so the next request gets
//!   another;
//! - [`tend`] drops broken links, makes new ones up to the pool's size, declares the topology again if
//!   a queue went missing, and keeps readiness.

use std::{
    sync::{
        atomic::{AtomicBool, AtomicUsize, Ordering},
        Arc, Mutex, Weak,
    },
    time::{Duration, Instant},
};

use common::{
    amqp::{BrokerAddress, BrokerError, ConfirmChannel, Topology},
    backoff::Backoff,
};
use deadpool::{
    managed::{self, Hook, Pool, QueueMode, RecycleError, RecycleResult, Timeouts},
    Runtime,
};
use futures::StreamExt;
use lapin::{Connection, Event};

use crate::metrics::Metrics;

mod tend;

pub(crate) use tend::{tend, Readiness, Unready};

/// How often [`tend`] looks at the links.
const TEND_INTERVAL: Duration = Duration::from_millis(250);
/// The queues are looked for every this many tends.
const QUEUE_CHECK_EVERY: u32 = 4;
/// Longest wait for a connection and its channels; a host that drops packets would otherwise hold the
/// attempt for the operating system's TCP timeout.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// Longest a request waits for the pool to hand out a link (only while [`tend`] holds them all to
/// make a new one).
const WAIT_TIMEOUT: Duration = Duration::from_secs(2);

/// Confirms a link may leave unanswered past their requests' deadlines before it is replaced: lapin keeps
/// each one until its channel closes, so a broker that stops confirming must not make them pile up.
const MAX_LATE_CONFIRMS: usize = 4096;

/// A live connection and the channels publishes are spread over.
pub(crate) struct Link {
    connection: Connection,
    channels: Vec<ConfirmChannel>,
    next_channel: AtomicUsize,
    /// Set while the broker blocks publishing on this connection (a memory or disk alarm), with its reason.
    blocked: Mutex<Option<String>>,
    /// Set by a publish that found the link broken (a confirm lost with its channel, a timed-out
    /// confirm that lapin would keep in memory until its channel closes), so it is replaced.
    failed: AtomicBool,
    /// Confirms given up on at their requests' deadlines.
    late_confirms: AtomicUsize,
}

impl Link {
    /// The next channel to publish on, in turn.
    pub(crate) fn channel(&self) -> &ConfirmChannel {
        let next = self.next_channel.fetch_add(1, Ordering::Relaxed);
        &self.channels[next % self.channels.len()]
    }

    /// Whether publishes can go out on this link (it may still be blocked by an alarm).
    pub(crate) fn is_usable(&self) -> bool {
        !self.failed.load(Ordering::Relaxed)
            && self.connection.status().connected()
            && self
                .channels
                .iter()
                .all(|c| c.channel().status().connected())
    }

    /// Why the broker blocks publishing on this link, if it does.
    pub(crate) fn blocked(&self) -> Option<String> {
        self.blocked.lock().expect("blocked lock poisoned").clone()
    }

    fn set_blocked(&self, reason: Option<String>) {
        *self.blocked.lock().expect("blocked lock poisoned") = reason;
    }

    /// Takes the link out of use: the pool hands it out no more and [`tend`] replaces it.
    pub(crate) fn mark_failed(&self) {
        self.failed.store(true, Ordering::Relaxed);
    }

    /// Counts `count` confirms given up on; past [`MAX_LATE_CONFIRMS`] the link is taken out of use,
    /// which frees what lapin keeps of them when [`tend`] closes it.
    pub(crate) fn gave_up_on(&self, count: usize) {
        let late = self.late_confirms.fetch_add(count, Ordering::Relaxed) + count;
        if late > MAX_LATE_CONFIRMS && !self.failed.swap(true, Ordering::Relaxed) {
            tracing::warn!(
                late,
                "the broker left too many confirms unanswered on this link; replacing it"
            );
        }
    }
}

/// Why a link could not be made.
#[derive(Debug, thiserror::Error)]
pub(crate) enum LinkError {
    #[error(transparent)]
    Broker(#[from] BrokerError),
    #[error("no answer within {0:?}")]
    Timeout(Duration),
    #[error("the last attempt failed; the next is in {0:?}")]
    BackingOff(Duration),
    #[error("another connection attempt is under way")]
    Connecting,
}

/// When the next connection attempt may start, after failures.
struct Pacing {
    backoff: Backoff,
    not_before: Option<Instant>,
}

/// Makes and checks links for the pool.
pub(crate) struct LinkManager {
    address: BrokerAddress,
    topology: Topology,
    channel_count: usize,
    pacing: tokio::sync::Mutex<Pacing>,
    metrics: Arc<Metrics>,
}

impl LinkManager {
    pub(crate) fn new(
        address: BrokerAddress,
        topology: Topology,
        channel_count: usize,
        metrics: Arc<Metrics>,
    ) -> Self {
        Self {
            address,
            topology,
            channel_count,
            pacing: tokio::sync::Mutex::new(Pacing {
                backoff: Backoff::new(),
                not_before: None,
            }),
            metrics,
        }
    }

    async fn connect(&self) -> Result<Link, BrokerError> {
        let connection = self.address.connect_as("message-publisher").await?;
        let mut channels = Vec::with_capacity(self.channel_count);
        for _ in 0..self.channel_count {
            channels.push(ConfirmChannel::select(connection.create_channel().await?).await?);
        }
        self.topology.ensure(channels[0].channel()).await?;
        Ok(Link {
            connection,
            channels,
            next_channel: AtomicUsize::new(0),
            blocked: Mutex::new(None),
            failed: AtomicBool::new(false),
            late_confirms: AtomicUsize::new(0),
        })
    }
}

impl managed::Manager for LinkManager {
    type Type = Arc<Link>;
    type Error = LinkError;

    /// Connects, unless an attempt is under way or the backoff after the last failure has not passed:
    /// then it fails at once, so that no request waits on a broker that is down.
    async fn create(&self) -> Result<Arc<Link>, LinkError> {
        let mut pacing = self.pacing.try_lock().map_err(|_| LinkError::Connecting)?;
        if let Some(wait) = pacing
            .not_before
            .and_then(|at| at.checked_duration_since(Instant::now()))
        {
            return Err(LinkError::BackingOff(wait));
        }
        let connected = match tokio::time::timeout(CONNECT_TIMEOUT, self.connect()).await {
            Ok(connected) => connected.map_err(LinkError::from),
            Err(_) => Err(LinkError::Timeout(CONNECT_TIMEOUT)),
        };
        match connected {
            Ok(link) => {
                *pacing = Pacing {
                    backoff: Backoff::new(),
                    not_before: None,
                };
                self.metrics.connections.inc();
                tracing::info!(channels = link.channels.len(), "connected to the broker");
                Ok(Arc::new(link))
            }
            Err(error) => {
                let delay = pacing.backoff.next_delay();
                pacing.not_before = Some(Instant::now() + delay);
                tracing::warn!(error = format!("{error:#}"), retry_in = ?delay, "cannot reach the broker");
                Err(error)
            }
        }
    }

    async fn recycle(
        &self,
        link: &mut Arc<Link>,
        _: &managed::Metrics,
    ) -> RecycleResult<LinkError> {
        if link.is_usable() {
            Ok(())
        } else {
            Err(RecycleError::message("the link to the broker is down"))
        }
    }
}

/// The pool of links.
pub(crate) type LinkPool = Pool<LinkManager>;

/// A link for a request to publish on, handed back to the pool at once (links are shared). A request
/// never makes a link itself: connecting can take [`CONNECT_TIMEOUT`] against a node that is frozen or
/// cut off, and that is [`tend`]'s to wait out. With no usable link the request fails at once.
pub(crate) async fn take(pool: &LinkPool) -> Option<Arc<Link>> {
    let timeouts = Timeouts {
        wait: Some(WAIT_TIMEOUT),
        // A creation is polled once and then given up, before it has started anything.
        create: Some(Duration::ZERO),
        recycle: Some(WAIT_TIMEOUT),
    };
    pool.timeout_get(&timeouts)
        .await
        .ok()
        .map(|link| Arc::clone(&link))
}

/// A pool of at most `size` links, handed out in turn.
pub(crate) fn pool(manager: LinkManager, size: usize) -> LinkPool {
    Pool::builder(manager)
        .max_size(size)
        .queue_mode(QueueMode::Fifo)
        .wait_timeout(Some(WAIT_TIMEOUT))
        .create_timeout(Some(CONNECT_TIMEOUT + Duration::from_secs(1)))
        .recycle_timeout(Some(WAIT_TIMEOUT))
        .runtime(Runtime::Tokio1)
        .post_create(Hook::sync_fn(|link: &mut Arc<Link>, _| {
            // Listen before anything can be published: lapin drops events nobody listens to.
            tokio::spawn(watch_alarms(
                Arc::downgrade(link),
                link.connection.events_listener(),
            ));
            Ok(())
        }))
        .build()
        .expect("a runtime is given")
}

/// Marks `link` blocked while the broker blocks publishing on it, until the link is gone.
async fn watch_alarms(link: Weak<Link>, events: impl futures::Stream<Item = Event>) {
    tokio::pin!(events);
    let mut checks = tokio::time::interval(Duration::from_secs(1));
    loop {
        let event = tokio::select! {
            Some(event) = events.next() => event,
            _ = checks.tick() => {
                match link.upgrade() {
                    Some(link) if link.connection.status().connected() => continue,
                    _ => return,
                }
            }
        };
        let Some(link) = link.upgrade() else { return };
        match event {
            Event::ConnectionBlocked(reason) => {
                tracing::warn!(%reason, "the broker blocks publishing; answering 503 until it unblocks");
                link.set_blocked(Some(reason));
            }
            Event::ConnectionUnblocked => {
                tracing::info!("the broker accepts publishing again");
                link.set_blocked(None);
            }
            _ => {}
        }
    }
}
