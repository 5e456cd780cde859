//! One session with the broker: connect, declare the topology, prepare a channel of its own for every
//! queue, only then subscribe to each, and run each queue's pipeline (gather the next batch while the previous one is stored) until
//! the connection fails or shutdown is asked for.

use common::{amqp::CLOSE_TIMEOUT, backoff::Backoff, Topology};
use lapin::{
    message::Delivery,
    options::{BasicCancelOptions, BasicConsumeOptions, BasicQosOptions, QueueDeclareOptions},
    types::FieldTable,
    Channel, Connection, ConnectionProperties, Consumer,
};
use tokio_util::sync::CancellationToken;

use futures::{stream::FuturesOrdered, StreamExt};

use super::{
    batch::next_batch, dead_letter::DeadLetters, flow::QueueFlow, storing::Written, Ingest,
    SessionEnd,
};

/// How often a session looks at whether its connection is still up.
const CONNECTION_CHECK_INTERVAL: std::time::Duration = std::time::Duration::from_millis(250);

/// The queues that are not shards (`<QUEUE_NAME>.unrouted`, and `<QUEUE_NAME>` once sharded) are drained
/// with this fraction of the prefetch.
const FALLBACK_PREFETCH_SHARE: u16 = 16;

impl Ingest {
    /// One connection to the broker: subscribe to every queue, then store batches until the connection
    /// fails or `cancel` fires. Each queue has a channel and a pipeline of its own, so a `multiple` ack
    /// only ever covers that queue's deliveries.
    pub(super) async fn session(&self, cancel: &CancellationToken) -> SessionEnd {
        // Connecting can hang on an unreachable host until the OS gives up: never make shutdown wait.
        let (connection, channels, dead_letters) = tokio::select! {
            () = cancel.cancelled() => return SessionEnd::Cancelled,
            subscribed = self.subscribe() => match subscribed {
                Ok(subscribed) => subscribed,
                Err(end) => {
                    self.note_refusal(SETUP, &end);
                    return end;
                }
            },
        };
        self.status.accepted(SETUP);
        self.status.set_broker(true);
        tracing::info!(queues = ?self.settings.topology.drained_queues(), "consuming");
        let session = cancel.child_token();
        let flows: Vec<QueueFlow> = self
            .settings
            .topology
            .drained_queues()
            .into_iter()
            .map(|queue| QueueFlow::new(queue, self.settings.scaling.min))
            .collect();
        let ended = {
            let pipelines = channels.into_iter().zip(&flows).map(|(channel, flow)| {
                Box::pin(self.drain(&connection, channel, flow, &session, &dead_letters))
            });
            let counting = self.watch_queues(&connection, &flows);
            let lost = connection_lost(&connection);
            tokio::pin!(lost);
            let (first, _, others) = tokio::select! {
                ended = futures::future::select_all(pipelines) => ended,
                never = counting => match never {},
                // A pipeline may be waiting on a frame that will never be answered; what it holds is
                // unacknowledged and comes back to whoever consumes next.
                () = &mut lost => (SessionEnd::ConnectionLost, 0, Vec::new()),
            };
            // The others store and acknowledge what they hold, then stop; on a lost connection their
            // acknowledgements cannot be sent, so they are not waited for.
            session.cancel();
            tokio::select! {
                _ = futures::future::join_all(others) => {}
                () = &mut lost => {}
            }
            first
        };
        // Let go of any prefetched deliveries: closing the connection returns them to the queue. On a
        // failed connection this fails harmlessly; on a channel-level failure it keeps the dead
        // connection from lingering.
        common::amqp::close(&connection, "closing").await;
        dead_letters.close().await;
        ended
    }

