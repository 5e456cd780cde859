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

use serde::{Deserialize, Serialize};

mod access;
mod arguments;
mod declare;

pub use access::{Permissions, Policy};
pub use declare::is_not_found;

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
