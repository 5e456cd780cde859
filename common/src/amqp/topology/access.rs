//! What the broker's operators apply for this topology: the permissions each service's user needs, and
//! the dead-letter length policy.

use serde::Serialize;

use super::{QueueType, Topology};

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

impl Topology {
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
