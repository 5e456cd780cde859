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
//! The alternate exchange means a published message is never unroutable, even if someone deletes the
//! main queue: it lands in `<queue>.unrouted`, which the consumer drains into the table like the main
//! queue, so a confirmed message always reaches a queue that is stored. That matters because lapin
//! cannot tell reliably which publish a returned message belongs to when the broker acknowledges
//! several at once, so a publisher must never depend on returns.

use lapin::{
    options::{ExchangeDeclareOptions, QueueBindOptions, QueueDeclareOptions},
    types::{AMQPValue, FieldTable, LongString, ShortString},
    Channel, ExchangeKind,
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
    queue_type: QueueType,
    delivery_limit: u32,
}

impl Topology {
    pub fn new(queue: impl Into<String>, queue_type: QueueType, delivery_limit: u32) -> Self {
        let queue = queue.into();
        Self {
            exchange: format!("{queue}.exchange"),
            dead_letter_exchange: format!("{queue}.dlx"),
            dead_letter_queue: format!("{queue}.dead"),
            unrouted_queue: format!("{queue}.unrouted"),
            queue,
            queue_type,
            delivery_limit,
        }
    }

    /// The queue the consumer drains; also the routing key messages are published with.
    pub fn queue(&self) -> &str {
        &self.queue
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

    /// Every queue the consumer stores from.
    pub fn drained_queues(&self) -> [&str; 2] {
        [self.queue(), self.unrouted_queue()]
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
        channel
            .queue_bind(
                self.queue().into(),
                self.exchange().into(),
                self.queue().into(),
                QueueBindOptions::default(),
                FieldTable::default(),
            )
            .await?;
        Ok(())
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

    fn dead_letter_queue_arguments(&self) -> FieldTable {
        let mut args = FieldTable::default();
        insert_str(&mut args, "x-queue-type", self.queue_type.as_str());
        args
    }
}

fn insert_str(args: &mut FieldTable, key: &str, value: &str) {
    args.insert(
        ShortString::from(key),
        AMQPValue::LongString(LongString::from(value)),
    );
}
