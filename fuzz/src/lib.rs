//! Checks shared by the fuzz targets: what must hold of every message the services accept, and of every
//! refusal they answer. Each target feeds the services' own parsing; these say what "correct" means
//! beyond "did not panic".

use actix_web::ResponseError;
use chrono::{DateTime, Utc};
use common::{message::SENDER_MAX_CHARS, message::TS_MAX_CHARS, Message, QueuedMessage};
use serde::de::{Deserialize, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde_json::Value;

/// How deeply arrays and objects nest in `json`, counted by a serde visitor rather than on the text, so
/// it checks [`common::model::Attributes::depth`] by another route. Every member counts, duplicate keys
/// included: PostgreSQL's `json` keeps them all, where a `serde_json::Value` would keep only the last.
/// `None` past serde_json's own recursion limit (128).
pub fn nesting(json: &str) -> Option<usize> {
    serde_json::from_str::<Nesting>(json).ok().map(|n| n.0)
}

struct Nesting(usize);

impl<'de> Deserialize<'de> for Nesting {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(NestingVisitor)
    }
}

struct NestingVisitor;

impl<'de> Visitor<'de> for NestingVisitor {
    type Value = Nesting;

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("any JSON value")
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Nesting, A::Error> {
        let mut deepest = 0;
        while let Some(Nesting(depth)) = seq.next_element()? {
            deepest = deepest.max(depth);
        }
        Ok(Nesting(1 + deepest))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Nesting, A::Error> {
        let mut deepest = 0;
        while let Some((IgnoredAny, Nesting(depth))) = map.next_entry()? {
            deepest = deepest.max(depth);
        }
        Ok(Nesting(1 + deepest))
    }

    fn visit_bool<E>(self, _: bool) -> Result<Nesting, E> {
        Ok(Nesting(0))
    }
    fn visit_i64<E>(self, _: i64) -> Result<Nesting, E> {
        Ok(Nesting(0))
    }
    fn visit_u64<E>(self, _: u64) -> Result<Nesting, E> {
        Ok(Nesting(0))
    }
    fn visit_f64<E>(self, _: f64) -> Result<Nesting, E> {
        Ok(Nesting(0))
    }
    fn visit_str<E>(self, _: &str) -> Result<Nesting, E> {
        Ok(Nesting(0))
    }
    fn visit_unit<E>(self) -> Result<Nesting, E> {
        Ok(Nesting(0))
    }
}

/// Every rule of the contract holds of `message`: it is what the database is told it may store.
pub fn assert_valid(message: &Message) {
    let sender = message.sender().as_str();
    assert!(!sender.trim().is_empty(), "blank sender {sender:?}");
    assert!(
        sender.chars().count() <= SENDER_MAX_CHARS,
        "sender too long"
    );
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
        assert_eq!(
            message.attributes().depth(),
            expected,
            "depth of {attributes}"
        );
    }
    assert!(message.priority().value() <= common::model::MAX_PRIORITY);
}

/// A message serialises and reads back as itself, both alone and inside a queue payload.
pub fn assert_round_trip(message: &Message) {
    let text = serde_json::to_vec(message).expect("a message serialises");
    let again = publisher::parse_message(&text, usize::MAX).unwrap_or_else(|e| {
        panic!(
            "{} does not parse back: {e}",
            String::from_utf8_lossy(&text)
        )
    });
    assert_eq!(&again, message);
    let queued = QueuedMessage {
        id: uuid::Uuid::from_u128(1),
        received_at: DateTime::<Utc>::UNIX_EPOCH,
        fingerprint: Some(common::model::fingerprint(message)),
        message: message.clone(),
    };
    let back = QueuedMessage::from_payload(&queued.to_payload()).expect("a payload reads back");
    assert_eq!(back, queued);
    assert_eq!(
        common::model::fingerprint(&back.message),
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

#[cfg(test)]
mod tests {
    use super::nesting;

    #[test]
    fn nesting_counts_every_member_of_duplicate_keys() {
        // The first runs' two false alarms, minimised: a `serde_json::Value` keeps only the last "".
        assert_eq!(nesting(r#"{"a":[{"":{"n":0e40},"":"it"}],"n":4}"#), Some(4));
        assert_eq!(nesting(r#"{"s":{"t":[]},"s":"0."}"#), Some(3));
        assert_eq!(nesting(r#"{"k":"[[{"}"#), Some(1));
    }
}
