//! `POST /message/publish` and `POST /message/publish/batch`: validate, give each message its id and
//! time, publish, and answer 202 only once the broker has confirmed.

use actix_web::{web, HttpMessage, HttpRequest, HttpResponse, ResponseError};
use chrono::Utc;
use common::{
    model::{fingerprint, Message, QueuedMessage, TraceContext, TRACEPARENT},
    web::Identity,
};
use serde_json::json;
use uuid::Uuid;

use crate::{
    body::{
        parse_batch, parse_message, read_limited, require_identity_encoding, require_json,
        InflightPermit,
    },
    error::PublishError,
    idempotency::IdempotencyKey,
    state::AppState,
};

/// Accepts one message.
#[tracing::instrument(name = "publish one", skip_all, fields(trace_id = tracing::field::Empty))]
pub(crate) async fn publish_one(
    request: HttpRequest,
    payload: web::Payload,
    state: web::Data<AppState>,
) -> Result<HttpResponse, PublishError> {
    let trace = trace_of(&request);
    let outcome = async {
        let limit = state.body.max_message_bytes;
        let Received {
            body,
            reserved,
            key,
            owner,
        } = receive(&request, payload, &state, limit).await?;
        let message = parse_message(&body, state.body.max_json_depth)?;
        drop(body);
        let queued = [enqueue(message, key.as_ref(), owner.as_ref(), None)];
        state.broker.publish(&queued, &trace, reserved).await?;
        tracing::debug!(id = %queued[0].id, "accepted");
        Ok(queued[0].id)
    }
    .await;
    respond(
        &state,
        outcome.map(|id| json!({ "id": id, "status": "queued" })),
        1,
    )
}

/// Accepts a batch of messages, all or none.
#[tracing::instrument(name = "publish batch", skip_all, fields(trace_id = tracing::field::Empty))]
pub(crate) async fn publish_batch(
    request: HttpRequest,
    payload: web::Payload,
    state: web::Data<AppState>,
) -> Result<HttpResponse, PublishError> {
    let trace = trace_of(&request);
    let outcome = async {
        // The reservation lives until the messages are written to the broker: the messages built from
        // the body, and then their frames, take as much memory.
        let limit = state.body.max_batch_bytes;
        let Received {
            body,
            reserved,
            key,
            owner,
        } = receive(&request, payload, &state, limit).await?;
        let queued = parse_batch(
            &body,
            state.body.max_batch_messages,
            state.body.max_message_bytes,
            state.body.max_json_depth,
            |index, message| enqueue(message, key.as_ref(), owner.as_ref(), Some(index)),
        )?;
        drop(body);
        state.broker.publish(&queued, &trace, reserved).await?;
        tracing::debug!(count = queued.len(), first = ?queued.first().map(|q| q.id), "accepted");
        Ok(queued.iter().map(|q| q.id).collect::<Vec<Uuid>>())
    }
    .await;
    let count = outcome.as_ref().map_or(0, Vec::len);
    respond(&state, outcome.map(|ids| json!({ "ids": ids })), count)
}

/// A request body read whole within its limit, with what the request's headers say of it.
struct Received {
    body: web::Bytes,
    reserved: InflightPermit,
    key: Option<IdempotencyKey>,
    owner: Option<Identity>,
}

/// The steps both routes open with: the headers' rules, then the body, at most `limit` bytes and within
/// `BODY_TIMEOUT_MS`, reserved against `MAX_INFLIGHT_BYTES`.
async fn receive(
    request: &HttpRequest,
    payload: web::Payload,
    state: &AppState,
    limit: usize,
) -> Result<Received, PublishError> {
    require_json(request)?;
    require_identity_encoding(request)?;
    let key = IdempotencyKey::from_request(request)?;
    let owner = request.extensions().get::<Identity>().cloned();
    let timeout = std::time::Duration::from_millis(state.body.body_timeout_ms);
    let (body, reserved) = read_limited(request, payload, limit, timeout, &state.inflight).await?;
    Ok(Received {
        body,
        reserved,
        key,
        owner,
    })
}

/// The publisher's span of the request's trace (a new trace when the request carries no valid
/// `traceparent`), recorded in the request's span so every log line of it carries the trace id.
fn trace_of(request: &HttpRequest) -> TraceContext {
    let header = request
        .headers()
        .get(TRACEPARENT)
        .and_then(|value| value.to_str().ok());
    let trace = TraceContext::continue_or_start(header).child();
    tracing::Span::current().record("trace_id", trace.trace_id());
    trace
}

/// Stamps a message with its id (time-ordered, or derived from the idempotency key and its owner) and
/// arrival time.
/// A keyed message also carries its fingerprint, so that a key reused for other content is caught.
fn enqueue(
    message: Message,
    key: Option<&IdempotencyKey>,
    owner: Option<&Identity>,
    index: Option<usize>,
) -> QueuedMessage {
    let (id, fingerprint) = match key {
        None => (Uuid::now_v7(), None),
        Some(key) => (
            key.message_id(&message, index, owner),
            Some(fingerprint(&message)),
        ),
    };
    QueuedMessage {
        id,
        received_at: Utc::now(),
        message,
        fingerprint,
    }
}

fn respond(
    state: &AppState,
    outcome: Result<serde_json::Value, PublishError>,
    accepted: usize,
) -> Result<HttpResponse, PublishError> {
    match outcome {
        Ok(body) => {
            state.metrics.messages_accepted.inc_by(accepted as u64);
            Ok(HttpResponse::Accepted().json(body))
        }
        Err(error) => {
            state
                .metrics
                .requests_refused
                .with_label_values(&[error.status_code().as_str()])
                .inc();
            Err(error)
        }
    }
}
