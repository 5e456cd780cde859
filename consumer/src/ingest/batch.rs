//! Gathering deliveries into batches: up to `max` messages or `max_bytes` of payload, or whatever arrived
//! within `linger` of the first one, so a trickle is stored promptly, a flood is stored in few
//! transactions, and a batch of large messages never holds more memory than configured.

use std::time::Duration;

use futures::StreamExt;
use lapin::{message::Delivery, Consumer};
use tokio_util::sync::CancellationToken;

/// Why no batch was returned.
#[derive(Debug, thiserror::Error)]
pub(crate) enum BatchEnd {
    #[error("shutdown requested")]
    Cancelled,
    #[error("the broker ended the subscription")]
    SubscriptionEnded,
    #[error("the broker connection failed: {0}")]
    Amqp(#[from] lapin::Error),
}

/// Waits for the next delivery (however long the queue stays empty), then gathers more until the batch
/// is full or `linger` has passed. Cancellation is honoured only while waiting for the first delivery,
/// so a batch that has begun is always handed over whole.
pub(crate) async fn next_batch(
    consumer: &mut Consumer,
    max: usize,
    max_bytes: usize,
    linger: Duration,
    cancel: &CancellationToken,
) -> Result<Vec<Delivery>, BatchEnd> {
    let first = tokio::select! {
        () = cancel.cancelled() => return Err(BatchEnd::Cancelled),
        next = consumer.next() => next.ok_or(BatchEnd::SubscriptionEnded)??,
    };
    let mut bytes = first.data.len();
    let mut batch = Vec::with_capacity(max);
    batch.push(first);
    let deadline = tokio::time::Instant::now() + linger;
    while batch.len() < max && bytes < max_bytes {
        match tokio::time::timeout_at(deadline, consumer.next()).await {
            Ok(Some(delivery)) => {
                let delivery = delivery?;
                bytes += delivery.data.len();
                batch.push(delivery);
            }
            // The stream ended or the linger passed: store what we have; the next call reports the end.
            Ok(None) | Err(_) => break,
        }
    }
    Ok(batch)
}
