//! One drained queue's pipeline within a session: subscribe on the queue's own channel, then gather the
//! next batch while earlier ones are written by as many writers as the queue's flow allows, and
//! acknowledge them in delivery order.

use std::collections::BTreeSet;

use common::{amqp::CLOSE_TIMEOUT, backoff::Backoff};
use futures::{
    stream::{FuturesOrdered, FuturesUnordered},
    StreamExt,
};
use lapin::{
    message::Delivery,
    options::{BasicCancelOptions, BasicConsumeOptions},
    types::FieldTable,
    Channel, Connection, Consumer,
};
use tokio_util::sync::CancellationToken;

use super::{batch::next_batch, flow::QueueFlow, storing::Written, Ingest, SessionEnd};
use crate::dead_letters::DeadLetters;

/// How long a pipeline that has stopped taking batches waits for its dead-letter copies' answers. An
/// original whose copy is still unanswered then is left unsettled, and delivered again.
const ANSWER_GRACE: std::time::Duration = std::time::Duration::from_secs(5);

/// What one queue's pipeline works with for the length of a session.
#[derive(Clone, Copy)]
pub(super) struct Pipeline<'s> {
    pub(super) ingest: &'s Ingest,
    pub(super) connection: &'s Connection,
    /// The queue's live figures, which the queue watch reads and whose writer count it sets.
    pub(super) flow: &'s QueueFlow,
    /// The queue's share of `PREFETCH`.
    pub(super) prefetch: u16,
    /// The session's: the pipeline stores what it holds, then stops.
    pub(super) cancel: &'s CancellationToken,
    pub(super) dead_letters: &'s DeadLetters,
}

impl Pipeline<'_> {
    /// Consumes `flow`'s queue on `channel` and runs its pipeline, then stops the deliveries.
    ///
    /// A subscription the broker refuses for a reason only an operator can cure (a missing read
    /// permission, a missing queue) does not end the session: the other queues keep being drained,
    /// so nothing they hold is returned to the broker and counted as a failed delivery. The refusal
    /// makes the consumer unready, saying why, and the subscription is tried again with backoff.
    pub(super) async fn run(&self, mut channel: Channel) -> SessionEnd {
        let Self {
            ingest,
            connection,
            flow,
            prefetch,
            cancel,
            ..
        } = *self;
        let queue = flow.queue();
        let mut backoff = Backoff::new();
        let mut consumer = loop {
            let subscribed = channel
                .basic_consume(
                    queue.into(),
                    "".into(),
                    BasicConsumeOptions::default(),
                    FieldTable::default(),
                )
                .await;
            let error = match subscribed {
                Ok(consumer) => break consumer,
                Err(error) => SessionEnd::Amqp(error),
            };
            if !ingest.note_refusal(queue, &error) {
                return error;
            }
            tokio::select! {
                () = cancel.cancelled() => return SessionEnd::Cancelled,
                () = tokio::time::sleep(backoff.next_delay()) => {}
            }
            // The refusal closed the channel.
            channel = match ingest.queue_channel(connection, queue, prefetch).await {
                Ok(channel) => channel,
                Err(end) => return end,
            };
        };
        ingest.status.accepted(queue);
        let ended = self.stream(&mut consumer).await;
        let cancelling = channel.basic_cancel(consumer.tag(), BasicCancelOptions::default());
        let _ = tokio::time::timeout(CLOSE_TIMEOUT, cancelling).await;
        ended
    }

    /// Gathers the next batch while earlier ones are written, by as many writers as the queue's flow
    /// allows. Batches are written concurrently but acknowledged one at a time, in delivery order, so a
    /// `multiple` ack never covers a delivery of a batch still being written. Returns why the session
    /// ended; on cancellation, batches already gathered are stored and acknowledged first.
    async fn stream(&self, consumer: &mut Consumer) -> SessionEnd {
        let Self {
            ingest,
            flow,
            prefetch,
            cancel,
            dead_letters,
            ..
        } = *self;
        // One batch waiting while the writers work: with the prefetch bounding what the broker sends, a
        // deeper queue would only hold more deliveries unacknowledged.
        let (ready, mut gathered) = tokio::sync::mpsc::channel::<Vec<Delivery>>(1);
        let (batch_size, batch_bytes, linger) = (
            ingest.settings.batch_size,
            ingest.settings.batch_bytes,
            ingest.settings.batch_linger,
        );
        let gather = async move {
            let end = loop {
                let limit = flow.batch_limit(batch_size, prefetch);
                match next_batch(consumer, limit, batch_bytes, linger, cancel).await {
                    Ok(batch) => {
                        flow.gathered(batch.len());
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
            let mut writing = FuturesOrdered::new();
            // Dead-letter copies not answered when their batch was written, and the tags of their
            // originals, which stay unsettled until the answer comes.
            let mut answers = FuturesUnordered::new();
            let mut unsettled = BTreeSet::new();
            let mut open = true;
            let mut give_up_answers = None;
            while open || !writing.is_empty() || !answers.is_empty() {
                if !open && writing.is_empty() && give_up_answers.is_none() {
                    give_up_answers = Some(tokio::time::Instant::now() + ANSWER_GRACE);
                }
                tokio::select! {
                    // Settling first keeps acknowledgements flowing while batches keep arriving.
                    biased;
                    Some((tag, acker, answer)) = answers.next(), if !answers.is_empty() => {
                        ingest.writer.copy_answered(&acker, answer, dead_letters).await?;
                        unsettled.remove(&tag);
                    }
                    Some(written) = writing.next(), if !writing.is_empty() => {
                        let written: Written = written?;
                        let lowest = unsettled
                            .first()
                            .into_iter()
                            .chain(written.unanswered.iter().map(|copy| &copy.delivery_tag))
                            .min()
                            .copied();
                        ingest.writer.settle(&written.stored, lowest).await?;
                        flow.settled(written.count);
                        for copy in written.unanswered {
                            unsettled.insert(copy.delivery_tag);
                            answers.push(async move { (copy.delivery_tag, copy.acker, copy.copy.await) });
                        }
                    }
                    batch = gathered.recv(), if open && writing.len() < flow.writers() => match batch {
                        Some(batch) => writing.push_back(ingest.writer.write(batch, flow.queue(), cancel, dead_letters)),
                        None => open = false,
                    },
                    () = tokio::time::sleep_until(give_up_answers.unwrap_or_else(tokio::time::Instant::now)), if give_up_answers.is_some() => {
                        tracing::warn!(
                            unanswered = answers.len(),
                            "dead-letter copies still unanswered at the end of the session; their originals are delivered again"
                        );
                        break;
                    }
                }
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
}
