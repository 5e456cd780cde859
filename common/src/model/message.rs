//! The message as users send it, and the validated [`Message`] that is the only form the services pass on.
//!
//! Parsing happens in two steps so that every refusal names what is wrong: serde turns JSON into
//! [`MessageInput`] (refusing unknown fields, wrong JSON types and anything but an object), then
//! [`Message::try_from`] applies the contract's rules and reports the first field that breaks one.
//!
//! `messageAttributes` is never turned into a tree of values: it is kept as the JSON text the client
//! sent, checked but not rebuilt, so every number keeps its exact digits from request to row to
//! response and parsing costs no more memory than the text itself.

use std::{fmt, net::IpAddr};

pub use super::fields::{Attributes, ClientTimestamp, Priority, Sender};

use serde::{
    de::{value::MapAccessDeserializer, MapAccess, Visitor},
    Deserialize, Deserializer, Serialize,
};
use serde_json::value::RawValue;

/// Longest sender accepted, in characters.
pub const SENDER_MAX_CHARS: usize = 256;
/// Longest client timestamp accepted, in characters.
pub const TS_MAX_CHARS: usize = 64;
/// The default of `MAX_MESSAGE_BYTES`, the largest message either service takes: the publisher refuses a
/// larger one, and the consumer bounds its prefetch with it and dead-letters a larger payload unread.
pub const MAX_MESSAGE_BYTES: usize = 64 * 1024;
/// The default of `MAX_JSON_DEPTH`: how deep a message's arrays and objects may nest (the message itself
/// being 1). PostgreSQL's `json` parser cannot store much deeper.
pub const MAX_JSON_DEPTH: usize = 256;
/// Highest priority a message may carry; the classic queue is declared with this as `x-max-priority`.
pub const MAX_PRIORITY: u8 = 9;

/// A message exactly as a client sent it, before any rule but JSON types is checked.
///
/// Field names are the contract's, including its mix of camelCase and snake_case. Only a JSON object
/// is a message: serde would otherwise also take an array as the fields in order.
#[derive(Debug)]
pub struct MessageInput {
    pub sender: String,
    pub ts: Option<String>,
    /// The attributes' JSON text, exactly as sent.
    pub message_attributes: Option<Box<RawValue>>,
    pub sent_from_ip: Option<String>,
    /// Any JSON number: `3` and `3.0` are the same integer to JSON Schema, and so to us.
    pub priority: Option<serde_json::Number>,
}

/// The derived form of [`MessageInput`], reached only through a JSON object.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct MessageFields {
    sender: String,
    #[serde(default)]
    ts: Option<String>,
    #[serde(default, rename = "messageAttributes")]
    message_attributes: Option<Box<RawValue>>,
    #[serde(default)]
    sent_from_ip: Option<String>,
    #[serde(default)]
    priority: Option<serde_json::Number>,
}

impl<'de> Deserialize<'de> for MessageInput {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct ObjectOnly;
        impl<'de> Visitor<'de> for ObjectOnly {
            type Value = MessageFields;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a message as a JSON object")
            }
            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Self::Value, A::Error> {
                MessageFields::deserialize(MapAccessDeserializer::new(map))
            }
        }
        let fields = deserializer.deserialize_map(ObjectOnly)?;
        Ok(Self {
            sender: fields.sender,
            ts: fields.ts,
            message_attributes: fields.message_attributes,
            sent_from_ip: fields.sent_from_ip,
            priority: fields.priority,
        })
    }
}

/// A rule of the contract that an input broke; `field` is the JSON name of the offending field.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {reason}")]
pub struct InvalidField {
    pub field: &'static str,
    pub reason: String,
}

impl InvalidField {
    pub(super) fn new(field: &'static str, reason: impl Into<String>) -> Self {
        Self {
            field,
            reason: reason.into(),
        }
    }
}

/// A message that satisfies every rule of the contract. The only way to get one is [`Message::try_from`],
/// so whatever holds a `Message` may publish or store it without checking again.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(try_from = "MessageInput")]
pub struct Message {
    sender: Sender,
    ts: Option<ClientTimestamp>,
    #[serde(rename = "messageAttributes")]
    attributes: Attributes,
    sent_from_ip: Option<IpAddr>,
    priority: Priority,
}

impl Message {
    /// `input` as a message, or why it is not one: a field breaks the contract, or its arrays and objects
    /// nest deeper than `max_depth` (the message itself being 1), past which the database could not
    /// store it. The publisher accepts, and `mq` sends, only what passes.
    pub fn validate(input: MessageInput, max_depth: usize) -> Result<Self, String> {
        let message = Self::try_from(input).map_err(|error| error.to_string())?;
        let depth = message.attributes().depth() + 1;
        if depth > max_depth {
            return Err(format!(
                "messageAttributes: the message nests {depth} levels deep, over the limit of {max_depth} \
                 (MAX_JSON_DEPTH), past which the database cannot store it"
            ));
        }
        Ok(message)
    }

