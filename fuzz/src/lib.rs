//! Checks shared by the fuzz targets: what must hold of every message the services accept, and of every
//! refusal they answer. Each target feeds the services' own parsing; these say what "correct" means
//! beyond "did not panic".

use actix_web::ResponseError;
use chrono::{DateTime, Utc};
use common::{message::SENDER_MAX_CHARS, message::TS_MAX_CHARS, Message, QueuedMessage};
use serde_json::Value;

/// How deeply arrays and objects nest in `json`, counted on the parsed tree rather than on the text, so
/// it checks [`common::message::Attributes::depth`] by another route. `None` past serde_json's own
/// recursion limit (128), where no tree can be built to compare with.
pub fn nesting(json: &str) -> Option<usize> {
    fn depth(value: &Value) -> usize {
        match value {
            Value::Array(items) => 1 + items.iter().map(depth).max().unwrap_or(0),
            Value::Object(members) => 1 + members.values().map(depth).max().unwrap_or(0),
            _ => 0,
        }
    }
    serde_json::from_str::<Value>(json).ok().map(|value| depth(&value))
}

/// Every rule of the contract holds of `message`: it is what the database is told it may store.
pub fn assert_valid(message: &Message) {
    let sender = message.sender().as_str();
    assert!(!sender.trim().is_empty(), "blank sender {sender:?}");
    assert!(sender.chars().count() <= SENDER_MAX_CHARS, "sender too long");
    assert!(!sender.contains('\0'), "NUL in sender");
    if let Some(ts) = message.ts() {
        assert!(ts.as_str().chars().count() <= TS_MAX_CHARS, "ts too long");
        assert!(!ts.as_str().contains('\0'), "NUL in ts");
    }
    let attributes = message.attributes().as_json();
    let tree: Value = serde_json::from_str(attributes)
        .or_else(|_| {
            // Deeper than serde_json's recursion limit: still one JSON value, checked without a tree.
            serde_json::from_str::<&serde_json::value::RawValue>(attributes).map(|_| Value::Null)
        })
        .expect("messageAttributes is JSON");
    assert!(
        tree.is_object() || (tree.is_null() && attributes.starts_with('{')),
        "messageAttributes is not an object: {attributes}"
    );
    if let Some(expected) = nesting(attributes) {
        assert_eq!(message.attributes().depth(), expected, "depth of {attributes}");
    }
    assert!(message.priority().value() <= common::message::MAX_PRIORITY);
}

/// A message serialises and reads back as itself, both alone and inside a queue payload.
pub fn assert_round_trip(message: &Message) {
    let text = serde_json::to_vec(message).expect("a message serialises");
    let again = publisher::body::parse_message(&text, usize::MAX)
        .unwrap_or_else(|e| panic!("{} does not parse back: {e}", String::from_utf8_lossy(&text)));
    assert_eq!(&again, message);
    let queued = QueuedMessage {
        id: uuid::Uuid::from_u128(1),
        received_at: DateTime::<Utc>::UNIX_EPOCH,
        fingerprint: Some(common::queued::fingerprint(message)),
        message: message.clone(),
    };
    let back = QueuedMessage::from_payload(&queued.to_payload()).expect("a payload reads back");
    assert_eq!(back, queued);
    assert_eq!(
        common::queued::fingerprint(&back.message),
        queued.fingerprint.unwrap(),
        "the fingerprint changed on the way through the queue"
    );
}

/// Answering a refusal must not panic: its detail carries the client's own bytes into a problem body.
pub fn assert_renders(error: &impl ResponseError) {
    let response = error.error_response();
    assert!(
        response.status().is_client_error(),
        "a refusal of input answered {}",
        response.status()
    );
}
