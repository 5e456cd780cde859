//! Storing one batch: decode each delivery, write the batch in one transaction (retrying while the
//! database is unreachable, and row by row when it refuses one) and dead-letter what can never be stored;
//! then, once every earlier batch of the queue is settled, acknowledge the rest with one `multiple` ack.

use common::{
    backoff::retry,
    model::{QueuedMessage, TraceContext},
    telemetry,
};
use lapin::{message::Delivery, options::BasicAckOptions, types::DeliveryTag, Acker};
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use std::sync::Arc;

use super::{poison::Unanswered, settled, SessionEnd, KEY_REUSED};
use crate::{
    dead_letters::DeadLetters,
    metrics::Metrics,
    status::PeerStatus,
    store::{MessageStore, StoreError},
};

/// What writes the batches of every pipeline of the consumer: it decodes and stores them (retrying,
/// splitting and storing row by row as the database answers), sends what can never be stored to the
/// dead-letter queue (`poison`), and settles the deliveries. One for the whole ingestion, shared by every
/// pipeline of every session.
pub(super) struct Writer {
    pub store: MessageStore,
    pub status: Arc<PeerStatus>,
    pub metrics: Arc<Metrics>,
    /// The largest payload a publisher can send (its message limit plus the envelope); anything larger
    /// was put on the queue by other means and is dead-lettered without being decoded.
    pub max_payload_bytes: usize,
    /// Deliveries of one message before the broker dead-letters it, where the queue type counts them.
    pub delivery_limit: Option<u32>,
}

/// A batch whose rows are stored and whose refused deliveries are dead-lettered (or their copies sent
/// and awaiting an answer), waiting for its acknowledgement.
pub(super) struct Written<'a> {
    /// Deliveries the batch held.
    pub count: usize,
    /// The stored deliveries, in delivery order.
    pub stored: Vec<(DeliveryTag, Acker)>,
    /// Copies to the dead-letter queue not answered yet; their originals are still unsettled.
    pub unanswered: Vec<Unanswered<'a>>,
}

/// The span of one message, with the trace id it was published under (empty if it carries none), so
/// its log lines join the publisher's.
fn message_span(delivery: &Delivery, message: &QueuedMessage) -> tracing::Span {
    let trace = TraceContext::from_headers(delivery.properties.headers().as_ref());
    tracing::info_span!(
        "message",
        trace_id = trace.map(|t| t.trace_id()).unwrap_or_default(),
        id = %message.id
    )
}

/// While traces are exported: the span of each message's delivery, child of the span that published
/// it, and the span of the batch that stores them, linked to each. The delivery spans end when they
/// are dropped, once the batch is stored. Without an export, a plain span and nothing to end.
fn trace_batch(
    deliveries: &[Delivery],
    messages: &[QueuedMessage],
) -> (tracing::Span, Vec<tracing::Span>) {
    let batch = tracing::info_span!("store batch", count = messages.len());
    if !telemetry::exporting() {
        return (batch, Vec::new());
    }
    let delivered = deliveries
        .iter()
        .zip(messages)
        .filter_map(|(delivery, message)| {
            let published = TraceContext::from_headers(delivery.properties.headers().as_ref())?;
            let span = tracing::info_span!("deliver", otel.kind = "consumer", id = %message.id);
            telemetry::continue_trace(&span, &published);
            let delivered = telemetry::context_of(&span)?;
            telemetry::link_to(&batch, &delivered);
            Some(span)
        })
        .collect();
    (batch, delivered)
}