    /// Consumes `flow`'s queue on `channel` and runs its pipeline, then stops the deliveries.
    ///
    /// A subscription the broker refuses for a reason only an operator can cure (a missing read
    /// permission, a missing queue) does not end the session: the other queues keep being drained,
    /// so nothing they hold is returned to the broker and counted as a failed delivery. The refusal
    /// makes the consumer unready, saying why, and the subscription is tried again with backoff.
    async fn drain(
        &self,
        connection: &Connection,
        mut channel: Channel,
        flow: &QueueFlow,
        cancel: &CancellationToken,
        dead_letters: &DeadLetters,
    ) -> SessionEnd {
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
            if !self.note_refusal(queue, &error) {
                return error;
            }
            tokio::select! {
                () = cancel.cancelled() => return SessionEnd::Cancelled,
                () = tokio::time::sleep(backoff.next_delay()) => {}
            }
            // The refusal closed the channel.
            channel = match self.queue_channel(connection, queue).await {
                Ok(channel) => channel,
                Err(end) => return end,
            };
        };
        self.status.accepted(queue);
        let ended = self
            .pipeline(&mut consumer, flow, cancel, dead_letters)
            .await;
        let cancelling = channel.basic_cancel(consumer.tag(), BasicCancelOptions::default());
        let _ = tokio::time::timeout(CLOSE_TIMEOUT, cancelling).await;
        ended
    }

    /// Records `end` as a refusal of `what` if only an operator can cure it, logging why; returns
    /// whether it was one.
    fn note_refusal(&self, what: &str, end: &SessionEnd) -> bool {
        let Some(reason) = refusal(end) else {
            return false;
        };
        tracing::error!(%what, %reason, "the broker refuses what only an operator can grant; not ready");
        self.status.refused(what, reason);
        true
    }

    /// Gathers the next batch while earlier ones are written, by as many writers as the queue's flow
    /// allows. Batches are written concurrently but acknowledged one at a time, in delivery order, so a
    /// `multiple` ack never covers a delivery of a batch still being written. Returns why the session
    /// ended; on cancellation, batches already gathered are stored and acknowledged first.
    async fn pipeline(
        &self,
        consumer: &mut Consumer,
        flow: &QueueFlow,
        cancel: &CancellationToken,
        dead_letters: &DeadLetters,
    ) -> SessionEnd {
        // One batch waiting while the writers work: with the prefetch bounding what the broker sends, a
        // deeper queue would only hold more deliveries unacknowledged.
        let (ready, mut gathered) = tokio::sync::mpsc::channel::<Vec<Delivery>>(1);
        let (batch_size, batch_bytes, linger, prefetch) = (
            self.settings.batch_size,
            self.settings.batch_bytes,
            self.settings.batch_linger,
            prefetch_of(
                flow.queue(),
                &self.settings.topology,
                self.settings.prefetch,
            ),
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
            let mut open = true;
            while open || !writing.is_empty() {
                tokio::select! {
                    // Settling first keeps acknowledgements flowing while batches keep arriving.
                    biased;
                    Some(written) = writing.next(), if !writing.is_empty() => {
                        let written: Written = written?;
                        self.settle(&written).await?;
                        flow.settled(written.count);
                    }
                    batch = gathered.recv(), if open && writing.len() < flow.writers() => match batch {
                        Some(batch) => writing.push_back(self.write(batch, flow.queue(), cancel, dead_letters)),
                        None => open = false,
                    },
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

    /// Connects, declares the topology, and prepares a channel for every queue (its prefetch set and
    /// the queue found), and the dead-letter connection: everything that can fail is done before any
    /// queue is consumed, so a failure here returns no delivery to the broker. Each shard gets its
    /// share of the configured prefetch, the other queues (`<QUEUE_NAME>` once sharded, and the
    /// fallback queue) a small one.
    async fn subscribe(&self) -> Result<(Connection, Vec<Channel>, DeadLetters), SessionEnd> {
        let properties =
            ConnectionProperties::default().with_connection_name("message-consumer".into());
        let connection = self.settings.broker.connect(properties).await?;
        let topology = &self.settings.topology;
        let setup = connection.create_channel().await?;
        topology.ensure(&setup).await?;
        let _ = setup.close(200, "declared".into()).await;
        let mut channels = Vec::new();
        for queue in topology.drained_queues() {
            channels.push(self.queue_channel(&connection, queue).await?);
        }
        let dead_letters = DeadLetters::open(&self.settings.broker, topology).await?;
        Ok((connection, channels, dead_letters))
    }

    /// A channel for `queue` with its prefetch set, once the queue is found to exist.
    async fn queue_channel(
        &self,
        connection: &Connection,
        queue: &str,
    ) -> Result<Channel, SessionEnd> {
        let channel = connection.create_channel().await?;
        let topology = &self.settings.topology;
        channel
            .basic_qos(
                prefetch_of(queue, topology, self.settings.prefetch),
                BasicQosOptions::default(),
            )
            .await?;
        let passive = QueueDeclareOptions {
            passive: true,
            ..QueueDeclareOptions::default()
        };
        channel
            .queue_declare(queue.into(), passive, FieldTable::default())
            .await?;
        Ok(channel)
    }
}

/// What a setup step is called among the refusals.
const SETUP: &str = "setup";

/// Why the broker refused, if only an operator can cure it: a permission it does not grant
/// (`ACCESS_REFUSED`) or a queue or virtual host that does not exist (`NOT_FOUND`). Retrying sooner or
/// later makes no difference to those, so they are reported as such rather than cycled through.
fn refusal(end: &SessionEnd) -> Option<String> {
    let SessionEnd::Amqp(error) = end else {
        return None;
    };
    let lapin::ErrorKind::ProtocolError(amqp) = error.kind() else {
        return None;
    };
    matches!(amqp.get_id(), 403 | 404).then(|| amqp.to_string())
}

/// Resolves once `connection` is no longer connected (lapin marks it so when its socket fails or the
/// broker closes it), checked every [`CONNECTION_CHECK_INTERVAL`].
async fn connection_lost(connection: &Connection) {
    let mut checks = tokio::time::interval(CONNECTION_CHECK_INTERVAL);
    while connection.status().connected() {
        checks.tick().await;
    }
}

/// The prefetch of `queue`: `total` split evenly over the shards, so that what the consumer holds stays
/// within `PREFETCH_BYTES` however many there are, and a sixteenth of it for a queue that holds messages
/// only after something unusual (the main queue deleted, or messages from before sharding).
fn prefetch_of(queue: &str, topology: &Topology, total: u16) -> u16 {
    let shards = topology.shards();
    if shards.iter().any(|shard| shard == queue) {
        let count = u16::try_from(shards.len()).unwrap_or(u16::MAX);
        (total / count).max(1)
    } else {
        (total / FALLBACK_PREFETCH_SHARE).max(1)
    }
}

#[cfg(test)]
mod tests {
    use common::QueueType;

    use super::*;

    #[test]
    fn shards_share_the_prefetch_and_the_other_queues_get_a_sixteenth() {
        let single = Topology::new("q", QueueType::Quorum, 20, 1);
        assert_eq!(prefetch_of("q", &single, 400), 400);
        assert_eq!(prefetch_of("q.unrouted", &single, 400), 25);
        let sharded = Topology::new("q", QueueType::Quorum, 20, 4);
        assert_eq!(prefetch_of("q.3", &sharded, 400), 100);
        assert_eq!(prefetch_of("q", &sharded, 400), 25);
        assert_eq!(prefetch_of("q.0", &sharded, 3), 1);
    }
}
