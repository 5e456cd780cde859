//! The publisher's side of RabbitMQ: a connection with a set of confirm-mode channels, kept up by a
//! supervisor task that reconnects with backoff, and `publish`, which returns only once the broker has
//! confirmed every message.
//!
//! Requests never wait for a connection: while the broker is down `publish` fails at once with
//! [`PublishError::BrokerUnavailable`] and the HTTP layer answers 503 with `Retry-After`.

use std::{
    sync::{
        atomic::{AtomicUsize, Ordering},
        Arc, Mutex, RwLock,
    },
    time::{Duration, Instant},
};

use common::{amqp::Confirmed, backoff::retry, QueuedMessage, Topology};
use futures::{future::join_all, Stream, StreamExt};
use lapin::{
    options::{ConfirmSelectOptions, QueueDeclareOptions},
    types::FieldTable,
    BasicProperties, Channel, Connection, ConnectionProperties, Event,
};
use tokio::sync::Notify;

use crate::{error::PublishError, metrics::Metrics};

/// How often the supervisor checks that the connection is still up when nothing reports a failure.
const HEALTH_CHECK_INTERVAL: Duration = Duration::from_millis(250);
/// The main queue is looked for every this many health checks.
const QUEUE_CHECK_EVERY: u32 = 4;
/// How often a request whose publish failed looks for a link to publish again on.
const LINK_POLL_INTERVAL: Duration = Duration::from_millis(20);
/// Longest wait for a connection and its channels; a host that drops packets would otherwise hold the
/// supervisor for the operating system's TCP timeout.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// A live connection and the channels publishes are spread over.
struct Link {
    connection: Connection,
    channels: Vec<Channel>,
    /// Set while the broker blocks publishing on this connection (a memory or disk alarm), with its reason.
    blocked: Mutex<Option<String>>,
    /// Woken by a failed publish so the supervisor replaces this link without waiting for its next check.
    /// One per link: a failure reported on an old link must not tear down its successor.
    failed: Notify,
}

impl Link {
    fn is_healthy(&self) -> bool {
        self.connection.status().connected() && self.channels.iter().all(|c| c.status().connected())
    }

    fn blocked(&self) -> Option<String> {
        self.blocked.lock().expect("blocked lock poisoned").clone()
    }

    fn set_blocked(&self, reason: Option<String>) {
        *self.blocked.lock().expect("blocked lock poisoned") = reason;
    }
}

/// Why the broker cannot take messages right now, for `/readyz`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Unready {
    /// No connection.
    Disconnected,
    /// Connected, but the broker blocks publishing (resource alarm).
    Blocked(String),
}

/// Publishes messages to the exchange of a [`Topology`], with publisher confirms.
pub struct Broker {
    amqp_url: String,
    topology: Topology,
    channel_count: usize,
    confirm_timeout: Duration,
    link: RwLock<Option<Arc<Link>>>,
    next_channel: AtomicUsize,
    metrics: Arc<Metrics>,
}

impl Broker {
    pub fn new(
        amqp_url: String,
        topology: Topology,
        channel_count: usize,
        confirm_timeout: Duration,
        metrics: Arc<Metrics>,
    ) -> Self {
        Self {
            amqp_url,
            topology,
            channel_count,
            confirm_timeout,
            link: RwLock::new(None),
            next_channel: AtomicUsize::new(0),
            metrics,
        }
    }

    /// Whether publishes can be accepted now; drives `/readyz`.
    pub fn readiness(&self) -> Result<(), Unready> {
        self.usable_link().map(drop)
    }

    /// The current link if publishes can go out on it now, or why not.
    fn usable_link(&self) -> Result<Arc<Link>, Unready> {
        let link = self
            .current()
            .filter(|link| link.is_healthy())
            .ok_or(Unready::Disconnected)?;
        match link.blocked() {
            Some(reason) => Err(Unready::Blocked(reason)),
            None => Ok(link),
        }
    }

    fn current(&self) -> Option<Arc<Link>> {
        self.link.read().expect("link lock poisoned").clone()
    }

    fn replace(&self, link: Option<Arc<Link>>) {
        self.metrics.broker_connected.set(i64::from(link.is_some()));
        *self.link.write().expect("link lock poisoned") = link;
    }

    /// Publishes every message as persistent and mandatory, and returns once the broker has confirmed
    /// them all. Messages are spread over the channels and all confirms are awaited concurrently.
    ///
    /// A message whose publish fails once it may have reached the broker (the connection dropped with
    /// its confirm outstanding, a nack, a return) is in doubt. It is published again, with the same id
    /// and time, on the next link, until every message is confirmed or the confirm timeout since the
    /// first attempt passes. The consumer stores an id once, so a second copy is harmless. Only then does
    /// the request fail, as [`PublishError::InDoubt`] listing the ids. A request that finds no link at
    /// all fails at once, since nothing of it was sent. Every failure is counted in
    /// `publisher_broker_errors_total` under its kind.
    #[tracing::instrument(name = "publish", skip_all, fields(count = messages.len()))]
    pub async fn publish(&self, messages: &[QueuedMessage]) -> Result<(), PublishError> {
        let result = self.publish_until_confirmed(messages).await;
        if let Err(error) = &result {
            self.metrics
                .broker_errors
                .with_label_values(&[error.kind()])
                .inc();
        }
        result
    }

