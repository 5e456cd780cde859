//! The AMQP objects both services rely on, declared idempotently by whichever starts first.
//!
//! ```text
//! publisher ──▶ <queue>.exchange (direct) ──▶ <queue> ────────────▶ consumer
//!                    │ unroutable               │ rejected, or        ▲
//!                    ▼ (alternate exchange)     │ over the limit      │
//!               <queue>.dlx (direct) ──────────────▶ <queue>.unrouted ┘
//!                    └──────────────────────────▶ <queue>.dead
//! ```
//!
//! With `QUEUE_SHARDS` = N > 1, `<queue>.exchange` feeds `<queue>.shards` instead of `<queue>`: a
//! consistent-hash exchange that spreads messages over `<queue>.0` … `<queue>.<N-1>` by the hash of their
//! message id, so each queue (one Erlang process on one broker node) takes a share of the load, and a
//! message published again with the same id lands where its first copy did. `<queue>` itself stays
//! declared and drained, unbound, so what it held before sharding is still stored; raising N adds queues
//! and moves a share of new messages to them, and every queue keeps being drained.
//!
//! Lowering N (or going back to one queue) leaves `<queue>.N` … behind, holding what was routed there.
//! [`Topology::prepare`] finds them, unbinds them from `<queue>.shards` so no new message lands there,
//! and names them among the queues to drain, so every consumer drains every shard queue that exists,
//! whatever its own N; a running consumer also looks for a shard queue declared after it subscribed
//! ([`Topology::has_undrained_shard`]). Nothing deletes them: a quorum queue cannot be deleted only if empty, and a
//! publisher still at the old N may bind one again and route to it at any moment; a drained queue
//! costs a consumer a channel.
//!
//! The alternate exchange means a published message is never unroutable, even if someone deletes the
//! main queue: it lands in `<queue>.unrouted`, which the consumer drains into the table like the main
//! queue, so a confirmed message always reaches a queue that is stored. That matters because lapin
//! cannot tell reliably which publish a returned message belongs to when the broker acknowledges
//! several at once, so a publisher must never depend on returns.

use lapin::{
    options::{ExchangeBindOptions, ExchangeDeclareOptions, QueueBindOptions, QueueDeclareOptions},
    protocol::{AMQPErrorKind, AMQPSoftError},
    types::{AMQPValue, FieldTable, LongString, ShortString},
    Channel, Connection, ExchangeKind,
};
use serde::{Deserialize, Serialize};

use crate::message::MAX_PRIORITY;

/// The kind of RabbitMQ queue that holds messages.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum QueueType {
    /// Replicated (Raft), fast for persistent messages, with a delivery limit that stops a poison
    /// message from looping. RabbitMQ before 4.0 ignores message priority on these.
    #[default]
    Quorum,
    /// Single-node queue declared with `x-max-priority`, so a backlog is delivered highest priority first.
    Classic,
}

impl QueueType {
    fn as_str(self) -> &'static str {
        match self {
            Self::Quorum => "quorum",
            Self::Classic => "classic",
        }
    }
}

/// Names and arguments of the exchanges and queues derived from one `QUEUE_NAME`.
#[derive(Debug, Clone)]
pub struct Topology {
    queue: String,
    /// The derived names, built once: the publisher names its exchange on every request.
    exchange: String,
    dead_letter_exchange: String,
    dead_letter_queue: String,
    unrouted_queue: String,
    /// The consistent-hash exchange in front of the shards (used only with more than one).
    shard_exchange: String,
    /// The queues messages are routed to: `<queue>` alone, or `<queue>.0` … `<queue>.<N-1>`.
    shards: Vec<String>,
    queue_type: QueueType,
    delivery_limit: u32,
    /// Whether [`Topology::ensure`] only checks that everything exists (`DECLARE_TOPOLOGY=false`), for a
    /// service whose broker user may not configure anything.
    verify_only: bool,
}

/// A RabbitMQ policy the setup step applies, as `rabbitmqctl set_policy` and the topology operator's
/// `Policy` take it. A policy, not a queue argument, because it can be set and changed on queues that
/// already exist, whose declarations would fail if their arguments changed.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Policy {
    pub name: String,
    /// A regular expression over queue names.
    pub pattern: String,
    /// What applies to the queues it matches.
    pub definition: serde_json::Value,
}

/// What one broker user may do, as RabbitMQ's three permission regular expressions over resource
/// names. `^$` matches nothing.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Permissions {
    /// Declaring and deleting exchanges and queues, and binding them.
    pub configure: String,
    /// Publishing to exchanges.
    pub write: String,
    /// Consuming from and getting messages off queues.
    pub read: String,
}

/// The RabbitMQ plugin whose exchange type spreads messages over the shards.
pub const CONSISTENT_HASH_PLUGIN: &str = "rabbitmq_consistent_hash_exchange";

/// The most shard queues there can be (`QUEUE_SHARDS` at most 256): `<queue>.0` … `<queue>.255`.
pub const MAX_SHARDS: u16 = 256;

