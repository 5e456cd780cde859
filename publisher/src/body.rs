//! Turns an HTTP request body into validated messages, or into the [`BodyError`] that says exactly
//! what is wrong: the media type, the size, the JSON syntax (with line and column) or the field.

use std::sync::Arc;

use actix_web::{http::header, web, HttpRequest};
use common::{Message, MessageInput};
use futures::StreamExt;
use serde::de::{self, DeserializeOwned, SeqAccess, Visitor};
use serde_json::{error::Category, value::RawValue};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// Why a request body is not a message (or a batch) the publisher takes. Knows nothing of HTTP:
/// [`crate::error`] gives each its status.
#[derive(Debug, thiserror::Error)]
pub enum BodyError {
    /// The body is not declared as JSON.
    #[error("Content-Type must be application/json, got {0}")]
    UnsupportedMediaType(String),
    /// The body is compressed (any `Content-Encoding` but `identity`).
    #[error("Content-Encoding {0} is not accepted; send the body uncompressed")]
    UnsupportedEncoding(String),
    /// The publisher already holds its limit of request bytes in flight.
    #[error("the publisher is at its limit of {0} bytes of requests in flight; retry shortly")]
    Busy(usize),
    /// The body is over the limit.
    #[error("{0}")]
    TooLarge(String),
    /// The client did not send its whole body in time.
    #[error("the request body did not arrive within {0} ms")]
    BodyTimeout(u128),
    /// The body is not JSON; the detail gives line and column.
    #[error("malformed JSON: {0}")]
    MalformedJson(String),
    /// The JSON does not describe a valid message; the detail names the field (and index in a batch).
    #[error("{0}")]
    InvalidMessage(String),
}

/// Refuses anything but `application/json` (parameters such as `charset` are allowed).
pub(crate) fn require_json(request: &HttpRequest) -> Result<(), BodyError> {
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
        Err(BodyError::UnsupportedMediaType(
            content_type.unwrap_or("no Content-Type").to_owned(),
        ))
    }
}

/// Refuses a compressed body: decompressing it would let a small request cost unbounded memory, and
/// the size limits are meant for what is stored.
pub(crate) fn require_identity_encoding(request: &HttpRequest) -> Result<(), BodyError> {
    match request.headers().get(header::CONTENT_ENCODING) {
        None => Ok(()),
        Some(value) if value.as_bytes().eq_ignore_ascii_case(b"identity") => Ok(()),
        Some(value) => Err(BodyError::UnsupportedEncoding(
            value.to_str().unwrap_or("a non-ASCII value").to_owned(),
        )),
    }
}

/// Reads the whole body within `deadline` (a stalled upload must not hold a request open forever),
/// refusing it as soon as it is known to exceed `limit` bytes. Every byte is reserved from `budget`, the
/// publisher's cap on request bytes in flight, and stays reserved while the returned permit lives.
pub(crate) async fn read_limited(
    request: &HttpRequest,
    payload: web::Payload,
    limit: usize,
    deadline: std::time::Duration,
    budget: &InflightBytes,
) -> Result<(web::Bytes, InflightPermit), BodyError> {
    tokio::time::timeout(deadline, read_body(request, payload, limit, budget))
        .await
        .map_err(|_| BodyError::BodyTimeout(deadline.as_millis()))?
}

async fn read_body(
    request: &HttpRequest,
    mut payload: web::Payload,
    limit: usize,
    budget: &InflightBytes,
) -> Result<(web::Bytes, InflightPermit), BodyError> {
    let too_large = || BodyError::TooLarge(format!("the body is over the limit of {limit} bytes"));
    let declared = request
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.parse::<usize>().ok());
    if declared.is_some_and(|length| length > limit) {
        return Err(too_large());
    }
    // Bytes are reserved as they arrive, never on a length the client merely declares: a client that
    // declares megabytes and sends nothing holds nothing, and cannot shut others out of the budget.
    let mut permit = budget.reserve(0)?;
    let mut body = web::BytesMut::new();
    while let Some(chunk) = payload.next().await {
        let chunk = chunk
            .map_err(|e| BodyError::MalformedJson(format!("the body could not be read: {e}")))?;
        if body.len() + chunk.len() > limit {
            return Err(too_large());
        }
        permit.grow_to(body.len() + chunk.len())?;
        body.extend_from_slice(&chunk);
    }
    Ok((body.freeze(), permit))
}

/// The publisher's cap on request body bytes held at once, across all requests: what bounds its memory
/// whatever the clients send. A request that would pass it is answered 503 with `Retry-After` at once.
pub(crate) struct InflightBytes {
    semaphore: Arc<Semaphore>,
    limit: usize,
}

/// Bytes reserved from [`InflightBytes`] by one request, given back when dropped.
pub(crate) struct InflightPermit {
    budget: Arc<Semaphore>,
    limit: usize,
    held: Option<OwnedSemaphorePermit>,
    bytes: usize,
}

impl InflightBytes {
    pub(crate) fn new(limit: usize) -> Self {
        Self {
            semaphore: Arc::new(Semaphore::new(limit.min(Semaphore::MAX_PERMITS))),
            limit,
        }
    }

    /// Reserves `bytes` now, or refuses.
    pub(crate) fn reserve(&self, bytes: usize) -> Result<InflightPermit, BodyError> {
        let mut permit = InflightPermit {
            budget: self.semaphore.clone(),
            limit: self.limit,
            held: None,
            bytes: 0,
        };
        permit.grow_to(bytes)?;
        Ok(permit)
    }

    /// Bytes reserved right now, for the metrics.
    pub(crate) fn in_use(&self) -> usize {
        self.limit - self.semaphore.available_permits()
    }
}

impl InflightPermit {
    /// Extends the reservation to `bytes` in all, or refuses.
    fn grow_to(&mut self, bytes: usize) -> Result<(), BodyError> {
        if bytes <= self.bytes {
            return Ok(());
        }
        let more = u32::try_from(bytes - self.bytes).map_err(|_| self.full())?;
        let extra = self
            .budget
            .clone()
            .try_acquire_many_owned(more)
            .map_err(|_| self.full())?;
        match &mut self.held {
            Some(held) => held.merge(extra),
            None => self.held = Some(extra),
        }
        self.bytes = bytes;
        Ok(())
    }

    fn full(&self) -> BodyError {
        BodyError::Busy(self.limit)
    }
}

/// Parses one message, refusing one whose arrays and objects nest deeper than `max_depth` (the message
/// itself being 1): PostgreSQL's `json` parser could not store it, so it must not be accepted.
pub fn parse_message(body: &[u8], max_depth: usize) -> Result<Message, BodyError> {
    let input: MessageInput = deserialize(body)?;
    let message = Message::try_from(input).map_err(|e| BodyError::InvalidMessage(e.to_string()))?;
    let depth = message.attributes().depth() + 1;
    if depth > max_depth {
        return Err(BodyError::InvalidMessage(format!(
            "messageAttributes: the message nests {depth} levels deep, over the limit of {max_depth} \
             (MAX_JSON_DEPTH), past which the database cannot store it"
        )));
    }
    Ok(message)
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