    async fn publish_until_confirmed(
        &self,
        messages: &[QueuedMessage],
    ) -> Result<(), PublishError> {
        let started = Instant::now();
        let deadline = tokio::time::Instant::now() + self.confirm_timeout;
        let in_doubt = |reason: &'static str| PublishError::InDoubt {
            ids: messages.iter().map(|m| m.id).collect(),
            deadline_ms: self.confirm_timeout.as_millis(),
            reason,
        };
        let mut link = match self.usable_link() {
            Ok(link) => link,
            Err(Unready::Disconnected) => return Err(PublishError::BrokerUnavailable),
            // Publishing now would only wait for a confirm that cannot come before the alarm clears.
            Err(Unready::Blocked(reason)) => return Err(PublishError::BrokerBlocked(reason)),
        };
        let mut pending: Vec<&QueuedMessage> = messages.iter().collect();
        loop {
            let round = tokio::time::timeout_at(deadline, self.publish_on(&link, &pending)).await;
            let Ok(outcomes) = round else {
                // Confirms are late, not lost: this request gives up, the link and others stay.
                self.observe_confirm(started);
                return Err(in_doubt("no confirm in time"));
            };
            let mut broken = None;
            pending = pending
                .into_iter()
                .zip(outcomes)
                .filter_map(|(message, outcome)| match outcome {
                    Ok(()) => None,
                    Err(error) => {
                        broken.get_or_insert(error);
                        Some(message)
                    }
                })
                .collect();
            let Some(error) = broken else {
                self.observe_confirm(started);
                return Ok(());
            };
            tracing::warn!(%error, in_doubt = pending.len(), "publishing again on a fresh link");
            if error.means_link_is_broken() {
                link.failed.notify_one();
            }
            self.metrics.republished.inc_by(pending.len() as u64);
            link = match self.next_link(&link, deadline).await {
                Some(next) => next,
                None => {
                    self.observe_confirm(started);
                    return Err(in_doubt(error.kind()));
                }
            };
        }
    }

    fn observe_confirm(&self, started: Instant) {
        self.metrics
            .confirm_seconds
            .observe(started.elapsed().as_secs_f64());
    }

    /// Waits until `deadline` for a usable link to publish again on: a new one if `failed` is broken, or
    /// `failed` itself if it still works (a nack or a return does not break a link).
    async fn next_link(
        &self,
        failed: &Arc<Link>,
        deadline: tokio::time::Instant,
    ) -> Option<Arc<Link>> {
        let mut poll = tokio::time::interval(LINK_POLL_INTERVAL);
        loop {
            poll.tick().await;
            if let Ok(link) = self.usable_link() {
                if !Arc::ptr_eq(&link, failed) || link.is_healthy() {
                    return Some(link);
                }
            }
            if tokio::time::Instant::now() >= deadline {
                return None;
            }
        }
    }

    /// Publishes each message once on `link` and returns each one's outcome, in order.
    async fn publish_on(
        &self,
        link: &Link,
        messages: &[&QueuedMessage],
    ) -> Vec<Result<(), PublishError>> {
        let exchange = self.topology.exchange();
        let first = self
            .next_channel
            .fetch_add(messages.len(), Ordering::Relaxed);
        let confirms = messages.iter().enumerate().map(|(i, message)| {
            let channel = &link.channels[(first + i) % link.channels.len()];
            publish_one(channel, exchange, self.topology.queue(), message)
        });
        // Every confirm is awaited, not just up to the first failure, so each message's fate is known.
        join_all(confirms).await
    }

    /// Keeps a link to the broker until `shutdown` resolves, reconnecting with backoff whenever it drops,
    /// then closes the connection cleanly. Publishes still awaiting confirms are expected to have been
    /// answered before `shutdown` resolves.
    pub async fn supervise(self: Arc<Self>, shutdown: impl std::future::Future<Output = ()>) {
        tokio::pin!(shutdown);
        loop {
            let link = tokio::select! {
                () = &mut shutdown => break,
                link = self.connect_with_backoff() => Arc::new(link),
            };
            // Listen before anything can be published: lapin drops events nobody listens to.
            let events = link.connection.events_listener();
            self.metrics.connections.inc();
            self.replace(Some(link.clone()));
            tracing::info!(channels = link.channels.len(), "connected to the broker");
            tokio::select! {
                () = &mut shutdown => break,
                () = self.until_broken(&link, events) => {
                    tracing::warn!("the broker link failed; reconnecting");
                    self.replace(None);
                    common::amqp::close(&link.connection, "reconnecting").await;
                }
            }
        }
        if let Some(link) = self.current() {
            self.replace(None);
            common::amqp::close(&link.connection, "shutting down").await;
        }
        tracing::info!("broker connection closed");
    }

    /// Returns when the connection or a channel is down, or a publish reported a failure that a fresh
    /// link cures (a timed-out confirm, which lapin keeps in memory until its channel closes).
    async fn until_broken(&self, link: &Link, events: impl Stream<Item = Event>) {
        let mut ticks = tokio::time::interval(HEALTH_CHECK_INTERVAL);
        let mut checks: u32 = 0;
        tokio::pin!(events);
        while link.is_healthy() {
            tokio::select! {
                _ = ticks.tick() => {
                    checks = checks.wrapping_add(1);
                    if checks.is_multiple_of(QUEUE_CHECK_EVERY) && !self.main_queue_exists(link).await {
                        tracing::warn!(queue = self.topology.queue(), "the main queue is missing; declaring the topology again");
                        return;
                    }
                }
                () = link.failed.notified() => return,
                Some(event) = events.next() => match event {
                    Event::ConnectionBlocked(reason) => {
                        tracing::warn!(%reason, "the broker blocks publishing; answering 503 until it unblocks");
                        link.set_blocked(Some(reason));
                    }
                    Event::ConnectionUnblocked => {
                        tracing::info!("the broker accepts publishing again");
                        link.set_blocked(None);
                    }
                    _ => {}
                },
            }
        }
    }

    /// Whether the main queue exists. While it is missing, messages still reach `<queue>.unrouted`
    /// through the alternate exchange and are stored from there; reconnecting declares it again.
    async fn main_queue_exists(&self, link: &Link) -> bool {
        let check = async {
            let channel = link.connection.create_channel().await?;
            let options = QueueDeclareOptions {
                passive: true,
                ..QueueDeclareOptions::default()
            };
            let declared = channel
                .queue_declare(self.topology.queue().into(), options, FieldTable::default())
                .await;
            if declared.is_ok() {
                let _ = channel.close(200, "checked".into()).await;
            }
            Ok::<_, lapin::Error>(declared.is_ok())
        };
        // Only a clear "no such queue" counts: a slow or failing check is for the link checks to judge.
        !matches!(
            tokio::time::timeout(HEALTH_CHECK_INTERVAL * 4, check).await,
            Ok(Ok(false))
        )
    }

    /// Connects, retrying with backoff for as long as it takes.
    async fn connect_with_backoff(&self) -> Link {
        let attempt = || async {
            match tokio::time::timeout(CONNECT_TIMEOUT, self.connect()).await {
                Ok(connected) => connected.map_err(|error| error.to_string()),
                Err(_) => Err(format!("no answer within {CONNECT_TIMEOUT:?}")),
            }
        };
        let never = std::future::pending();
        match retry("cannot reach the broker", never, attempt, |_| false).await {
            Some(Ok(link)) => link,
            _ => unreachable!("neither cancelled nor given up"),
        }
    }

    async fn connect(&self) -> lapin::Result<Link> {
        let properties =
            ConnectionProperties::default().with_connection_name("message-publisher".into());
        let connection = common::amqp::connect(&self.amqp_url, properties).await?;
        let mut channels = Vec::with_capacity(self.channel_count);
        for _ in 0..self.channel_count {
            let channel = connection.create_channel().await?;
            channel
                .confirm_select(ConfirmSelectOptions::default())
                .await?;
            channels.push(channel);
        }
        self.topology.declare(&channels[0]).await?;
        Ok(Link {
            connection,
            channels,
            blocked: Mutex::new(None),
            failed: Notify::new(),
        })
    }
}

async fn publish_one(
    channel: &Channel,
    exchange: &str,
    routing_key: &str,
    message: &QueuedMessage,
) -> Result<(), PublishError> {
    let properties = BasicProperties::default()
        .with_delivery_mode(2)
        .with_content_type("application/json".into())
        .with_message_id(message.id.to_string().into())
        .with_priority(message.message.priority().value())
        .with_timestamp(message.received_at.timestamp().max(0) as u64)
        .with_app_id("message-publisher".into());
    let confirmed = common::amqp::publish_confirmed(
        channel,
        exchange,
        routing_key,
        &message.to_payload(),
        properties,
    )
    .await
    .map_err(PublishError::Amqp)?;
    match confirmed {
        Confirmed::Acked => Ok(()),
        Confirmed::Returned => Err(PublishError::Unroutable),
        Confirmed::Nacked => Err(PublishError::Refused),
        Confirmed::NotRequested => Err(PublishError::Unconfirmed),
    }
}
