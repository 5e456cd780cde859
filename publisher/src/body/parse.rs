//! Turning a body's bytes into validated messages: one, or a batch parsed element by element within its
//! limits, every refusal naming what is wrong and where.

use common::{Message, MessageInput};
use serde::de::{self, DeserializeOwned, SeqAccess, Visitor};
use serde_json::{error::Category, value::RawValue};

use super::BodyError;

/// Parses one message, refusing one whose arrays and objects nest deeper than `max_depth` (the message
/// itself being 1): PostgreSQL's `json` parser could not store it, so it must not be accepted.
pub fn parse_message(body: &[u8], max_depth: usize) -> Result<Message, BodyError> {
    let input: MessageInput = deserialize(body)?;
    Message::validate(input, max_depth).map_err(BodyError::InvalidMessage)
}

/// Parses a batch of 1 to `max_len` messages, each at most `max_message_bytes` of JSON, into the values
/// `build` makes of them. Both limits are enforced while parsing: an over-long batch or an oversized
/// element is refused as soon as it is reached, before the rest is looked at, and nothing but the
/// messages themselves is built. One invalid element refuses the whole batch, naming its index.
pub fn parse_batch<T>(
    body: &[u8],
    max_len: usize,
    max_message_bytes: usize,
    max_depth: usize,
    mut build: impl FnMut(usize, Message) -> T,
) -> Result<Vec<T>, BodyError> {
    let mut failure = None;
    let visitor = BatchVisitor {
        max_len,
        max_message_bytes,
        max_depth,
        failure: &mut failure,
        build: &mut build,
        _items: std::marker::PhantomData,
    };
    let mut deserializer = serde_json::Deserializer::from_slice(body);
    let parsed = serde::Deserializer::deserialize_seq(&mut deserializer, visitor)
        .and_then(|items| deserializer.end().map(|()| items));
    match (parsed, failure) {
        (_, Some(failure)) => Err(failure),
        (Ok(items), None) if items.is_empty() => Err(BodyError::InvalidMessage(
            "a batch must contain at least one message".into(),
        )),
        (Ok(items), None) => Ok(items),
        (Err(error), None) => Err(match error.classify() {
            Category::Data => BodyError::InvalidMessage(error.to_string()),
            _ => BodyError::MalformedJson(error.to_string()),
        }),
    }
}

struct BatchVisitor<'f, 'b, T, F> {
    max_len: usize,
    max_message_bytes: usize,
    max_depth: usize,
    /// The refusal, kept whole: serde's error type can only carry a string.
    failure: &'f mut Option<BodyError>,
    build: &'b mut F,
    _items: std::marker::PhantomData<fn() -> T>,
}

impl<'de, T, F: FnMut(usize, Message) -> T> Visitor<'de> for BatchVisitor<'_, '_, T, F> {
    type Value = Vec<T>;

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("a JSON array of messages")
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        let mut items = Vec::new();
        // Each element is first taken as its raw text, which costs nothing but a slice of the body.
        while let Some(raw) = seq.next_element::<&'de RawValue>()? {
            let index = items.len();
            let refusal = if index == self.max_len {
                Some(BodyError::InvalidMessage(format!(
                    "a batch may contain at most {} messages",
                    self.max_len
                )))
            } else if raw.get().len() > self.max_message_bytes {
                Some(BodyError::TooLarge(format!(
                    "message at index {index} is {} bytes, over the limit of {} bytes a message",
                    raw.get().len(),
                    self.max_message_bytes
                )))
            } else {
                match parse_message(raw.get().as_bytes(), self.max_depth) {
                    Ok(message) => {
                        items.push((self.build)(index, message));
                        None
                    }
                    Err(error) => Some(BodyError::InvalidMessage(format!(
                        "message at index {index}: {error}"
                    ))),
                }
            };
            if let Some(refusal) = refusal {
                *self.failure = Some(refusal);
                return Err(de::Error::custom("refused"));
            }
        }
        Ok(items)
    }
}

/// Deserialises JSON, telling syntax errors (with line and column) from type errors (with the path to the
/// offending field, such as `[3].priority`).
fn deserialize<T: DeserializeOwned>(body: &[u8]) -> Result<T, BodyError> {
    let mut deserializer = serde_json::Deserializer::from_slice(body);
    let value = serde_path_to_error::deserialize(&mut deserializer).map_err(|error| {
        let path = error.path().to_string();
        let inner = error.into_inner();
        match inner.classify() {
            Category::Syntax | Category::Eof | Category::Io => {
                BodyError::MalformedJson(inner.to_string())
            }
            Category::Data => BodyError::InvalidMessage(describe_data_error(&path, &inner)),
        }
    })?;
    deserializer
        .end()
        .map_err(|e| BodyError::MalformedJson(e.to_string()))?;
    Ok(value)
}

