//! `POST /message/publish` and `POST /message/publish/batch`: validate, give each message its id and
//! time, publish, and answer 202 only once the broker has confirmed.

use actix_web::{web, HttpRequest, HttpResponse, ResponseError};
use chrono::Utc;
use common::{Message, QueuedMessage};
use serde_json::json;
use uuid::Uuid;

use crate::{
    body::{parse_batch, parse_message, read_limited, require_json},
    error::PublishError,
    idempotency::IdempotencyKey,
    startup::AppState,
};

/// Accepts one message.
#[tracing::instrument(name = "publish one", skip_all)]
pub async fn publish_one(
    request: HttpRequest,
    payload: web::Payload,
    state: web::Data<AppState>,
) -> Result<HttpResponse, PublishError> {
    let outcome = async {
        require_json(&request)?;
        let key = IdempotencyKey::from_request(&request)?;
        let body = read_limited(
            &request,
            payload,
            state.max_message_bytes,
            state.body_timeout,
        )
        .await?;
        let message = parse_message(&body)?;
        let queued = [enqueue(message, key.as_ref(), None)];
        state.broker.publish(&queued).await?;
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
#[tracing::instrument(name = "publish batch", skip_all)]
pub async fn publish_batch(
    request: HttpRequest,
    payload: web::Payload,
    state: web::Data<AppState>,
) -> Result<HttpResponse, PublishError> {
    let outcome = async {
        require_json(&request)?;
        let key = IdempotencyKey::from_request(&request)?;
        let limit = state
            .max_message_bytes
            .saturating_mul(state.max_batch_messages);
        let body = read_limited(&request, payload, limit, state.body_timeout).await?;
        let messages = parse_batch(&body, state.max_batch_messages)?;
        let queued: Vec<QueuedMessage> = messages
            .into_iter()
            .enumerate()
            .map(|(index, message)| enqueue(message, key.as_ref(), Some(index)))
            .collect();
        state.broker.publish(&queued).await?;
        Ok(queued.iter().map(|q| q.id).collect::<Vec<Uuid>>())
    }
    .await;
    let count = outcome.as_ref().map_or(0, Vec::len);
    respond(&state, outcome.map(|ids| json!({ "ids": ids })), count)
}

/// Stamps a message with its id (time-ordered, or derived from the idempotency key) and arrival time.
fn enqueue(message: Message, key: Option<&IdempotencyKey>, index: Option<usize>) -> QueuedMessage {
    let id = key.map_or_else(Uuid::now_v7, |key| key.message_id(&message, index));
    QueuedMessage {
        id,
        received_at: Utc::now(),
        message,
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
