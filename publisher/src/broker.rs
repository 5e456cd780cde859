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

use common::{backoff::Backoff, QueuedMessage, Topology};
use futures::{future::join_all, Stream, StreamExt};
use lapin::{
    options::{BasicPublishOptions, ConfirmSelectOptions},
    BasicProperties, Channel, Confirmation, Connection, ConnectionProperties, Event,
};
use tokio::sync::Notify;

use crate::{error::PublishError, metrics::Metrics};

/// How often the supervisor checks that the connection is still up when nothing reports a failure.
const HEALTH_CHECK_INTERVAL: Duration = Duration::from_millis(250);
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
    /// Every failure is counted in `publisher_broker_errors_total` under its kind.
    #[tracing::instrument(name = "publish", skip_all, fields(count = messages.len()))]
    pub async fn publish(&self, messages: &[QueuedMessage]) -> Result<(), PublishError> {
        let result = match self.usable_link() {
            Ok(link) => self.publish_on(&link, messages).await,
            Err(Unready::Disconnected) => Err(PublishError::BrokerUnavailable),
            // Publishing now would only wait for a confirm that cannot come before the alarm clears.
            Err(Unready::Blocked(reason)) => Err(PublishError::BrokerBlocked(reason)),
        };
        if let Err(error) = &result {
            self.metrics
                .broker_errors
                .with_label_values(&[error.kind()])
                .inc();
        }
        result
    }

    async fn publish_on(
        &self,
        link: &Link,
        messages: &[QueuedMessage],
    ) -> Result<(), PublishError> {
        let exchange = self.topology.exchange();
        let first = self
            .next_channel
            .fetch_add(messages.len(), Ordering::Relaxed);
        let started = Instant::now();
        let confirms = messages.iter().enumerate().map(|(i, message)| {
            let channel = &link.channels[(first + i) % link.channels.len()];
            publish_one(channel, exchange, self.topology.queue(), message)
        });
        // Every confirm is awaited, not just up to the first failure, so none is left pending in lapin.
        let outcome = tokio::time::timeout(self.confirm_timeout, join_all(confirms)).await;
        self.metrics
            .confirm_seconds
            .observe(started.elapsed().as_secs_f64());
        let result = match outcome {
            Ok(results) => results
                .into_iter()
                .collect::<Result<Vec<()>, _>>()
                .map(drop),
            Err(_) => Err(PublishError::ConfirmTimeout),
        };
        if let Err(error) = &result {
            // A confirm that timed out under a resource alarm is released when the alarm clears;
            // reconnecting would only lose track of the block.
            let blocked_timeout =
                matches!(error, PublishError::ConfirmTimeout) && link.blocked().is_some();
            if error.means_link_is_broken() && !blocked_timeout {
                link.failed.notify_one();
            }
        }
        result
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
        tokio::pin!(events);
        while link.is_healthy() {
            tokio::select! {
                _ = ticks.tick() => {}
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

    async fn connect_with_backoff(&self) -> Link {
        let mut backoff = Backoff::new();
        loop {
            let error = match tokio::time::timeout(CONNECT_TIMEOUT, self.connect()).await {
                Ok(Ok(link)) => return link,
                Ok(Err(error)) => error.to_string(),
                Err(_) => format!("no answer within {CONNECT_TIMEOUT:?}"),
            };
            let delay = backoff.next_delay();
            tracing::warn!(%error, retry_in = ?delay, "cannot reach the broker");
            tokio::time::sleep(delay).await;
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
    let options = BasicPublishOptions {
        mandatory: true,
        ..BasicPublishOptions::default()
    };
    let confirmation = channel
        .basic_publish(
            exchange.into(),
            routing_key.into(),
            options,
            &message.to_payload(),
            properties,
        )
        .await
        .map_err(PublishError::Amqp)?
        .await
        .map_err(PublishError::Amqp)?;
    match confirmation {
        Confirmation::Ack(None) => Ok(()),
        Confirmation::Ack(Some(_returned)) => Err(PublishError::Unroutable),
        Confirmation::Nack(_) => Err(PublishError::Refused),
        Confirmation::NotRequested => Err(PublishError::Unconfirmed),
    }
}
