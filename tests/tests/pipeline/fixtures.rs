//! Messages the tests send.

use serde_json::{json, Value};

/// The tutorial's example request, verbatim, missing the comma after `messageAttributes`.
pub const SEED_MALFORMED: &str = r#"{

        "ts": "19941114",
        "sender": "haimeng",
        "messageAttributes": {
            "pubisher": "---publisher is ready rabbitmq---",
            "consumer" : "postgres IS READY!"
        }
        "sent_from_ip": "0.0.0.0",
        "priority": 1
}"#;

/// The same request with the comma, as users should send it.
pub fn seed() -> Value {
    json!({
        "ts": "19941114",
        "sender": "haimeng",
        "messageAttributes": {
            "pubisher": "---publisher is ready rabbitmq---",
            "consumer": "postgres IS READY!"
        },
        "sent_from_ip": "0.0.0.0",
        "priority": 1
    })
}

/// A small valid message from `sender`.
pub fn message_from(sender: &str) -> Value {
    json!({ "sender": sender })
}
