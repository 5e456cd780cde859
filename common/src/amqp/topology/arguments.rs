//! The arguments queues are declared with: what makes a queue quorum or classic, where its leader goes,
//! and where what it refuses is dead-lettered.

use lapin::types::{AMQPValue, FieldTable, LongString, ShortString};

use super::{QueueType, Topology};
use crate::model::MAX_PRIORITY;

impl Topology {
    pub(super) fn queue_arguments(&self) -> FieldTable {
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
    pub(super) fn shard_arguments(&self) -> FieldTable {
        let mut args = self.queue_arguments();
        match self.queue_type {
            QueueType::Quorum => insert_str(&mut args, "x-queue-leader-locator", "balanced"),
            QueueType::Classic => insert_str(&mut args, "x-queue-master-locator", "min-masters"),
        }
        args
    }

    pub(super) fn dead_letter_queue_arguments(&self) -> FieldTable {
        let mut args = FieldTable::default();
        insert_str(&mut args, "x-queue-type", self.queue_type.as_str());
        args
    }
}

pub(super) fn insert_str(args: &mut FieldTable, key: &str, value: &str) {
    args.insert(
        ShortString::from(key),
        AMQPValue::LongString(LongString::from(value)),
    );
}
