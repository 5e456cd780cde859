//! Declaring and verifying the topology on the broker, and finding and retiring the shard queues a
//! larger `QUEUE_SHARDS` left behind.

use lapin::{
    options::{ExchangeBindOptions, ExchangeDeclareOptions, QueueBindOptions, QueueDeclareOptions},
    protocol::{AMQPErrorKind, AMQPSoftError},
    types::FieldTable,
    Channel, Connection, ExchangeKind,
};

use super::{arguments::insert_str, Topology, MAX_SHARDS};

impl Topology {
    /// Declares everything, or only checks that every exchange and queue exists when the topology is
    /// [verified only](Topology::verified_only). A missing object closes `channel` with `NOT_FOUND`.
    pub async fn ensure(&self, channel: &Channel) -> lapin::Result<()> {
        if self.verify_only {
            self.verify(channel).await
        } else {
            self.declare(channel).await
        }
    }

    /// Declares or verifies the topology as [`Topology::ensure`] does, then finds the shard queues left
    /// by a larger `QUEUE_SHARDS` ([`Topology::leftover_shards`]) and, unless only verifying, unbinds
    /// them so that no new message lands there. Returns every queue to drain: the
    /// [drained queues](Topology::drained_queues), then the leftovers.
    pub async fn prepare(&self, connection: &Connection) -> lapin::Result<Vec<String>> {
        self.prepare_as(connection, !self.verify_only).await
    }

    /// [`Topology::prepare`] that declares whatever the topology says: the setup step's, run with an
    /// administrator's credentials.
    pub async fn declare_and_retire(&self, connection: &Connection) -> lapin::Result<Vec<String>> {
        self.prepare_as(connection, true).await
    }

    async fn prepare_as(
        &self,
        connection: &Connection,
        declare: bool,
    ) -> lapin::Result<Vec<String>> {
        let channel = connection.create_channel().await?;
        if declare {
            self.declare(&channel).await?;
        } else {
            self.verify(&channel).await?;
        }
        let leftovers = self.leftover_shards(connection).await?;
        if declare && !leftovers.is_empty() {
            self.retire(&channel, &leftovers).await?;
            tracing::warn!(
                queues = ?leftovers,
                shards = self.shards.len(),
                "shard queues beyond QUEUE_SHARDS exist: unbound, and drained for as long as they exist"
            );
        }
        let _ = channel.close(200, "prepared".into()).await;
        let mut queues: Vec<String> = self
            .drained_queues()
            .into_iter()
            .map(str::to_owned)
            .collect();
        queues.extend(leftovers);
        Ok(queues)
    }

    /// The shard queues that exist beyond the configured ones: `<queue>.N`, `<queue>.N+1`, … (from
    /// `<queue>.0` with one queue), found with passive declarations up to the first that does not exist.
    /// The services declare shard queues only as the run `0` … `N-1` and never delete one, so the run
    /// above N holds every queue a larger N left; a queue an operator deleted ends the search.
    pub async fn leftover_shards(&self, connection: &Connection) -> lapin::Result<Vec<String>> {
        let first = if self.is_sharded() {
            self.shards.len()
        } else {
            0
        };
        let mut leftovers = Vec::new();
        for index in first..usize::from(MAX_SHARDS) {
            let name = format!("{}.{index}", self.queue);
            if !crate::amqp::queue_exists(connection, &name).await? {
                break;
            }
            leftovers.push(name);
        }
        Ok(leftovers)
    }

    /// Whether a shard queue that `drained` does not name exists now, as one declared by a publisher
    /// at a larger `QUEUE_SHARDS` since `drained` was found: the first `<queue>.k` missing from it is
    /// looked at with a passive declaration, on a channel of its own.
    pub async fn has_undrained_shard(
        &self,
        connection: &Connection,
        drained: &[String],
    ) -> lapin::Result<bool> {
        let Some(next) = (0..MAX_SHARDS)
            .map(|index| format!("{}.{index}", self.queue))
            .find(|name| !drained.contains(name))
        else {
            return Ok(false);
        };
        crate::amqp::queue_exists(connection, &next).await
    }

