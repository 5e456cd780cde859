//! Deliveries that must go to the dead-letter queue, and sending them there with their reason.

use common::amqp::Confirmed;
use lapin::{
    message::Delivery,
    options::{BasicAckOptions, BasicRejectOptions},
    types::{AMQPValue, DeliveryTag},
    Acker,
};

use super::{settled, storing::Writer, SessionEnd};
use crate::dead_letters::{
    answered, properties_bytes, Copy, CopyInFlight, DeadLetters, MAX_HEADER_BYTES,
};

impl Writer {
    /// Why `delivery` must be dead-lettered before it is even decoded, if it must: a payload or headers
    /// larger than any publisher sends, or a delivery the broker is about to dead-letter on its own for its delivery
    /// count (it would do so without a reason; here the reason travels with it).
    pub(super) fn refuse_unseen(&self, delivery: &Delivery) -> Option<String> {
        if delivery.data.len() > self.max_payload_bytes {
            return Some(format!(
                "the payload is {} bytes, over the {} bytes the publisher can send",
                delivery.data.len(),
                self.max_payload_bytes
            ));
        }
        let header_bytes = properties_bytes(&delivery.properties);
        if header_bytes > MAX_HEADER_BYTES {
            return Some(format!(
                "the properties and headers are {header_bytes} bytes, over the {MAX_HEADER_BYTES} bytes \
                 the publisher writes; another client put it on the queue (its headers are not kept here)"
            ));
        }
        let limit = self.delivery_limit?;
        let count = delivery_count(delivery)?;
        (count + 1 >= u64::from(limit)).then(|| {
            format!(
                "delivered {} times without being stored (DELIVERY_LIMIT is {limit}); the consumer \
                 holding it kept stopping before it could store it",
                count + 1
            )
        })
    }

    /// Moves `deliveries` (each with why), taken from `queue`, to the dead-letter queue. Each original is
    /// acknowledged once its copy is taken, or rejected (which the broker dead-letters without the
    /// reason) when no copy exists. Returns the copies still unanswered when the batch's wait ran out,
    /// whose originals stay unsettled until [`Ingest::copy_answered`] settles them.
    pub(super) async fn dead_letter<'a>(
        &self,
        deliveries: Vec<(&Delivery, String)>,
        queue: &str,
        dead_letters: &'a DeadLetters,
    ) -> Result<Vec<Unanswered<'a>>, SessionEnd> {
        let deadline = DeadLetters::answer_deadline();
        let mut unanswered = Vec::new();
        for (delivery, reason) in deliveries {
            let copy = dead_letters.copy(delivery, &reason, queue, deadline).await;
            match self.lost_copy(copy, dead_letters)? {
                Copy::Unanswered(copy) => {
                    tracing::warn!(
                        delivery_tag = delivery.delivery_tag,
                        "the dead-letter copy is not answered yet; its original stays unsettled until it is"
                    );
                    unanswered.push(Unanswered {
                        delivery_tag: delivery.delivery_tag,
                        acker: delivery.acker.clone(),
                        copy,
                    });
                }
                copy => {
                    let taken = matches!(copy, Copy::Taken);
                    self.settle_original(&delivery.acker, taken).await?;
                }
            }
        }
        Ok(unanswered)
    }

    /// Settles the original of a copy that was unanswered once the broker's answer (or a failure) has
    /// come.
    pub(super) async fn copy_answered(
        &self,
        acker: &Acker,
        answer: lapin::Result<Confirmed>,
        dead_letters: &DeadLetters,
    ) -> Result<(), SessionEnd> {
        let taken = matches!(
            self.lost_copy(answer.map(answered), dead_letters)?,
            Copy::Taken
        );
        self.settle_original(acker, taken).await
    }

    /// A failed copy, as what it means: on a connection that is still up the broker refused it (its
    /// channel closed on an error), so none exists; on a lost connection nobody can tell whether the
    /// broker took it, so the session ends and the original, left unsettled, is delivered again.
    fn lost_copy<'a>(
        &self,
        copy: lapin::Result<Copy<'a>>,
        dead_letters: &DeadLetters,
    ) -> Result<Copy<'a>, SessionEnd> {
        match copy {
            Ok(copy) => Ok(copy),
            Err(error) if dead_letters.connected() => {
                tracing::warn!(error = %error, "the broker refused a dead-letter copy; rejecting the original instead");
                Ok(Copy::NotTaken)
            }
            Err(error) => {
                tracing::warn!(error = %error, "the dead-letter connection was lost with a copy unanswered; the original is left for redelivery");
                Err(SessionEnd::DeadLettersLost)
            }
        }
    }

    /// Acknowledges the original of a copy the broker took; rejects it, so that the broker dead-letters
    /// it, when none exists.
    async fn settle_original(&self, acker: &Acker, taken: bool) -> Result<(), SessionEnd> {
        let outcome = if taken {
            acker.ack(BasicAckOptions::default()).await
        } else {
            self.metrics.dead_letters_refused.inc();
            acker.reject(BasicRejectOptions { requeue: false }).await
        };
        settled(outcome)?;
        self.metrics.messages_dead_lettered.inc();
        Ok(())
    }
}

/// A dead-letter copy that was sent but not answered in time, and the original it stands for.
pub(super) struct Unanswered<'a> {
    pub delivery_tag: DeliveryTag,
    pub acker: Acker,
    pub copy: CopyInFlight<'a>,
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
