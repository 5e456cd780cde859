//! Readiness and metrics (liveness is `common::web::healthz`).

use std::time::Duration;

use actix_web::{http::StatusCode, web, HttpResponse};
use common::web::problem::{kinds, Problem};
use serde_json::json;

use crate::state::AppState;

/// `GET /readyz`: 200 only while the queue subscription is live, the database answers (on the read
/// pool), and no write has been running longer than `DB_STUCK_WRITE_MS`.
pub(crate) async fn readyz(state: web::Data<AppState>) -> HttpResponse {
    let answer = readiness(&state).await;
    state
        .metrics
        .ready
        .set(i64::from(answer.status().is_success()));
    answer
}

async fn readiness(state: &AppState) -> HttpResponse {
    let broker = state.status.broker();
    // On the read pool: a saturated ingestion pool must not fail the probe, nor the probe take one of
    // ingestion's connections.
    let ping = sqlx::query("SELECT 1").execute(state.store.read_pool());
    let database = state.status.database()
        && matches!(
            tokio::time::timeout(Duration::from_secs(1), ping).await,
            Ok(Ok(_))
        );
    if let Some(stuck) = state.status.write_stuck(state.stuck_write) {
        return Problem::new(
            StatusCode::SERVICE_UNAVAILABLE,
            kinds::DATABASE_UNAVAILABLE,
            format!("not ready: a write to the database has been running for {stuck:.1?}"),
        )
        .with_retry_after(1)
        .to_response();
    }
    if let Some(refusal) = state.status.refusal() {
        return Problem::new(
            StatusCode::SERVICE_UNAVAILABLE,
            kinds::BROKER_UNAVAILABLE,
            format!("not ready: the broker refuses what only an operator can grant: {refusal}"),
        )
        .with_retry_after(1)
        .to_response();
    }
    if broker && database {
        return HttpResponse::Ok()
            .json(json!({ "status": "ready", "broker": "up", "database": "up" }));
    }
    let down: Vec<&str> = [
        (!broker).then_some("broker"),
        (!database).then_some("database"),
    ]
    .into_iter()
    .flatten()
    .collect();
    Problem::new(
        StatusCode::SERVICE_UNAVAILABLE,
        if broker {
            kinds::DATABASE_UNAVAILABLE
        } else {
            kinds::BROKER_UNAVAILABLE
        },
        format!("not ready: {} unreachable", down.join(" and ")),
    )
    .with_retry_after(1)
    .to_response()
}

/// `GET /metrics`: Prometheus text format, with `consumer_ready` brought up to date first.
pub(crate) async fn metrics(state: web::Data<AppState>) -> HttpResponse {
    readyz(state.clone()).await;
    state.metrics.response()
}
