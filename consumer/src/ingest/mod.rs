//! Draining the queue into PostgreSQL.
//!
//! Each batch of deliveries is decoded, written in one transaction, and only then acknowledged (one
//! `multiple` ack for the batch). A crash at any point leaves the unacknowledged deliveries on the
//! broker, which redelivers them; the insert skips ids already stored, so nothing is lost or doubled.
//! A delivery that cannot be decoded, or whose row the database refuses, is copied to
//! `<QUEUE_NAME>.dead` with the reason in a header, then acknowledged (or, if the copy fails, rejected
//! without requeue so the broker dead-letters it); the rest of its batch is stored as usual.

mod batch;
mod census;
pub mod dead_letter;

use std::{
    sync::Arc,
    time::{Duration, Instant},
};

use common::{amqp::CLOSE_TIMEOUT, backoff::Backoff, QueuedMessage, Topology};
use lapin::{
    message::Delivery,
    options::{
        BasicAckOptions, BasicCancelOptions, BasicConsumeOptions, BasicQosOptions,
        BasicRejectOptions,
    },
    types::{AMQPValue, FieldTable},
    Channel, Connection, ConnectionProperties, Consumer,
};
use tokio_util::sync::CancellationToken;

use self::{
    batch::{next_batch, BatchEnd},
    dead_letter::DeadLetters,
};
use crate::{
    metrics::Metrics,
    status::PeerStatus,
    store::{classify, FailureKind, MessageStore},
};

/// The fallback queue (`<QUEUE_NAME>.unrouted`) is drained with this fraction of the main queue's prefetch.
const FALLBACK_PREFETCH_SHARE: u16 = 16;
/// A session that lasted this long was healthy: the next reconnect starts its backoff afresh.
const HEALTHY_SESSION: Duration = Duration::from_secs(10);

/// Settings of the ingestion loop.
#[derive(Debug, Clone)]
pub struct IngestSettings {
    pub amqp_url: String,
    pub topology: Topology,
    pub batch_size: usize,
    /// A batch closes once its payloads reach this many bytes.
    pub batch_bytes: usize,
    pub batch_linger: Duration,
    /// Unacknowledged deliveries on the main queue, already bounded so that this many of the largest
    /// payloads fit the configured bytes (the fallback queue gets a sixteenth).
    pub prefetch: u16,
    /// The largest payload a publisher can send (its message limit plus the envelope); anything larger
    /// was put on the queue by other means and is dead-lettered without being decoded.
    pub max_payload_bytes: usize,
}

/// Why the consumer dead-letters a message whose key was reused for other content.
pub const KEY_REUSED: &str = "Idempotency-Key reused with a different message";

/// The ingestion loop and what it needs.
pub struct Ingest {
    settings: IngestSettings,
    store: MessageStore,
    status: Arc<PeerStatus>,
    metrics: Arc<Metrics>,
}

/// Why a session with the broker ended.
#[derive(Debug, thiserror::Error)]
enum SessionEnd {
    #[error("shutdown requested")]
    Cancelled,
    #[error(transparent)]
    Amqp(#[from] lapin::Error),
    #[error("{0}")]
    Batch(BatchEnd),
    #[error("the channel closed before a delivery could be settled")]
    ChannelClosed,
}

impl From<BatchEnd> for SessionEnd {
    fn from(end: BatchEnd) -> Self {
        match end {
            BatchEnd::Cancelled => Self::Cancelled,
            other => Self::Batch(other),
        }
    }
}

impl Ingest {
    pub fn new(
        settings: IngestSettings,
        store: MessageStore,
        status: Arc<PeerStatus>,
        metrics: Arc<Metrics>,
    ) -> Self {
        Self {
            settings,
            store,
            status,
            metrics,
        }
    }

    /// Consumes until `cancel` fires, reconnecting to the broker with backoff whenever the session ends.
    /// On cancellation the batch in hand is stored and acknowledged before returning.
    pub async fn run(self, cancel: CancellationToken) {
        let mut backoff = Backoff::new();
        loop {
            let started = Instant::now();
            let outcome = self.session(&cancel).await;
            if started.elapsed() >= HEALTHY_SESSION {
                backoff = Backoff::new();
            }
            self.status.set_broker(false);
            match outcome {
                Err(SessionEnd::Cancelled) => break,
                Ok(()) => break,
                Err(error) => {
                    let delay = backoff.next_delay();
                    tracing::warn!(error = %error, retry_in = ?delay, "broker session ended; reconnecting");
                    tokio::select! {
                        () = cancel.cancelled() => break,
                        () = tokio::time::sleep(delay) => {}
                    }
                }
            }
        }
        tracing::info!("ingestion stopped");
    }