impl Topology {
    /// The topology of one `QUEUE_NAME` with `shards` queues (1 for the single queue `<queue>`; 0 is
    /// taken as 1).
    pub fn new(
        queue: impl Into<String>,
        queue_type: QueueType,
        delivery_limit: u32,
        shards: u16,
    ) -> Self {
        let queue = queue.into();
        let shards = match shards {
            0 | 1 => vec![queue.clone()],
            n => (0..n).map(|i| format!("{queue}.{i}")).collect(),
        };
        Self {
            exchange: format!("{queue}.exchange"),
            dead_letter_exchange: format!("{queue}.dlx"),
            dead_letter_queue: format!("{queue}.dead"),
            unrouted_queue: format!("{queue}.unrouted"),
            shard_exchange: format!("{queue}.shards"),
            shards,
            queue,
            queue_type,
            delivery_limit,
            verify_only: false,
        }
    }

    /// The same topology, which [`Topology::ensure`] only verifies: for a broker user that may not
    /// configure, while a setup step with an administrator's credentials declares it
    /// (`consumer declare-topology`).
    pub fn verified_only(mut self) -> Self {
        self.verify_only = true;
        self
    }

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

    /// The limit of `<queue>.dead`: at most `max_length` messages, after which the broker refuses more
    /// (`reject-publish`) rather than dropping the oldest. A refused dead letter is not lost: a quorum
    /// queue dead-letters at least once, so it keeps the message until `.dead` has room, and the
    /// consumer counts every copy it was refused (`consumer_dead_letters_refused_total`).
    pub fn dead_letter_policy(&self, max_length: u64) -> Policy {
        Policy {
            name: format!("{}-limit", self.dead_letter_queue()),
            pattern: format!("^{}$", regex_escape(self.dead_letter_queue())),
            definition: serde_json::json!({
                "max-length": max_length,
                "overflow": "reject-publish",
            }),
        }
    }

    /// Whether [`Topology::dead_letter_policy`] may be applied without losing dead letters: only with
    /// quorum queues. A classic queue dead-letters at most once, so a dead letter `.dead` refuses at
    /// its limit is dropped.
    pub fn dead_letter_limit_keeps_refused(&self) -> bool {
        self.queue_type == QueueType::Quorum
    }

    /// What the publisher's broker user needs: to publish to `<queue>.exchange`, and nothing else.
    pub fn publisher_permissions(&self) -> Permissions {
        Permissions {
            configure: "^$".into(),
            write: format!("^{}$", regex_escape(self.exchange())),
            read: "^$".into(),
        }
    }

    /// What the consumer's broker user needs: to read its queues (the drained ones and `<queue>.dead`),
    /// to publish dead letters to `<queue>.dlx` and replayed ones to `<queue>.exchange`, and nothing
    /// else. Shards are matched by number, so a change of `QUEUE_SHARDS` needs no new permission.
    pub fn consumer_permissions(&self) -> Permissions {
        let queue = regex_escape(self.queue());
        Permissions {
            configure: "^$".into(),
            write: format!("^{queue}\\.(dlx|exchange)$"),
            read: format!("^{queue}(\\.[0-9]+|\\.unrouted|\\.dead)?$"),
        }
    }

    /// `QUEUE_NAME`: the one queue when there are no shards; always the routing key messages are
    /// published with.
    pub fn queue(&self) -> &str {
        &self.queue
    }

    /// Whether messages are spread over several queues.
    pub fn is_sharded(&self) -> bool {
        self.shards.len() > 1
    }

    /// The queues new messages are routed to, each of which must exist for routing to be as configured.
    pub fn shards(&self) -> &[String] {
        &self.shards
    }

    /// Whether `queue` is one of the shards, or a shard queue `<queue>.k` a larger `QUEUE_SHARDS` left:
    /// a queue that takes a share of new messages, or did.
    pub fn is_shard_queue(&self, queue: &str) -> bool {
        self.shards.iter().any(|shard| shard == queue)
            || queue
                .strip_prefix(self.queue.as_str())
                .and_then(|rest| rest.strip_prefix('.'))
                .is_some_and(|index| !index.is_empty() && index.bytes().all(|b| b.is_ascii_digit()))
    }

    /// The exchange the publisher publishes to.
    pub fn exchange(&self) -> &str {
        &self.exchange
    }

    /// Where rejected and over-delivered messages are routed.
    pub fn dead_letter_exchange(&self) -> &str {
        &self.dead_letter_exchange
    }

    /// Where messages that can never be stored end up, for a person to inspect.
    pub fn dead_letter_queue(&self) -> &str {
        &self.dead_letter_queue
    }

    /// Where messages the main queue could not take (it was deleted) wait for the consumer.
    pub fn unrouted_queue(&self) -> &str {
        &self.unrouted_queue
    }

    /// Every queue the consumer stores from: the shards first, then, with shards, `<queue>` (what it
    /// held before sharding), then the fallback queue.
    pub fn drained_queues(&self) -> Vec<&str> {
        let mut queues: Vec<&str> = self.shards.iter().map(String::as_str).collect();
        if self.is_sharded() {
            queues.push(self.queue());
        }
        queues.push(self.unrouted_queue());
        queues
    }