impl Writer {
    /// Decodes and stores one batch, dead-lettering what can never be stored. Batches of one queue may be
    /// written concurrently; each is then settled with [`Writer::settle`] in delivery order.
    pub(super) async fn write<'a>(
        &self,
        batch: Vec<Delivery>,
        queue: &str,
        cancel: &CancellationToken,
        dead_letters: &'a DeadLetters,
    ) -> Result<Written<'a>, SessionEnd> {
        let count = batch.len();
        let mut messages = Vec::with_capacity(batch.len());
        let mut deliveries = Vec::with_capacity(batch.len());
        let mut poison = Vec::new();
        for delivery in batch {
            if let Some(reason) = self.refuse_unseen(&delivery) {
                tracing::warn!(%reason, delivery_tag = delivery.delivery_tag, "dead-lettering unseen");
                poison.push((delivery, reason));
                continue;
            }
            match QueuedMessage::from_payload(&delivery.data) {
                Ok(message) => {
                    messages.push(message);
                    deliveries.push(delivery);
                }
                Err(error) => {
                    tracing::warn!(error = %error, delivery_tag = delivery.delivery_tag, "undecodable message; dead-lettering");
                    poison.push((delivery, format!("undecodable: {error}")));
                }
            }
        }
        let poison = poison
            .iter()
            .map(|(delivery, reason)| (delivery, reason.clone()))
            .collect();
        let mut unanswered = self.dead_letter(poison, queue, dead_letters).await?;
        if messages.is_empty() {
            return Ok(Written {
                count,
                stored: Vec::new(),
                unanswered,
            });
        }
        let (batch_span, _delivered) = trace_batch(&deliveries, &messages);
        let refused = self
            .store_with_retry(&messages, cancel)
            .instrument(batch_span)
            .await?;
        for (index, reason) in &refused {
            message_span(&deliveries[*index], &messages[*index])
                .in_scope(|| tracing::warn!(%reason, "dead-lettering"));
        }
        let poison = refused
            .iter()
            .map(|(index, reason)| (&deliveries[*index], reason.clone()))
            .collect();
        unanswered.extend(self.dead_letter(poison, queue, dead_letters).await?);
        if tracing::enabled!(tracing::Level::DEBUG) {
            for (index, (delivery, message)) in deliveries.iter().zip(&messages).enumerate() {
                if !refused.iter().any(|(refused, _)| *refused == index) {
                    message_span(delivery, message).in_scope(|| tracing::debug!("stored"));
                }
            }
        }
        let stored = deliveries
            .iter()
            .enumerate()
            .filter(|(index, _)| !refused.iter().any(|(refused, _)| refused == index))
            .map(|(_, delivery)| (delivery.delivery_tag, delivery.acker.clone()))
            .collect();
        Ok(Written {
            count,
            stored,
            unanswered,
        })
    }

    /// Acknowledges the `stored` deliveries of a written batch. Called in delivery order, after every earlier batch of the channel
    /// is settled, so that one `multiple` ack covers only deliveries that are stored or already
    /// dead-lettered. If a delivery left unsettled for its unanswered dead-letter copy
    /// (`lowest_unsettled`) is among those it would cover, the stored deliveries are acknowledged one
    /// by one instead: a `multiple` ack would settle that original before its copy is known to exist.
    pub(super) async fn settle(
        &self,
        stored: &[(DeliveryTag, Acker)],
        lowest_unsettled: Option<DeliveryTag>,
    ) -> Result<(), SessionEnd> {
        let Some((last, last_acker)) = stored.last() else {
            return Ok(());
        };
        if lowest_unsettled.is_some_and(|unsettled| unsettled < *last) {
            let acks = stored
                .iter()
                .map(|(_, acker)| acker.ack(BasicAckOptions::default()));
            for outcome in futures::future::join_all(acks).await {
                settled(outcome)?;
            }
        } else {
            settled(last_acker.ack(BasicAckOptions { multiple: true }).await)?;
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
        let attempt = || async {
            let outcome = match self.insert(messages).await {
                Ok(conflicts) => Ok(conflicts),
                Err(error) if error.refused() => {
                    tracing::warn!(error = %error, "the database refused a batch; storing its rows one by one");
                    self.store_one_by_one(messages).await
                }
                Err(error) if error.is_statement_timeout() => {
                    tracing::warn!(error = %error, count = messages.len(), "a batch ran into the statement timeout; storing it in halves");
                    self.store_split(messages, std::time::Instant::now()).await
                }
                Err(error) => Err(error),
            };
            self.status.set_database(outcome.is_ok());
            outcome
        };
        let what = "cannot store a batch; it stays unacknowledged";
        match retry(what, cancel.cancelled(), attempt, |_| false).await {
            Some(stored) => stored.map_err(|_| unreachable!("no error is final")),
            None => Err(SessionEnd::Cancelled),
        }
    }

    /// One insert of `messages`, counted in the metrics and in the writes readiness watches. Returns
    /// the key conflicts, as indexes into `messages`.
    pub(super) async fn insert(
        &self,
        messages: &[QueuedMessage],
    ) -> Result<Vec<(usize, String)>, StoreError> {
        let started = std::time::Instant::now();
        let writing = self.status.write_started();
        let written = self.store.insert(messages).await;
        drop(writing);
        let inserted = written?;
        self.record_stored(messages, inserted.new, started);
        Ok(self.key_conflicts(&inserted.conflicting))
    }

    pub(super) async fn store_one_by_one(
        &self,
        messages: &[QueuedMessage],
    ) -> Result<Vec<(usize, String)>, StoreError> {
        let mut refused = Vec::new();
        for (index, message) in messages.iter().enumerate() {
            match self.insert(std::slice::from_ref(message)).await {
                Ok(conflicts) => {
                    refused.extend(conflicts.into_iter().map(|(_, reason)| (index, reason)));
                }
                Err(error) if error.refused() => {
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

    fn record_stored(
        &self,
        messages: &[QueuedMessage],
        inserted: u64,
        started: std::time::Instant,
    ) {
        let delivered = messages.len();
        self.status.stored();
        // The publisher's clock against this one: a message redelivered after a fault counts its
        // whole wait, which is what its client waited.
        let committed = chrono::Utc::now();
        for message in messages {
            let waited = (committed - message.received_at)
                .to_std()
                .unwrap_or_default();
            self.metrics
                .end_to_end_seconds
                .observe(waited.as_secs_f64());
        }
        self.metrics
            .batch_seconds
            .observe(started.elapsed().as_secs_f64());
        self.metrics.batch_size.observe(delivered as f64);
        self.metrics.messages_stored.inc_by(inserted);
        self.metrics
            .messages_duplicate
            .inc_by(delivered as u64 - inserted);
    }
}