    pub fn sender(&self) -> &Sender {
        &self.sender
    }

    pub fn ts(&self) -> Option<&ClientTimestamp> {
        self.ts.as_ref()
    }

    pub fn attributes(&self) -> &Attributes {
        &self.attributes
    }

    pub fn sent_from_ip(&self) -> Option<IpAddr> {
        self.sent_from_ip
    }

    pub fn priority(&self) -> Priority {
        self.priority
    }
}

impl TryFrom<MessageInput> for Message {
    type Error = InvalidField;

    fn try_from(input: MessageInput) -> Result<Self, Self::Error> {
        let sender = Sender::parse(input.sender)?;
        let ts = input.ts.map(ClientTimestamp::parse).transpose()?;
        let attributes = input
            .message_attributes
            .map(Attributes::parse)
            .transpose()?
            .unwrap_or_default();
        let sent_from_ip = input
            .sent_from_ip
            .map(|raw| {
                raw.parse::<IpAddr>().map_err(|_| {
                    InvalidField::new(
                        "sent_from_ip",
                        format!("must be an IPv4 or IPv6 address, got {raw:?}"),
                    )
                })
            })
            .transpose()?;
        let priority = input
            .priority
            .as_ref()
            .map(Priority::parse)
            .transpose()?
            .unwrap_or_default();
        Ok(Self {
            sender,
            ts,
            attributes,
            sent_from_ip,
            priority,
        })
    }
}