    /// Unbinds `leftovers` from `<queue>.shards`, and, with one queue, `<queue>.shards` from
    /// `<queue>.exchange`, so that new messages reach only the configured queues. What is not bound
    /// stays unbound; the exchange is declared first so that unbinding never fails for its absence.
    async fn retire(&self, channel: &Channel, leftovers: &[String]) -> lapin::Result<()> {
        if !self.is_sharded() {
            self.declare_shard_exchange(channel, durable_exchange())
                .await?;
        }
        for queue in leftovers {
            channel
                .queue_unbind(
                    queue.as_str().into(),
                    self.shard_exchange.as_str().into(),
                    "1".into(),
                    FieldTable::default(),
                )
                .await?;
        }
        if !self.is_sharded() {
            channel
                .exchange_unbind(
                    self.shard_exchange.as_str().into(),
                    self.exchange().into(),
                    self.queue().into(),
                    lapin::options::ExchangeUnbindOptions::default(),
                    FieldTable::default(),
                )
                .await?;
        }
        Ok(())
    }

    /// Checks, with passive declarations (which need no permission), that every exchange and queue
    /// exists. Bindings cannot be checked this way; the setup step declares them with the rest.
    pub async fn verify(&self, channel: &Channel) -> lapin::Result<()> {
        let passive_exchange = ExchangeDeclareOptions {
            passive: true,
            ..ExchangeDeclareOptions::default()
        };
        let mut exchanges = vec![
            (self.exchange(), ExchangeKind::Direct),
            (self.dead_letter_exchange(), ExchangeKind::Direct),
        ];
        if self.is_sharded() {
            let kind = ExchangeKind::Custom("x-consistent-hash".to_owned());
            exchanges.push((self.shard_exchange.as_str(), kind));
        }
        for (exchange, kind) in exchanges {
            channel
                .exchange_declare(
                    exchange.into(),
                    kind,
                    passive_exchange,
                    FieldTable::default(),
                )
                .await?;
        }
        for queue in self
            .drained_queues()
            .into_iter()
            .chain([self.dead_letter_queue()])
        {
            crate::amqp::look_at(channel, queue).await?;
        }
        Ok(())
    }

    /// Declares everything. Safe to run concurrently and repeatedly; fails only if an object of the same
    /// name exists with other arguments (for example a queue declared with another `QUEUE_TYPE`).
    pub async fn declare(&self, channel: &Channel) -> lapin::Result<()> {
        let durable_exchange = ExchangeDeclareOptions {
            durable: true,
            ..ExchangeDeclareOptions::default()
        };
        let durable_queue = QueueDeclareOptions {
            durable: true,
            ..QueueDeclareOptions::default()
        };
        channel
            .exchange_declare(
                self.dead_letter_exchange().into(),
                ExchangeKind::Direct,
                durable_exchange,
                FieldTable::default(),
            )
            .await?;
        let mut with_alternate = FieldTable::default();
        insert_str(
            &mut with_alternate,
            "alternate-exchange",
            self.dead_letter_exchange(),
        );
        channel
            .exchange_declare(
                self.exchange().into(),
                ExchangeKind::Direct,
                durable_exchange,
                with_alternate,
            )
            .await?;
        channel
            .queue_declare(
                self.dead_letter_queue().into(),
                durable_queue,
                self.dead_letter_queue_arguments(),
            )
            .await?;
        channel
            .queue_declare(
                self.unrouted_queue().into(),
                durable_queue,
                self.queue_arguments(),
            )
            .await?;
        // Dead letters keep the routing key `<queue>.dead`; unroutable messages keep `<queue>`.
        for (queue, routing_key) in [
            (self.dead_letter_queue(), self.dead_letter_queue()),
            (self.unrouted_queue(), self.queue()),
        ] {
            channel
                .queue_bind(
                    queue.into(),
                    self.dead_letter_exchange().into(),
                    routing_key.into(),
                    QueueBindOptions::default(),
                    FieldTable::default(),
                )
                .await?;
        }
        // Earlier versions sent unroutable messages to `<queue>.dead`; only `<queue>.unrouted` takes
        // them now (unbinding what is not bound is a no-op).
        channel
            .queue_unbind(
                self.dead_letter_queue().into(),
                self.dead_letter_exchange().into(),
                self.queue().into(),
                FieldTable::default(),
            )
            .await?;
        channel
            .queue_declare(self.queue().into(), durable_queue, self.queue_arguments())
            .await?;
        if self.is_sharded() {
            self.declare_shards(channel, durable_exchange, durable_queue)
                .await?;
            // New messages go to the shards only; `<queue>` keeps what it holds until drained.
            channel
                .queue_unbind(
                    self.queue().into(),
                    self.exchange().into(),
                    self.queue().into(),
                    FieldTable::default(),
                )
                .await?;
        } else {
            channel
                .queue_bind(
                    self.queue().into(),
                    self.exchange().into(),
                    self.queue().into(),
                    QueueBindOptions::default(),
                    FieldTable::default(),
                )
                .await?;
        }
        Ok(())
    }

