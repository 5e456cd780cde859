//! `POST /message/publish` and `POST /message/publish/batch`: validate, give each message its id and
//! time, publish, and answer 202 only once the broker has confirmed.

use actix_web::{web, HttpMessage, HttpRequest, HttpResponse, ResponseError};
use chrono::Utc;
use common::{
    model::{fingerprint, Message, QueuedMessage, TraceContext, TRACEPARENT},
    telemetry,
    web::Identity,
};
use serde_json::json;
use tracing::Instrument;
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

/// What a handler answers: 202 with the ids, or the problem that refused the request.
type Reply = Result<HttpResponse, PublishError>;
type State = web::Data<AppState>;

/// Accepts one message.
pub(crate) async fn publish_one(
    request: HttpRequest,
    payload: web::Payload,
    state: State,
) -> Reply {
    accept(request, payload, state, Shape::One).await
}

/// Accepts a batch of messages, all or none.
pub(crate) async fn publish_batch(
    request: HttpRequest,
    payload: web::Payload,
    state: State,
) -> Reply {
    accept(request, payload, state, Shape::Batch).await
}

/// Whether a request carries one message or a batch: all that differs between the two routes.
#[derive(Clone, Copy)]
enum Shape {
    One,
    Batch,
}

impl Shape {
    /// The request's span: the server span of its trace, named after its route.
    fn span(self) -> tracing::Span {
        let route = match self {
            Self::One => "POST /message/publish",
            Self::Batch => "POST /message/publish/batch",
        };
        tracing::info_span!(
            "publish request",
            otel.name = route,
            otel.kind = "server",
            trace_id = tracing::field::Empty,
        )
    }
}

/// Both routes: the body read within its limit, its messages validated and stamped, published, and
/// answered once the broker has confirmed every one. The body's reservation lives until the messages
/// are written to the broker: the messages built from it, and then their frames, take as much memory.
/// Everything runs in the request's span, which continues the caller's trace.
async fn accept(request: HttpRequest, payload: web::Payload, state: State, shape: Shape) -> Reply {
    let span = shape.span();
    let trace = trace_of(&request, &span);
    let limits = &state.body;
    let outcome = async {
        let limit = match shape {
            Shape::One => limits.max_message_bytes,
            Shape::Batch => limits.max_batch_bytes,
        };
        let received = receive(&request, payload, &state, limit).await?;
        let (key, owner) = (received.key.as_ref(), received.owner.as_ref());
        let queued = match shape {
            Shape::One => {
                let message = parse_message(&received.body, limits.max_json_depth)?;
                vec![enqueue(message, key, owner, None)]
            }
            Shape::Batch => parse_batch(
                &received.body,
                limits.max_batch_messages,
                limits.max_message_bytes,
                limits.max_json_depth,
                |index, message| enqueue(message, key, owner, Some(index)),
            )?,
        };
        drop(received.body);
        state
            .broker
            .publish(&queued, &trace, received.reserved)
            .await?;
        // A batch is never empty: the first id stands for it, as the only one stands for one message.
        tracing::debug!(id = %queued[0].id, count = queued.len(), "accepted");
        Ok(queued.iter().map(|q| q.id).collect::<Vec<Uuid>>())
    }
    .instrument(span.clone())
    .await;
    span.in_scope(|| respond(&state, outcome, shape))
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
/// `traceparent`), recorded in the request's span so every log line of it carries the trace id. When
/// traces are exported, it is the exported span of the request, child of the caller's.
fn trace_of(request: &HttpRequest, span: &tracing::Span) -> TraceContext {
    let caller = request
        .headers()
        .get(TRACEPARENT)
        .and_then(|value| value.to_str().ok())
        .and_then(TraceContext::parse);
    if let Some(caller) = &caller {
        telemetry::continue_trace(span, caller);
    }
    let trace = telemetry::context_of(span)
        .unwrap_or_else(|| caller.unwrap_or_else(TraceContext::start).child());
    span.record("trace_id", trace.trace_id());
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

/// 202 with the ids (`{"id", "status"}` for one message, `{"ids"}` for a batch), counted; or the
/// refusal, counted by status.
fn respond(state: &AppState, outcome: Result<Vec<Uuid>, PublishError>, shape: Shape) -> Reply {
    match outcome {
        Ok(ids) => {
            state.metrics.messages_accepted.inc_by(ids.len() as u64);
            Ok(HttpResponse::Accepted().json(match shape {
                Shape::One => json!({ "id": ids[0], "status": "queued" }),
                Shape::Batch => json!({ "ids": ids }),
            }))
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
