//! The message as users send it, and the validated [`Message`] that is the only form the services pass on.
//!
//! Parsing happens in two steps so that every refusal names what is wrong: serde turns JSON into
//! [`MessageInput`] (refusing unknown fields and wrong JSON types), then [`Message::try_from`] applies the
//! contract's rules and reports the first field that breaks one.

use std::net::IpAddr;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// Longest sender accepted, in characters.
pub const SENDER_MAX_CHARS: usize = 256;
/// Longest client timestamp accepted, in characters.
pub const TS_MAX_CHARS: usize = 64;
/// Highest priority a message may carry; the classic queue is declared with this as `x-max-priority`.
pub const MAX_PRIORITY: u8 = 9;

/// A message exactly as a client sent it, before any rule but JSON types is checked.
///
/// Field names are the contract's, including its mix of camelCase and snake_case.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MessageInput {
    pub sender: String,
    #[serde(default)]
    pub ts: Option<String>,
    #[serde(default, rename = "messageAttributes")]
    pub message_attributes: Option<Map<String, Value>>,
    #[serde(default)]
    pub sent_from_ip: Option<String>,
    /// Any JSON number: `3` and `3.0` are the same integer to JSON Schema, and so to us.
    #[serde(default)]
    pub priority: Option<serde_json::Number>,
}

/// A rule of the contract that an input broke; `field` is the JSON name of the offending field.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {reason}")]
pub struct InvalidField {
    pub field: &'static str,
    pub reason: String,
}

impl InvalidField {
    fn new(field: &'static str, reason: impl Into<String>) -> Self {
        Self {
            field,
            reason: reason.into(),
        }
    }
}

/// Who sent the message: 1 to 256 characters, not blank.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(transparent)]
pub struct Sender(String);

impl Sender {
    /// Checks the contract's rule for `sender`.
    pub fn parse(raw: String) -> Result<Self, InvalidField> {
        let chars = raw.chars().count();
        if raw.trim().is_empty() {
            return Err(InvalidField::new("sender", "must not be empty or blank"));
        }
        if chars > SENDER_MAX_CHARS {
            return Err(InvalidField::new(
                "sender",
                format!("must be at most {SENDER_MAX_CHARS} characters, got {chars}"),
            ));
        }
        reject_nul("sender", &raw)?;
        Ok(Self(raw))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// The client's own timestamp, kept verbatim (it is not interpreted, so any format is allowed).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(transparent)]
pub struct ClientTimestamp(String);

impl ClientTimestamp {
    /// Checks the contract's rule for `ts`.
    pub fn parse(raw: String) -> Result<Self, InvalidField> {
        let chars = raw.chars().count();
        if chars > TS_MAX_CHARS {
            return Err(InvalidField::new(
                "ts",
                format!("must be at most {TS_MAX_CHARS} characters, got {chars}"),
            ));
        }
        reject_nul("ts", &raw)?;
        Ok(Self(raw))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// Delivery priority, 0 (default) to 9.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(transparent)]
pub struct Priority(u8);

impl Priority {
    /// Checks the contract's rule for `priority`: an integral number (`3` or `3.0`) from 0 to 9.
    pub fn parse(raw: &serde_json::Number) -> Result<Self, InvalidField> {
        let integral = raw.as_i64().or_else(|| {
            raw.as_f64()
                .filter(|f| f.fract() == 0.0 && (0.0..=255.0).contains(f))
                .map(|f| f as i64)
        });
        integral
            .and_then(|p| u8::try_from(p).ok())
            .filter(|p| *p <= MAX_PRIORITY)
            .map(Self)
            .ok_or_else(|| {
                InvalidField::new(
                    "priority",
                    format!("must be an integer from 0 to {MAX_PRIORITY}, got {raw}"),
                )
            })
    }

    pub fn value(self) -> u8 {
        self.0
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
    attributes: Map<String, Value>,
    sent_from_ip: Option<IpAddr>,
    priority: Priority,
}

impl Message {
    pub fn sender(&self) -> &Sender {
        &self.sender
    }

    pub fn ts(&self) -> Option<&ClientTimestamp> {
        self.ts.as_ref()
    }

    pub fn attributes(&self) -> &Map<String, Value> {
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
        let attributes = input.message_attributes.unwrap_or_default();
        if contains_nul(&attributes) {
            return Err(InvalidField::new(
                "messageAttributes",
                "must not contain the NUL character (\\u0000), which PostgreSQL cannot store",
            ));
        }
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
fn reject_nul(field: &'static str, value: &str) -> Result<(), InvalidField> {
    if value.contains('\0') {
        return Err(InvalidField::new(
            field,
            "must not contain the NUL character (\\u0000), which PostgreSQL cannot store",
        ));
    }
    Ok(())
}

fn contains_nul(map: &Map<String, Value>) -> bool {
    fn value_has_nul(value: &Value) -> bool {
        match value {
            Value::String(s) => s.contains('\0'),
            Value::Array(items) => items.iter().any(value_has_nul),
            Value::Object(map) => contains_nul(map),
            _ => false,
        }
    }
    map.iter()
        .any(|(k, v)| k.contains('\0') || value_has_nul(v))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn parse(value: Value) -> Result<Message, String> {
        let input: MessageInput = serde_json::from_value(value).map_err(|e| e.to_string())?;
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
    fn a_message_serialises_with_the_contract_field_names() {
        let message = parse(json!({ "sender": "s", "messageAttributes": { "a": 1 } })).unwrap();
        let value = serde_json::to_value(&message).unwrap();
        assert_eq!(
            value,
            json!({ "sender": "s", "ts": null, "messageAttributes": { "a": 1 }, "sent_from_ip": null, "priority": 0 })
        );
    }
}
