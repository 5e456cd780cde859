//! Deliveries that must go to the dead-letter queue, and sending them there with their reason.

use lapin::{
    message::Delivery,
    options::{BasicAckOptions, BasicRejectOptions},
    types::AMQPValue,
};

use super::{
    dead_letter::{properties_bytes, DeadLetters, MAX_HEADER_BYTES},
    settled, Ingest, SessionEnd,
};

impl Ingest {
    /// Why `delivery` must be dead-lettered before it is even decoded, if it must: a payload or headers
    /// larger than any publisher sends, or a delivery the broker is about to dead-letter on its own for its delivery
    /// count (it would do so without a reason; here the reason travels with it).
    pub(super) fn refuse_unseen(&self, delivery: &Delivery) -> Option<String> {
        if delivery.data.len() > self.settings.max_payload_bytes {
            return Some(format!(
                "the payload is {} bytes, over the {} bytes the publisher can send",
                delivery.data.len(),
                self.settings.max_payload_bytes
            ));
        }
        let header_bytes = properties_bytes(&delivery.properties);
        if header_bytes > MAX_HEADER_BYTES {
            return Some(format!(
                "the properties and headers are {header_bytes} bytes, over the {MAX_HEADER_BYTES} bytes \
                 the publisher writes; another client put it on the queue (its headers are not kept here)"
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

    /// Moves `delivery`, taken from `queue`, to the dead-letter queue with `reason`; falls back to a plain reject (which the
    /// broker dead-letters without the reason) if the copy cannot be confirmed.
    pub(super) async fn dead_letter(
        &self,
        delivery: &Delivery,
        reason: &str,
        queue: &str,
        dead_letters: &DeadLetters,
    ) -> Result<(), SessionEnd> {
        let copied = dead_letters.copy(delivery, reason, queue).await.unwrap_or_else(|error| {
            tracing::warn!(error = %error, "could not copy to the dead-letter queue; rejecting instead");
            false
        });
        if !copied {
            self.metrics.dead_letters_refused.inc();
        }
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