    /// One connection to the broker: subscribe to every queue, then store batches until the connection
    /// fails or `cancel` fires. Each queue has a channel and a pipeline of its own, so a `multiple` ack
    /// only ever covers that queue's deliveries.
    async fn session(&self, cancel: &CancellationToken) -> Result<(), SessionEnd> {
        // Connecting can hang on an unreachable host until the OS gives up: never make shutdown wait.
        let (connection, mut subscriptions, dead_letters) = tokio::select! {
            () = cancel.cancelled() => return Err(SessionEnd::Cancelled),
            subscribed = self.subscribe() => subscribed?,
        };
        self.status.set_broker(true);
        tracing::info!(queues = ?self.settings.topology.drained_queues(), "consuming");
        let session = cancel.child_token();
        let ended = {
            let pipelines = subscriptions
                .iter_mut()
                .map(|(_, consumer)| Box::pin(self.pipeline(consumer, &session, &dead_letters)));
            let counting = census::count_queues(
                &connection,
                &self.settings.topology,
                &self.metrics.queue_messages,
            );
            let (first, _, others) = tokio::select! {
                ended = futures::future::select_all(pipelines) => ended,
                never = counting => match never {},
            };
            // The others store and acknowledge what they hold, then stop.
            session.cancel();
            futures::future::join_all(others).await;
            first
        };
        // Stop deliveries, then let go of any prefetched ones: closing the connection returns them
        // to the queue. On a failed connection both calls fail harmlessly; on a channel-level failure
        // the close keeps the dead connection from lingering.
        for (channel, consumer) in &subscriptions {
            let cancelling = channel.basic_cancel(consumer.tag(), BasicCancelOptions::default());
            let _ = tokio::time::timeout(CLOSE_TIMEOUT, cancelling).await;
        }
        common::amqp::close(&connection, "closing").await;
        dead_letters.close().await;
        Err(ended)
    }

    /// Gathers the next batch while the previous one is being stored, so the database is kept busy and
    /// the broker keeps delivering. Batches are stored and acknowledged one at a time, in delivery order,
    /// so a `multiple` ack never covers a delivery of a later batch. Returns why the session ended; on
    /// cancellation, batches already gathered are stored and acknowledged first.
    async fn pipeline(
        &self,
        consumer: &mut Consumer,
        cancel: &CancellationToken,
        dead_letters: &DeadLetters,
    ) -> SessionEnd {
        // One batch waiting while one is stored: with the prefetch bounding what the broker sends, a
        // deeper queue would only hold more deliveries unacknowledged.
        let (ready, mut gathered) = tokio::sync::mpsc::channel::<Vec<Delivery>>(1);
        let (batch_size, batch_bytes, linger) = (
            self.settings.batch_size,
            self.settings.batch_bytes,
            self.settings.batch_linger,
        );
        let gather = async move {
            let end = loop {
                match next_batch(consumer, batch_size, batch_bytes, linger, cancel).await {
                    Ok(batch) => {
                        if ready.send(batch).await.is_err() {
                            // Only possible once storing has stopped, which ends the session first.
                            break SessionEnd::ChannelClosed;
                        }
                    }
                    Err(end) => break SessionEnd::from(end),
                }
            };
            // Closing the channel lets storing finish what was gathered, then stop.
            drop(ready);
            end
        };
        let store = async {
            while let Some(batch) = gathered.recv().await {
                self.handle(batch, cancel, dead_letters).await?;
            }
            Ok(())
        };
        tokio::pin!(gather, store);
        tokio::select! {
            // Gathering is polled first, so storing can see the channel closed only after it has ended.
            biased;
            end = &mut gather => match store.await {
                // A channel found closed while settling is the failure gathering already reports.
                Ok(()) | Err(SessionEnd::ChannelClosed) => end,
                Err(error) => error,
            },
            stored = &mut store => match stored {
                Err(error) => error,
                Ok(()) => SessionEnd::ChannelClosed,
            },
        }
    }

