//! Turns an HTTP request body into validated messages, or into the [`BodyError`] that says exactly
//! what is wrong: the media type, the size, the JSON syntax (with line and column) or the field.

use std::sync::Arc;

use actix_web::{http::header, web, HttpRequest};
use futures::StreamExt;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

mod parse;

pub use parse::{parse_batch, parse_message};

/// Why a request body is not a message (or a batch) the publisher takes. Knows nothing of HTTP:
/// the `error` module gives each its status.
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