    /// Declares the consistent-hash exchange, the shards bound to it with equal weights, and its binding
    /// to `<queue>.exchange`. The exchange hashes the `message_id` property, which the publisher sets to
    /// the message's id. Fails with `COMMAND_INVALID` if the broker lacks [`CONSISTENT_HASH_PLUGIN`].
    async fn declare_shards(
        &self,
        channel: &Channel,
        durable_exchange: ExchangeDeclareOptions,
        durable_queue: QueueDeclareOptions,
    ) -> lapin::Result<()> {
        self.declare_shard_exchange(channel, durable_exchange)
            .await?;
        for shard in &self.shards {
            channel
                .queue_declare(shard.as_str().into(), durable_queue, self.shard_arguments())
                .await?;
            // The routing key of a binding to a consistent-hash exchange is its weight.
            channel
                .queue_bind(
                    shard.as_str().into(),
                    self.shard_exchange.as_str().into(),
                    "1".into(),
                    QueueBindOptions::default(),
                    FieldTable::default(),
                )
                .await?;
        }
        channel
            .exchange_bind(
                self.shard_exchange.as_str().into(),
                self.exchange().into(),
                self.queue().into(),
                ExchangeBindOptions::default(),
                FieldTable::default(),
            )
            .await?;
        Ok(())
    }

    /// The consistent-hash exchange in front of the shards, unbound.
    async fn declare_shard_exchange(
        &self,
        channel: &Channel,
        durable_exchange: ExchangeDeclareOptions,
    ) -> lapin::Result<()> {
        let mut hashing = FieldTable::default();
        insert_str(&mut hashing, "hash-property", "message_id");
        // Should every shard be deleted, messages still reach `<queue>.unrouted`.
        insert_str(
            &mut hashing,
            "alternate-exchange",
            self.dead_letter_exchange(),
        );
        channel
            .exchange_declare(
                self.shard_exchange.as_str().into(),
                ExchangeKind::Custom("x-consistent-hash".to_owned()),
                durable_exchange,
                hashing,
            )
            .await
    }
}

/// Whether the broker answered that the object does not exist.
pub fn is_not_found(error: &lapin::Error) -> bool {
    matches!(
        error.kind(),
        lapin::ErrorKind::ProtocolError(amqp)
            if matches!(amqp.kind(), AMQPErrorKind::Soft(AMQPSoftError::NOTFOUND))
    )
}

fn durable_exchange() -> ExchangeDeclareOptions {
    ExchangeDeclareOptions {
        durable: true,
        ..ExchangeDeclareOptions::default()
    }
}
