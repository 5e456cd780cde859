//! Readiness and metrics (liveness is `common::web::healthz`).

use actix_web::{http::StatusCode, web, HttpResponse};
use common::web::problem::{kinds, Problem};
use serde_json::json;

use crate::{links::Unready, state::AppState};

/// `GET /readyz`: 200 only while the broker connection is up and not blocked by a resource alarm, so
/// load balancers stop sending messages that could only be refused.
pub(crate) async fn readyz(state: web::Data<AppState>) -> HttpResponse {
    readiness(&state)
}

/// The readiness answer, also kept in `publisher_ready`.
fn readiness(state: &AppState) -> HttpResponse {
    let readiness = state.broker.readiness();
    state.metrics.ready.set(i64::from(readiness.is_ok()));
    let detail = match readiness {
        Ok(()) => return HttpResponse::Ok().json(json!({ "status": "ready", "broker": "up" })),
        Err(Unready::Disconnected) => "not connected to the message broker".to_owned(),
        Err(Unready::Blocked(reason)) => format!("the message broker blocks publishing ({reason})"),
    };
    Problem::new(
        StatusCode::SERVICE_UNAVAILABLE,
        kinds::BROKER_UNAVAILABLE,
        detail,
    )
    .with_retry_after(1)
    .to_response()
}

/// `GET /metrics`: Prometheus text format, with `publisher_ready` and `publisher_inflight_bytes` brought
/// up to date first.
pub(crate) async fn metrics(state: web::Data<AppState>) -> HttpResponse {
    readiness(&state);
    state
        .metrics
        .inflight_bytes
        .set(i64::try_from(state.inflight.in_use()).unwrap_or(i64::MAX));
    state.metrics.response()
}
