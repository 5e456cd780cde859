//! What travels through RabbitMQ: a validated [`Message`] plus the id and time the publisher gave it.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use uuid::Uuid;

use super::Message;

/// What the queue envelope adds to a message: `{"id":…,"received_at":…,"message":…,"fingerprint":…}`,
/// with room to spare. (Re-serialising a message can only shorten it: the publisher drops whitespace
/// outside the attributes, which it keeps as sent.)
pub const ENVELOPE_BYTES: usize = 512;

/// A message accepted by the publisher and on its way to the database.
///
/// The id is fixed before publishing, so a redelivery or a client retry with the same
/// `Idempotency-Key` maps to the same row and is stored once.
///
/// Fields of the envelope that this version does not know are ignored, so that during a rollout a
/// consumer reads what a newer publisher sends (the release before this one refused the then-new
/// `fingerprint` and dead-lettered keyed messages). A new envelope field whose meaning matters for
/// storing must therefore reach the consumers a release before any publisher sends it (see
/// docs/upgrades.md). The message inside keeps its own strict rules: an unknown field there is refused.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct QueuedMessage {
    pub id: Uuid,
    pub received_at: DateTime<Utc>,
    pub message: Message,
    /// For a message whose id comes from an `Idempotency-Key`: the [`fingerprint`] of its content, so
    /// the consumer can tell a true retry (same content) from a key reused for another message.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fingerprint: Option<String>,
}

/// SHA-256 of a message's content as it travels (every field, the attributes as sent), in hex. Two
/// messages have the same fingerprint exactly when they would be stored as the same row.
pub fn fingerprint(message: &Message) -> String {
    let json = serde_json::to_vec(message).expect("a Message always serialises");
    hex::encode(Sha256::digest(json))
}

impl QueuedMessage {
    /// The AMQP body: compact JSON.
    pub fn to_payload(&self) -> Vec<u8> {
        serde_json::to_vec(self).expect("a QueuedMessage always serialises")
    }

    /// Reads an AMQP body back, applying every validation rule again: the queue may hold anything
    /// that somebody put on it by hand.
    pub fn from_payload(payload: &[u8]) -> Result<Self, serde_json::Error> {
        serde_json::from_slice(payload)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::MessageInput;

    #[test]
    fn a_queued_message_survives_the_round_trip_through_its_payload() {
        let input: MessageInput =
            serde_json::from_str(r#"{"sender":"s","sent_from_ip":"::1","priority":3}"#).unwrap();
        let queued = QueuedMessage {
            id: Uuid::now_v7(),
            received_at: Utc::now(),
            message: Message::try_from(input).unwrap(),
            fingerprint: None,
        };
        assert_eq!(
            QueuedMessage::from_payload(&queued.to_payload()).unwrap(),
            queued
        );
    }

    #[test]
    fn a_fingerprint_changes_with_any_field_and_only_then() {
        let message = |text: &str| {
            Message::try_from(serde_json::from_str::<MessageInput>(text).unwrap()).unwrap()
        };
        let a = fingerprint(&message(r#"{"sender":"s","messageAttributes":{"n":1}}"#));
        assert_eq!(
            a,
            fingerprint(&message(r#"{"sender":"s","messageAttributes":{"n":1}}"#))
        );
        for other in [
            r#"{"sender":"s","messageAttributes":{"n":1.0}}"#,
            r#"{"sender":"t","messageAttributes":{"n":1}}"#,
            r#"{"sender":"s","messageAttributes":{"n":1},"priority":1}"#,
            r#"{"sender":"s","messageAttributes":{"n":1},"ts":""}"#,
        ] {
            assert_ne!(a, fingerprint(&message(other)), "{other}");
        }
    }

    #[test]
    fn an_envelope_field_from_a_newer_publisher_is_ignored() {
        let id = Uuid::now_v7();
        let payload = format!(
            r#"{{"id":"{id}","received_at":"2024-01-01T00:00:00Z","message":{{"sender":"s"}},"fingerprint":"ab","trace":{{"x":1}},"schema":2}}"#
        );
        let queued = QueuedMessage::from_payload(payload.as_bytes()).unwrap();
        assert_eq!(queued.id, id);
        assert_eq!(queued.fingerprint.as_deref(), Some("ab"));
        assert_eq!(queued.message.sender().as_str(), "s");
    }

    #[test]
    fn an_unknown_field_inside_the_message_is_still_refused() {
        let payload = format!(
            r#"{{"id":"{}","received_at":"2024-01-01T00:00:00Z","message":{{"sender":"s","colour":"red"}}}}"#,
            Uuid::now_v7()
        );
        let error = QueuedMessage::from_payload(payload.as_bytes()).unwrap_err();
        assert!(error.to_string().contains("colour"), "{error}");
    }

    #[test]
    fn a_payload_breaking_a_message_rule_is_refused() {
        let payload = format!(
            r#"{{"id":"{}","received_at":"2024-01-01T00:00:00Z","message":{{"sender":"s","priority":12}}}}"#,
            Uuid::now_v7()
        );
        assert!(QueuedMessage::from_payload(payload.as_bytes()).is_err());
    }
}
