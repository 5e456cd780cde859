//! The fields of a [`Message`](super::Message), each a type that holds only what the contract allows.

use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

use super::message::{reject_nul, InvalidField};
use super::{MAX_PRIORITY, SENDER_MAX_CHARS, TS_MAX_CHARS};

/// Who sent the message: 1 to 256 characters, not blank.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(transparent)]
pub struct Sender(String);

impl Sender {
    /// Checks the contract's rule for `sender`.
    pub fn parse(raw: String) -> Result<Self, InvalidField> {
        let chars = raw.chars().count();
        if raw.chars().all(is_blank) {
            return Err(InvalidField::new(
                "sender",
                "must not be empty or blank (only whitespace or invisible characters)",
            ));
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

/// Whether `c` shows nothing on its own: whitespace, or a Unicode default-ignorable code point such as a
/// zero-width space, joiner, direction mark, soft hyphen, variation selector or tag character. A sender
/// made only of these would look empty wherever it is displayed.
fn is_blank(c: char) -> bool {
    c.is_whitespace()
        || matches!(
            c,
            '\u{00AD}'
                | '\u{034F}'
                | '\u{061C}'
                | '\u{115F}'
                | '\u{1160}'
                | '\u{17B4}'
                | '\u{17B5}'
                | '\u{180B}'..='\u{180F}'
                | '\u{200B}'..='\u{200F}'
                | '\u{202A}'..='\u{202E}'
                | '\u{2060}'..='\u{206F}'
                | '\u{2800}'
                | '\u{3164}'
                | '\u{FE00}'..='\u{FE0F}'
                | '\u{FEFF}'
                | '\u{FFA0}'
                | '\u{FFF0}'..='\u{FFF8}'
                | '\u{1BCA0}'..='\u{1BCA3}'
                | '\u{1D173}'..='\u{1D17A}'
                | '\u{E0000}'..='\u{E0FFF}'
        )
}

/// `messageAttributes`: a JSON object kept as the text the client sent. Its numbers are never converted
/// (so `18446744073709551616`, `1e400` and `-0` come back as sent), and duplicate keys are kept as sent.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(try_from = "Box<RawValue>")]
pub struct Attributes(Box<RawValue>);

impl Attributes {
    /// Checks the contract's rule for `messageAttributes`: a JSON object (the text is already valid JSON)
    /// whose strings and keys hold no NUL character.
    pub fn parse(raw: Box<RawValue>) -> Result<Self, InvalidField> {
        if !raw.get().starts_with('{') {
            return Err(InvalidField::new(
                "messageAttributes",
                "must be a JSON object",
            ));
        }
        if escapes_nul(raw.get()) {
            return Err(InvalidField::new(
                "messageAttributes",
                "must not contain the NUL character (\\u0000), which PostgreSQL cannot store",
            ));
        }
        Ok(Self(raw))
    }

    /// The attributes' JSON text, exactly as sent.
    pub fn as_json(&self) -> &str {
        self.0.get()
    }

    /// How deeply arrays and objects nest in the attributes, the object itself being 1. The text is valid
    /// JSON, so outside strings every `[` and `{` opens a level and every `]` and `}` closes one.
    pub fn depth(&self) -> usize {
        let (mut depth, mut deepest) = (0usize, 0usize);
        let (mut in_string, mut escaped) = (false, false);
        for byte in self.0.get().bytes() {
            if in_string {
                match byte {
                    _ if escaped => escaped = false,
                    b'\\' => escaped = true,
                    b'"' => in_string = false,
                    _ => {}
                }
                continue;
            }
            match byte {
                b'"' => in_string = true,
                b'[' | b'{' => {
                    depth += 1;
                    deepest = deepest.max(depth);
                }
                b']' | b'}' => depth = depth.saturating_sub(1),
                _ => {}
            }
        }
        deepest
    }

    /// Whether the object has no members.
    pub fn is_empty(&self) -> bool {
        self.0.get()[1..].trim_start().starts_with('}')
    }
}

impl Default for Attributes {
    fn default() -> Self {
        Self(RawValue::from_string("{}".to_owned()).expect("{} is JSON"))
    }
}

impl PartialEq for Attributes {
    fn eq(&self, other: &Self) -> bool {
        self.as_json() == other.as_json()
    }
}

impl TryFrom<Box<RawValue>> for Attributes {
    type Error = InvalidField;

    fn try_from(raw: Box<RawValue>) -> Result<Self, Self::Error> {
        Self::parse(raw)
    }
}

/// Whether valid JSON text holds the escape `\u0000` in any string. Outside strings valid JSON has no
/// backslash, and inside one every backslash starts an escape, so skipping each escape whole is exact.
fn escapes_nul(json: &str) -> bool {
    let bytes = json.as_bytes();
    let mut i = 0;
    while let Some(offset) = bytes[i..].iter().position(|&b| b == b'\\') {
        let escape = i + offset;
        if bytes.get(escape + 1) == Some(&b'u')
            && bytes.get(escape + 2..escape + 6) == Some(b"0000")
        {
            return true;
        }
        i = escape + 2;
        if i >= bytes.len() {
            return false;
        }
    }
    false
}