    /// Connects, declares the topology and starts consuming every queue, each on its own channel with
    /// the configured prefetch.
    async fn subscribe(
        &self,
    ) -> Result<(Connection, Vec<(Channel, Consumer)>, DeadLetters), SessionEnd> {
        let properties =
            ConnectionProperties::default().with_connection_name("message-consumer".into());
        let connection = common::amqp::connect(&self.settings.amqp_url, properties).await?;
        let mut subscriptions = Vec::new();
        for queue in self.settings.topology.drained_queues() {
            let channel = connection.create_channel().await?;
            let prefetch = if subscriptions.is_empty() {
                self.settings.topology.declare(&channel).await?;
                self.settings.prefetch
            } else {
                // The fallback queue holds messages only while the main one is missing: a small share of
                // the prefetch keeps what the consumer can hold close to `PREFETCH_BYTES`.
                (self.settings.prefetch / FALLBACK_PREFETCH_SHARE).max(1)
            };
            channel
                .basic_qos(prefetch, BasicQosOptions::default())
                .await?;
            let consumer = channel
                .basic_consume(
                    queue.into(),
                    "".into(),
                    BasicConsumeOptions::default(),
                    FieldTable::default(),
                )
                .await?;
            subscriptions.push((channel, consumer));
        }
        let dead_letters =
            DeadLetters::open(&self.settings.amqp_url, &self.settings.topology).await?;
        Ok((connection, subscriptions, dead_letters))
    }

    /// Why `delivery` must be dead-lettered before it is even decoded, if it must: a payload larger than
    /// any publisher sends, or a delivery the broker is about to dead-letter on its own for its delivery
    /// count (it would do so without a reason; here the reason travels with it).
    fn refuse_unseen(&self, delivery: &Delivery) -> Option<String> {
        if delivery.data.len() > self.settings.max_payload_bytes {
            return Some(format!(
                "the payload is {} bytes, over the {} bytes the publisher can send",
                delivery.data.len(),
                self.settings.max_payload_bytes
            ));
        }
        let limit = self.settings.topology.delivery_limit()?;
        let count = delivery_count(delivery)?;
        (count + 1 >= u64::from(limit)).then(|| {
            format!(
                "delivered {} times without being stored (DELIVERY_LIMIT is {limit}); the consumer \
                 holding it kept stopping before it could store it",
                count + 1
            )
        })
    }

    /// Decodes, stores and acknowledges one batch.
    async fn handle(
        &self,
        batch: Vec<Delivery>,
        cancel: &CancellationToken,
        dead_letters: &DeadLetters,
    ) -> Result<(), SessionEnd> {
        let mut messages = Vec::with_capacity(batch.len());
        let mut deliveries = Vec::with_capacity(batch.len());
        for delivery in batch {
            if let Some(reason) = self.refuse_unseen(&delivery) {
                tracing::warn!(%reason, delivery_tag = delivery.delivery_tag, "dead-lettering unseen");
                self.dead_letter(&delivery, &reason, dead_letters).await?;
                continue;
            }
            match QueuedMessage::from_payload(&delivery.data) {
                Ok(message) => {
                    messages.push(message);
                    deliveries.push(delivery);
                }
                Err(error) => {
                    tracing::warn!(error = %error, delivery_tag = delivery.delivery_tag, "undecodable message; dead-lettering");
                    let reason = format!("undecodable: {error}");
                    self.dead_letter(&delivery, &reason, dead_letters).await?;
                }
            }
        }
        if messages.is_empty() {
            return Ok(());
        }
        let refused = self.store_with_retry(&messages, cancel).await?;
        for (index, reason) in &refused {
            self.dead_letter(&deliveries[*index], reason, dead_letters)
                .await?;
        }
        let last_stored = (0..deliveries.len())
            .rev()
            .find(|i| !refused.iter().any(|(index, _)| index == i));
        if let Some(last) = last_stored {
            // Everything before it on this channel is stored or already rejected.
            settled(
                deliveries[last]
                    .acker
                    .ack(BasicAckOptions { multiple: true })
                    .await,
            )?;
        }
        Ok(())
    }

    /// Stores `messages`, retrying with backoff while the database is unreachable. Returns the indexes of
    /// messages that must be dead-lettered, with the reason: those the database refused outright (found
    /// by storing one row at a time), and those whose `Idempotency-Key` names a stored message with
    /// other content.
    async fn store_with_retry(
        &self,
        messages: &[QueuedMessage],
        cancel: &CancellationToken,
    ) -> Result<Vec<(usize, String)>, SessionEnd> {
        let mut backoff = Backoff::new();
        loop {
            let started = std::time::Instant::now();
            self.status.write_started();
            let written = self.store.insert(messages).await;
            self.status.write_ended();
            let outcome = match written {
                Ok(inserted) => {
                    self.record_stored(messages.len(), inserted.new, started);
                    Ok(self.key_conflicts(&inserted.conflicting))
                }
                Err(error) if classify(&error) == FailureKind::Refused => {
                    tracing::warn!(error = %error, "the database refused a batch; storing its rows one by one");
                    self.store_one_by_one(messages).await
                }
                Err(error) => Err(error),
            };
            match outcome {
                Ok(refused) => {
                    self.status.set_database(true);
                    return Ok(refused);
                }
                Err(error) => {
                    self.status.set_database(false);
                    let delay = backoff.next_delay();
                    tracing::warn!(error = %error, retry_in = ?delay, "cannot store a batch; it stays unacknowledged");
                    tokio::select! {
                        () = cancel.cancelled() => return Err(SessionEnd::Cancelled),
                        () = tokio::time::sleep(delay) => {}
                    }
                }
            }
        }
    }