fn describe_data_error(path: &str, error: &serde_json::Error) -> String {
    let path = path.trim_start_matches('.');
    let location = if let Some(rest) = path.strip_prefix('[') {
        // "[3].priority" -> "message at index 3: priority"
        let (index, field) = rest.split_once(']').unwrap_or((rest, ""));
        let field = field.trim_start_matches('.');
        if field.is_empty() {
            format!("message at index {index}")
        } else {
            format!("message at index {index}: {field}")
        }
    } else {
        path.to_owned()
    };
    if location.is_empty() || location == "?" {
        error.to_string()
    } else {
        format!("{location}: {error}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The tutorial's example, verbatim, with its missing comma after `messageAttributes`.
    const SEED_MALFORMED: &str = "{\n\n        \"ts\": \"19941114\",\n        \"sender\": \"haimeng\",\n        \"messageAttributes\": {\n            \"pubisher\": \"---publisher is ready rabbitmq---\",\n            \"consumer\" : \"postgres IS READY!\"\n        }\n        \"sent_from_ip\": \"0.0.0.0\",\n        \"priority\": 1\n}";

    fn detail(result: Result<impl std::fmt::Debug, BodyError>) -> String {
        result.unwrap_err().to_string()
    }

    #[test]
    fn the_tutorials_malformed_example_is_refused_pointing_at_line_9() {
        let detail = detail(parse_message(SEED_MALFORMED.as_bytes(), 256));
        assert!(detail.starts_with("malformed JSON"), "{detail}");
        assert!(detail.contains("line 9 column"), "{detail}");
    }

    #[test]
    fn the_tutorials_example_with_the_comma_is_accepted() {
        let fixed =
            SEED_MALFORMED.replace("        }\n        \"sent", "        },\n        \"sent");
        let message = parse_message(fixed.as_bytes(), 256).unwrap();
        assert_eq!(message.sender().as_str(), "haimeng");
        assert_eq!(message.priority().value(), 1);
    }

    #[test]
    fn a_wrong_json_type_names_the_field() {
        let detail = detail(parse_message(br#"{"sender":"s","priority":"high"}"#, 256));
        assert!(detail.starts_with("priority: invalid type"), "{detail}");
    }

    #[test]
    fn a_bad_element_of_a_batch_names_its_index() {
        let detail = detail(parse_batch(
            br#"[{"sender":"a"},{"sender":"b"},{"sender":""}]"#,
            10,
            1000,
            256,
            |_, m| m,
        ));
        assert!(
            detail.starts_with("message at index 2: sender:"),
            "{detail}"
        );
        let detail = detail_of_type_error();
        assert!(
            detail.starts_with("message at index 1: priority:"),
            "{detail}"
        );
    }

    fn detail_of_type_error() -> String {
        detail(parse_batch(
            br#"[{"sender":"a"},{"sender":"b","priority":1.5}]"#,
            10,
            1000,
            256,
            |_, m| m,
        ))
    }

    #[test]
    fn an_empty_or_oversized_batch_is_refused() {
        assert!(matches!(
            parse_batch(b"[]", 10, 1000, 256, |_, m| m),
            Err(BodyError::InvalidMessage(_))
        ));
        assert!(matches!(
            parse_batch(
                br#"[{"sender":"a"},{"sender":"b"}]"#,
                1,
                1000,
                256,
                |_, m| m
            ),
            Err(BodyError::InvalidMessage(_))
        ));
    }

    #[test]
    fn an_element_over_the_message_limit_is_too_large_naming_its_index() {
        let big = format!(r#"[{{"sender":"a"}},{{"sender":"{}"}}]"#, "x".repeat(2000));
        let error = parse_batch(big.as_bytes(), 10, 1000, 256, |_, m| m).unwrap_err();
        assert!(matches!(error, BodyError::TooLarge(_)), "{error}");
        assert!(
            error.to_string().starts_with("message at index 1 is"),
            "{error}"
        );
    }

    #[test]
    fn an_over_long_batch_is_refused_at_the_first_element_past_the_limit() {
        // The body is cut off after the element past the limit: parsing must stop at that element.
        let error = parse_batch(
            br#"[{"sender":"a"},{"sender":"b"},{"sender":"c"}"#,
            2,
            1000,
            256,
            |_, m| m,
        )
        .unwrap_err();
        assert!(error.to_string().contains("at most 2 messages"), "{error}");
    }

    #[test]
    fn an_array_is_not_a_message_and_an_object_is_not_a_batch() {
        let error =
            parse_message(br#"["positional","ts-x",{"k":1},"10.0.0.9",7]"#, 256).unwrap_err();
        assert!(matches!(error, BodyError::InvalidMessage(_)), "{error}");
        let error = parse_batch(br#"{"sender":"a"}"#, 2, 1000, 256, |_, m| m).unwrap_err();
        assert!(
            error.to_string().contains("a JSON array of messages"),
            "{error}"
        );
    }

    #[test]
    fn a_message_at_the_depth_limit_is_accepted_and_one_past_it_refused_naming_the_depth() {
        // The message is level 1, messageAttributes level 2, each array one more.
        let nested = |levels: usize| {
            format!(
                r#"{{"sender":"s","messageAttributes":{{"x":{}{}}}}}"#,
                "[".repeat(levels),
                "]".repeat(levels)
            )
        };
        assert!(parse_message(nested(254).as_bytes(), 256).is_ok());
        let error = parse_message(nested(255).as_bytes(), 256).unwrap_err();
        assert!(matches!(error, BodyError::InvalidMessage(_)), "{error}");
        assert!(error.to_string().contains("257 levels deep"), "{error}");
        let batch = format!("[{},{}]", nested(1), nested(20_000));
        let error = parse_batch(batch.as_bytes(), 10, 1 << 20, 256, |_, m| m).unwrap_err();
        assert!(
            error.to_string().starts_with("message at index 1"),
            "{error}"
        );
        assert!(error.to_string().contains("20002 levels deep"), "{error}");
    }

    #[test]
    fn trailing_garbage_after_the_json_is_malformed() {
        assert!(matches!(
            parse_message(br#"{"sender":"a"} x"#, 256),
            Err(BodyError::MalformedJson(_))
        ));
    }
}
