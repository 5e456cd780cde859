//! One session with the broker: connect, declare the topology, prepare a channel of its own for every
//! queue, only then subscribe to each, and run each queue's pipeline (gather the next batch while the previous one is stored) until
//! the connection fails or shutdown is asked for.

use lapin::{options::BasicQosOptions, Channel, Connection};
use tokio_util::sync::CancellationToken;

use super::{
    flow::QueueFlow, pipeline::Pipeline, prefetch::prefetch_of, watch::QueueWatch, Ingest,
    SessionEnd,
};
use crate::dead_letters::DeadLetters;

/// How often a session looks at whether its connection is still up.
const CONNECTION_CHECK_INTERVAL: std::time::Duration = std::time::Duration::from_millis(250);

/// How often, in queue-watch intervals, a session looks for a shard queue it does not drain.
const SHARD_LOOK_EVERY: u32 = 6;

impl Ingest {
    /// One connection to the broker: subscribe to every queue, then store batches until the connection
    /// fails or `cancel` fires. Each queue has a channel and a pipeline of its own, so a `multiple` ack
    /// only ever covers that queue's deliveries.
    pub(super) async fn session(&self, cancel: &CancellationToken) -> SessionEnd {
        // Connecting can hang on an unreachable host until the OS gives up: never make shutdown wait.
        let (connection, queues, channels, dead_letters) = tokio::select! {
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
        tracing::info!(?queues, "consuming");
        let session = cancel.child_token();
        let flows: Vec<QueueFlow> = queues
            .iter()
            .map(|queue| QueueFlow::new(queue.as_str(), self.settings.scaling.min))
            .collect();
        let ended = {
            let pipelines = channels.into_iter().zip(&flows).map(|(channel, flow)| {
                let prefetch = prefetch_of(
                    flow.queue(),
                    &queues,
                    &self.settings.topology,
                    self.settings.prefetch,
                );
                let pipeline = Pipeline {
                    ingest: self,
                    connection: &connection,
                    flow,
                    prefetch,
                    cancel: &session,
                    dead_letters: &dead_letters,
                };
                Box::pin(async move { pipeline.run(channel).await })
            });
            let counting = QueueWatch::new(self, &flows).run(&connection);
            // A new shard queue ends the session as shutdown does (every batch in hand stored and
            // acknowledged), and the next one drains it too.
            let new_shard = async {
                self.shard_appeared(&connection, &queues).await;
                session.cancel();
                std::future::pending::<std::convert::Infallible>().await
            };
            // A lost dead-letter connection would fail every copy: the session ends as shutdown does,
            // and the next one opens a new one.
            let dead_letters_lost = std::sync::atomic::AtomicBool::new(false);
            let dead_letters_gone = async {
                connection_lost(dead_letters.connection()).await;
                tracing::warn!("the dead-letter connection was lost; ending the session");
                dead_letters_lost.store(true, std::sync::atomic::Ordering::Relaxed);
                session.cancel();
                std::future::pending::<std::convert::Infallible>().await
            };
            let lost = connection_lost(&connection);
            tokio::pin!(lost);
            let (first, _, others) = tokio::select! {
                ended = futures::future::select_all(pipelines) => ended,
                never = counting => match never {},
                never = new_shard => match never {},
                never = dead_letters_gone => match never {},
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
            match first {
                _ if dead_letters_lost.load(std::sync::atomic::Ordering::Relaxed) => {
                    SessionEnd::DeadLettersLost
                }
                SessionEnd::Cancelled if !cancel.is_cancelled() => SessionEnd::ShardAppeared,
                first => first,
            }
        };
        // Let go of any prefetched deliveries: closing the connection returns them to the queue. On a
        // failed connection this fails harmlessly; on a channel-level failure it keeps the dead
        // connection from lingering.
        common::amqp::close(&connection, "closing").await;
        dead_letters.close().await;
        ended
    }

    /// Records `end` as a refusal of `what` if only an operator can cure it, logging why; returns
    /// whether it was one.
    pub(super) fn note_refusal(&self, what: &str, end: &SessionEnd) -> bool {
        let Some(reason) = refusal(end) else {
            return false;
        };
        tracing::error!(%what, %reason, "the broker refuses what only an operator can grant; not ready");
        self.status.refused(what, reason);
        true
    }

    /// Connects, declares the topology, and prepares a channel for every queue it drains (its prefetch
    /// set and the queue found), and the dead-letter connection: everything that can fail is done before
    /// any queue is consumed, so a failure here returns no delivery to the broker. Each shard gets its
    /// share of the configured prefetch, the other queues (`<QUEUE_NAME>` once sharded, the fallback
    /// queue, and shard queues a larger `QUEUE_SHARDS` left) a small one.
    async fn subscribe(
        &self,
    ) -> Result<(Connection, Vec<String>, Vec<Channel>, DeadLetters), SessionEnd> {
        let connection = self.settings.broker.connect_as("message-consumer").await?;
        let topology = &self.settings.topology;
        let queues = topology.prepare(&connection).await?;
        let mut channels = Vec::new();
        for queue in &queues {
            let prefetch = prefetch_of(queue, &queues, topology, self.settings.prefetch);
            channels.push(self.queue_channel(&connection, queue, prefetch).await?);
        }
        let dead_letters = DeadLetters::open(&self.settings.broker, topology).await?;
        Ok((connection, queues, channels, dead_letters))
    }
}

impl Ingest {
    /// Resolves once a shard queue that `drained` does not name exists (declared by a publisher at a
    /// larger `QUEUE_SHARDS` than this consumer's), looking every [`SHARD_LOOK_EVERY`] watch intervals.
    /// A failed look is left to the session's own failure handling.
    async fn shard_appeared(&self, connection: &Connection, drained: &[String]) {
        let mut looks = tokio::time::interval(self.settings.watch_interval * SHARD_LOOK_EVERY);
        // The first tick is now, and the session has just looked.
        looks.tick().await;
        loop {
            looks.tick().await;
            match self
                .settings
                .topology
                .has_undrained_shard(connection, drained)
                .await
            {
                Ok(true) => return,
                Ok(false) => tracing::debug!("looked for new shard queues: none"),
                Err(error) => tracing::debug!(%error, "could not look for new shard queues"),
            }
        }
    }

    /// A channel for `queue` with its prefetch set, once the queue is found to exist.
    pub(super) async fn queue_channel(
        &self,
        connection: &Connection,
        queue: &str,
        prefetch: u16,
    ) -> Result<Channel, SessionEnd> {
        let channel = connection.create_channel().await?;
        channel
            .basic_qos(prefetch, BasicQosOptions::default())
            .await?;
        common::amqp::look_at(&channel, queue).await?;
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