    async fn store_one_by_one(
        &self,
        messages: &[QueuedMessage],
    ) -> Result<Vec<(usize, String)>, sqlx::Error> {
        let mut refused = Vec::new();
        for (index, message) in messages.iter().enumerate() {
            let started = std::time::Instant::now();
            match self.store.insert(std::slice::from_ref(message)).await {
                Ok(inserted) => {
                    self.record_stored(1, inserted.new, started);
                    if !inserted.conflicting.is_empty() {
                        refused.extend(self.key_conflicts(&[index]));
                    }
                }
                Err(error) if classify(&error) == FailureKind::Refused => {
                    tracing::warn!(id = %message.id, error = %error, "the database refused a message; dead-lettering");
                    refused.push((index, format!("refused by PostgreSQL: {error}")));
                }
                Err(error) => return Err(error),
            }
        }
        Ok(refused)
    }

    /// The dead-letter reasons of messages that reuse a stored message's key for other content.
    fn key_conflicts(&self, indexes: &[usize]) -> Vec<(usize, String)> {
        self.metrics.key_conflicts.inc_by(indexes.len() as u64);
        indexes
            .iter()
            .map(|&index| (index, KEY_REUSED.to_owned()))
            .collect()
    }

    fn record_stored(&self, delivered: usize, inserted: u64, started: std::time::Instant) {
        self.metrics
            .batch_seconds
            .observe(started.elapsed().as_secs_f64());
        self.metrics.batch_size.observe(delivered as f64);
        self.metrics.messages_stored.inc_by(inserted);
        self.metrics
            .messages_duplicate
            .inc_by(delivered as u64 - inserted);
    }

    /// Moves `delivery` to the dead-letter queue with `reason`; falls back to a plain reject (which the
    /// broker dead-letters without the reason) if the copy cannot be confirmed.
    async fn dead_letter(
        &self,
        delivery: &Delivery,
        reason: &str,
        dead_letters: &DeadLetters,
    ) -> Result<(), SessionEnd> {
        let copied = dead_letters.copy(delivery, reason).await.unwrap_or_else(|error| {
            tracing::warn!(error = %error, "could not copy to the dead-letter queue; rejecting instead");
            false
        });
        let outcome = if copied {
            delivery.acker.ack(BasicAckOptions::default()).await
        } else {
            delivery
                .acker
                .reject(BasicRejectOptions { requeue: false })
                .await
        };
        settled(outcome)?;
        self.metrics.messages_dead_lettered.inc();
        Ok(())
    }
}

/// The broker's count of earlier deliveries of this message (`x-delivery-count`, set by quorum queues).
fn delivery_count(delivery: &Delivery) -> Option<u64> {
    let headers = delivery.properties.headers().as_ref()?;
    match headers.inner().get("x-delivery-count")? {
        AMQPValue::LongLongInt(n) => u64::try_from(*n).ok(),
        AMQPValue::LongInt(n) => u64::try_from(*n).ok(),
        AMQPValue::LongUInt(n) => Some(u64::from(*n)),
        AMQPValue::ShortInt(n) => u64::try_from(*n).ok(),
        AMQPValue::ShortUInt(n) => Some(u64::from(*n)),
        AMQPValue::ShortShortInt(n) => u64::try_from(*n).ok(),
        AMQPValue::ShortShortUInt(n) => Some(u64::from(*n)),
        AMQPValue::Timestamp(n) => Some(*n),
        _ => None,
    }
}

/// lapin answers `Ok(false)` rather than an error when the channel is already gone; either way the
/// delivery is not settled and the broker will deliver it again, so the session is over.
fn settled(outcome: lapin::Result<bool>) -> Result<(), SessionEnd> {
    match outcome {
        Ok(true) => Ok(()),
        Ok(false) => Err(SessionEnd::ChannelClosed),
        Err(error) => Err(SessionEnd::Amqp(error)),
    }
}