/// PostgreSQL's `text` and `jsonb` cannot hold NUL, so a message carrying one could never be stored:
/// refusing it up front turns a dead-lettered message into a clear 400.
pub(super) fn reject_nul(field: &'static str, value: &str) -> Result<(), InvalidField> {
    if value.contains('\0') {
        return Err(InvalidField::new(
            field,
            "must not contain the NUL character (\\u0000), which PostgreSQL cannot store",
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{json, Value};

    fn parse(value: Value) -> Result<Message, String> {
        let input: MessageInput =
            serde_json::from_str(&value.to_string()).map_err(|e| e.to_string())?;
        Message::try_from(input).map_err(|e| e.to_string())
    }

    fn with_sender(sender: String) -> Result<Message, String> {
        parse(json!({ "sender": sender }))
    }

    #[test]
    fn a_sender_of_1_and_256_characters_is_accepted() {
        assert!(with_sender("a".into()).is_ok());
        assert!(with_sender("é".repeat(256)).is_ok());
    }

    #[test]
    fn an_empty_blank_or_257_character_sender_is_refused_naming_sender() {
        for sender in [String::new(), "   ".into(), "x".repeat(257)] {
            let err = with_sender(sender).unwrap_err();
            assert!(err.starts_with("sender:"), "{err}");
        }
    }

    #[test]
    fn a_missing_sender_is_refused_naming_sender() {
        let err = parse(json!({ "ts": "1" })).unwrap_err();
        assert!(err.contains("missing field `sender`"), "{err}");
    }

    #[test]
    fn priority_0_and_9_are_accepted_and_minus_1_and_10_are_refused() {
        for ok in [0, 9] {
            let message = parse(json!({ "sender": "s", "priority": ok })).unwrap();
            assert_eq!(i64::from(message.priority().value()), ok);
        }
        for bad in [
            json!(-1),
            json!(10),
            json!(1.5),
            json!(9.000001),
            json!(1e300),
        ] {
            let err = parse(json!({ "sender": "s", "priority": bad })).unwrap_err();
            assert!(err.starts_with("priority:"), "{err}");
        }
    }

    #[test]
    fn an_integral_float_priority_is_the_same_integer() {
        let message = parse(json!({ "sender": "s", "priority": 8.0 })).unwrap();
        assert_eq!(message.priority().value(), 8);
    }

    #[test]
    fn depth_counts_nesting_outside_strings_only() {
        let depth = |attributes: &str| {
            parse(json!({"sender": "s", "messageAttributes": serde_json::from_str::<Value>(attributes).unwrap()}))
                .unwrap()
                .attributes()
                .depth()
        };
        assert_eq!(depth("{}"), 1);
        assert_eq!(depth(r#"{"a":[1,{"b":[]}],"c":{}}"#), 4);
        assert_eq!(depth(r#"{"a":"[[[{{{\\\"[[["}"#), 1);
        let deep = format!("{{\"x\":{}{}}}", "[".repeat(100), "]".repeat(100));
        assert_eq!(depth(&deep), 101);
    }

    #[test]
    fn priority_defaults_to_0_and_attributes_to_an_empty_object() {
        let message = parse(json!({ "sender": "s" })).unwrap();
        assert_eq!(message.priority(), Priority::default());
        assert!(message.attributes().is_empty());
        assert_eq!(message.sent_from_ip(), None);
    }

    #[test]
    fn ipv4_and_ipv6_addresses_are_accepted_and_junk_is_refused() {
        for ok in ["0.0.0.0", "192.168.1.20", "::1", "2001:db8::8a2e:370:7334"] {
            let message = parse(json!({ "sender": "s", "sent_from_ip": ok })).unwrap();
            assert_eq!(message.sent_from_ip(), Some(ok.parse().unwrap()));
        }
        for bad in ["", "256.0.0.1", "1.2.3", "localhost", "::g", "10.0.0.0/8"] {
            let err = parse(json!({ "sender": "s", "sent_from_ip": bad })).unwrap_err();
            assert!(err.starts_with("sent_from_ip:"), "{bad}: {err}");
        }
    }

    #[test]
    fn a_ts_of_64_characters_is_accepted_and_65_is_refused() {
        assert!(parse(json!({ "sender": "s", "ts": "1".repeat(64) })).is_ok());
        let err = parse(json!({ "sender": "s", "ts": "1".repeat(65) })).unwrap_err();
        assert!(err.starts_with("ts:"), "{err}");
    }

    #[test]
    fn an_unknown_field_is_refused_naming_it() {
        let err = parse(json!({ "sender": "s", "colour": "red" })).unwrap_err();
        assert!(err.contains("unknown field `colour`"), "{err}");
    }

    #[test]
    fn a_nul_character_anywhere_is_refused_naming_the_field() {
        let err = parse(json!({ "sender": "a\u{0}b" })).unwrap_err();
        assert!(err.starts_with("sender:"), "{err}");
        let err =
            parse(json!({ "sender": "s", "messageAttributes": { "k": ["x\u{0}"] } })).unwrap_err();
        assert!(err.starts_with("messageAttributes:"), "{err}");
    }

    #[test]
    fn numbers_in_attributes_keep_their_exact_text() {
        let text = r#"{"sender":"s","messageAttributes":{"big":18446744073709551616,"dec":12345678901234567.89,"neg":-0,"exp":1E2,"tiny":1e-400,"huge":1e400,"k":1,"k":2}}"#;
        let input: MessageInput = serde_json::from_str(text).unwrap();
        let message = Message::try_from(input).unwrap();
        assert_eq!(
            message.attributes().as_json(),
            r#"{"big":18446744073709551616,"dec":12345678901234567.89,"neg":-0,"exp":1E2,"tiny":1e-400,"huge":1e400,"k":1,"k":2}"#
        );
    }

    #[test]
    fn an_array_is_not_a_message() {
        let err =
            serde_json::from_str::<MessageInput>(r#"["positional","ts-x",{"k":1},"10.0.0.9",7]"#)
                .unwrap_err()
                .to_string();
        assert!(err.contains("expected a message as a JSON object"), "{err}");
    }

    #[test]
    fn a_sender_of_invisible_characters_only_is_blank() {
        for sender in [
            "\u{200B}",
            "\u{FEFF}\u{200D} ",
            "\u{2060}\t\u{00AD}",
            "\u{E0041}",
        ] {
            let err = with_sender(sender.into()).unwrap_err();
            assert!(err.starts_with("sender:"), "{sender:?}: {err}");
        }
        assert!(with_sender("a\u{200B}".into()).is_ok());
    }

    #[test]
    fn attributes_must_be_an_object_and_an_escaped_backslash_is_not_a_nul() {
        let err = parse(json!({ "sender": "s", "messageAttributes": [1] })).unwrap_err();
        assert!(err.starts_with("messageAttributes:"), "{err}");
        let message =
            parse(json!({ "sender": "s", "messageAttributes": { "k": "\\u0000" } })).unwrap();
        assert_eq!(message.attributes().as_json(), r#"{"k":"\\u0000"}"#);
        assert!(parse(json!({ "sender": "s", "messageAttributes": { "\u{0}": 1 } })).is_err());
    }

    #[test]
    fn a_message_serialises_with_the_contract_field_names() {
        let message = parse(json!({ "sender": "s", "messageAttributes": { "a": 1 } })).unwrap();
        let value = serde_json::to_value(&message).unwrap();
        assert_eq!(
            value,
            json!({ "sender": "s", "ts": null, "messageAttributes": { "a": 1 }, "sent_from_ip": null, "priority": 0 })
        );
    }
}