    /// Deliveries of one message before the broker dead-letters it, where the queue type counts them.
    pub fn delivery_limit(&self) -> Option<u32> {
        (self.queue_type == QueueType::Quorum).then_some(self.delivery_limit)
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

    fn queue_arguments(&self) -> FieldTable {
        let mut args = FieldTable::default();
        insert_str(&mut args, "x-queue-type", self.queue_type.as_str());
        insert_str(
            &mut args,
            "x-dead-letter-exchange",
            self.dead_letter_exchange(),
        );
        insert_str(
            &mut args,
            "x-dead-letter-routing-key",
            self.dead_letter_queue(),
        );
        match self.queue_type {
            QueueType::Quorum => {
                args.insert(
                    ShortString::from("x-delivery-limit"),
                    AMQPValue::LongUInt(self.delivery_limit),
                );
                // At-least-once dead-lettering keeps a rejected message until the dead-letter queue
                // has confirmed it; RabbitMQ requires reject-publish overflow for it.
                insert_str(&mut args, "x-dead-letter-strategy", "at-least-once");
                insert_str(&mut args, "x-overflow", "reject-publish");
            }
            QueueType::Classic => {
                args.insert(
                    ShortString::from("x-max-priority"),
                    AMQPValue::ShortShortUInt(MAX_PRIORITY),
                );
            }
        }
        args
    }

    /// A shard's arguments: a queue's, and its leader placed on the node leading the fewest queues, so
    /// that the shards spread over a cluster's nodes rather than all landing on the node that declared
    /// them. (Only shards get it: adding an argument to an existing queue would make its declaration
    /// fail.)
    fn shard_arguments(&self) -> FieldTable {
        let mut args = self.queue_arguments();
        match self.queue_type {
            QueueType::Quorum => insert_str(&mut args, "x-queue-leader-locator", "balanced"),
            QueueType::Classic => insert_str(&mut args, "x-queue-master-locator", "min-masters"),
        }
        args
    }

    fn dead_letter_queue_arguments(&self) -> FieldTable {
        let mut args = FieldTable::default();
        insert_str(&mut args, "x-queue-type", self.queue_type.as_str());
        args
    }
}

fn durable_exchange() -> ExchangeDeclareOptions {
    ExchangeDeclareOptions {
        durable: true,
        ..ExchangeDeclareOptions::default()
    }
}

/// Whether the broker answered that the object does not exist.
pub(crate) fn is_not_found(error: &lapin::Error) -> bool {
    matches!(
        error.kind(),
        lapin::ErrorKind::ProtocolError(amqp)
            if matches!(amqp.kind(), AMQPErrorKind::Soft(AMQPSoftError::NOTFOUND))
    )
}

/// `text` with every character that a regular expression would read as an operator escaped.
fn regex_escape(text: &str) -> String {
    let mut escaped = String::with_capacity(text.len() * 2);
    for c in text.chars() {
        if r"\.+*?()|[]{}^$-".contains(c) {
            escaped.push('\\');
        }
        escaped.push(c);
    }
    escaped
}

fn insert_str(args: &mut FieldTable, key: &str, value: &str) {
    args.insert(
        ShortString::from(key),
        AMQPValue::LongString(LongString::from(value)),
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_shard_is_the_queue_itself() {
        let topology = Topology::new("messages", QueueType::Quorum, 20, 1);
        assert!(!topology.is_sharded());
        assert_eq!(topology.shards(), ["messages"]);
        assert_eq!(topology.drained_queues(), ["messages", "messages.unrouted"]);
    }

    #[test]
    fn several_shards_are_numbered_and_the_unsharded_queue_is_still_drained() {
        let topology = Topology::new("messages", QueueType::Quorum, 20, 3);
        assert!(topology.is_sharded());
        assert_eq!(
            topology.shards(),
            ["messages.0", "messages.1", "messages.2"]
        );
        assert_eq!(
            topology.drained_queues(),
            [
                "messages.0",
                "messages.1",
                "messages.2",
                "messages",
                "messages.unrouted"
            ]
        );
        assert_eq!(topology.dead_letter_queue(), "messages.dead");
    }

    #[test]
    fn each_service_may_touch_only_its_own_names() {
        let topology = Topology::new("orders.v1", QueueType::Quorum, 20, 3);
        let publisher = topology.publisher_permissions();
        assert_eq!(publisher.configure, "^$");
        assert_eq!(publisher.write, r"^orders\.v1\.exchange$");
        assert_eq!(publisher.read, "^$");
        let consumer = topology.consumer_permissions();
        assert_eq!(consumer.configure, "^$");
        assert_eq!(consumer.write, r"^orders\.v1\.(dlx|exchange)$");
        assert_eq!(consumer.read, r"^orders\.v1(\.[0-9]+|\.unrouted|\.dead)?$");
    }
}
