//! Turns an HTTP request body into validated messages, or into the [`PublishError`] that says exactly
//! what is wrong: the media type, the size, the JSON syntax (with line and column) or the field.

use actix_web::{http::header, web, HttpRequest};
use common::{Message, MessageInput};
use futures::StreamExt;
use serde::de::DeserializeOwned;
use serde_json::error::Category;

use crate::error::PublishError;

/// Refuses anything but `application/json` (parameters such as `charset` are allowed).
pub fn require_json(request: &HttpRequest) -> Result<(), PublishError> {
    let content_type = request
        .headers()
        .get(header::CONTENT_TYPE)
        .map(|value| value.to_str().unwrap_or("a non-ASCII value"));
    let is_json = content_type.is_some_and(|value| {
        let essence = value.split(';').next().unwrap_or("").trim();
        essence.eq_ignore_ascii_case("application/json")
    });
    if is_json {
        Ok(())
    } else {
        Err(PublishError::UnsupportedMediaType(
            content_type.unwrap_or("no Content-Type").to_owned(),
        ))
    }
}

/// Reads the whole body within `deadline` (a stalled upload must not hold a request open forever),
/// refusing it as soon as it is known to exceed `limit` bytes.
pub async fn read_limited(
    request: &HttpRequest,
    payload: web::Payload,
    limit: usize,
    deadline: std::time::Duration,
) -> Result<web::Bytes, PublishError> {
    tokio::time::timeout(deadline, read_body(request, payload, limit))
        .await
        .map_err(|_| PublishError::BodyTimeout(deadline.as_millis()))?
}

async fn read_body(
    request: &HttpRequest,
    mut payload: web::Payload,
    limit: usize,
) -> Result<web::Bytes, PublishError> {
    let too_large =
        || PublishError::TooLarge(format!("the body is over the limit of {limit} bytes"));
    let declared = request
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.parse::<usize>().ok());
    if declared.is_some_and(|length| length > limit) {
        return Err(too_large());
    }
    let mut body = web::BytesMut::with_capacity(declared.unwrap_or(1024).min(limit));
    while let Some(chunk) = payload.next().await {
        let chunk = chunk
            .map_err(|e| PublishError::MalformedJson(format!("the body could not be read: {e}")))?;
        if body.len() + chunk.len() > limit {
            return Err(too_large());
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body.freeze())
}

/// Parses one message.
pub fn parse_message(body: &[u8]) -> Result<Message, PublishError> {
    let input: MessageInput = deserialize(body)?;
    Message::try_from(input).map_err(|e| PublishError::InvalidMessage(e.to_string()))
}

/// Parses a batch of 1 to `max_len` messages. One invalid element refuses the whole batch, naming its index.
pub fn parse_batch(body: &[u8], max_len: usize) -> Result<Vec<Message>, PublishError> {
    let inputs: Vec<MessageInput> = deserialize(body)?;
    if inputs.is_empty() {
        return Err(PublishError::InvalidMessage(
            "a batch must contain at least one message".into(),
        ));
    }
    if inputs.len() > max_len {
        return Err(PublishError::InvalidMessage(format!(
            "a batch may contain at most {max_len} messages, got {}",
            inputs.len()
        )));
    }
    inputs
        .into_iter()
        .enumerate()
        .map(|(index, input)| {
            Message::try_from(input)
                .map_err(|e| PublishError::InvalidMessage(format!("message at index {index}: {e}")))
        })
        .collect()
}

/// Deserialises JSON, telling syntax errors (with line and column) from type errors (with the path to the
/// offending field, such as `[3].priority`).
fn deserialize<T: DeserializeOwned>(body: &[u8]) -> Result<T, PublishError> {
    let mut deserializer = serde_json::Deserializer::from_slice(body);
    let value = serde_path_to_error::deserialize(&mut deserializer).map_err(|error| {
        let path = error.path().to_string();
        let inner = error.into_inner();
        match inner.classify() {
            Category::Syntax | Category::Eof | Category::Io => {
                PublishError::MalformedJson(inner.to_string())
            }
            Category::Data => PublishError::InvalidMessage(describe_data_error(&path, &inner)),
        }
    })?;
    deserializer
        .end()
        .map_err(|e| PublishError::MalformedJson(e.to_string()))?;
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

    fn detail(result: Result<impl std::fmt::Debug, PublishError>) -> String {
        result.unwrap_err().to_string()
    }

    #[test]
    fn the_tutorials_malformed_example_is_refused_pointing_at_line_9() {
        let detail = detail(parse_message(SEED_MALFORMED.as_bytes()));
        assert!(detail.starts_with("malformed JSON"), "{detail}");
        assert!(detail.contains("line 9 column"), "{detail}");
    }

    #[test]
    fn the_tutorials_example_with_the_comma_is_accepted() {
        let fixed =
            SEED_MALFORMED.replace("        }\n        \"sent", "        },\n        \"sent");
        let message = parse_message(fixed.as_bytes()).unwrap();
        assert_eq!(message.sender().as_str(), "haimeng");
        assert_eq!(message.priority().value(), 1);
    }

    #[test]
    fn a_wrong_json_type_names_the_field() {
        let detail = detail(parse_message(br#"{"sender":"s","priority":"high"}"#));
        assert!(detail.starts_with("priority: invalid type"), "{detail}");
    }

    #[test]
    fn a_bad_element_of_a_batch_names_its_index() {
        let detail = detail(parse_batch(
            br#"[{"sender":"a"},{"sender":"b"},{"sender":""}]"#,
            10,
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
        ))
    }

    #[test]
    fn an_empty_or_oversized_batch_is_refused() {
        assert!(matches!(
            parse_batch(b"[]", 10),
            Err(PublishError::InvalidMessage(_))
        ));
        assert!(matches!(
            parse_batch(br#"[{"sender":"a"},{"sender":"b"}]"#, 1),
            Err(PublishError::InvalidMessage(_))
        ));
    }

    #[test]
    fn trailing_garbage_after_the_json_is_malformed() {
        assert!(matches!(
            parse_message(br#"{"sender":"a"} x"#),
            Err(PublishError::MalformedJson(_))
        ));
    }
}
