//! `GET /dead-letters` (a page of what `<QUEUE_NAME>.dead` holds, left in place) and
//! `POST /dead-letters/replay?limit=N` (up to N put back on the main exchange, each once, confirmed).
//! Both need an admin token when tokens are configured.

use actix_web::{web, HttpRequest, HttpResponse};
use serde::Deserialize;
use serde_json::json;

use super::{bounded, next_link, parse_query};
use crate::{error::ApiError, state::AppState};

/// Most dead letters one look returns, and how deep a look may reach (`offset + limit`).
const MAX_PAGE: usize = 100;
const MAX_DEPTH: usize = 1_000;
/// Most dead letters one replay puts back.
const MAX_REPLAY: usize = 1_000;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct PageQuery {
    limit: Option<String>,
    offset: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ReplayQuery {
    limit: Option<String>,
}

/// `GET /dead-letters?limit=&offset=`: oldest first, each with its reason, origin queue, time and the
/// start of its payload; a `Link: rel="next"` when a full page came back.
pub(crate) async fn list(
    request: HttpRequest,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let query: PageQuery = parse_query(request.query_string())?;
    let limit = bounded("limit", query.limit.as_deref(), 20, (1, MAX_PAGE))?;
    let offset = bounded("offset", query.offset.as_deref(), 0, (0, MAX_DEPTH - limit))?;
    let letters = state.dead_letters.look(offset, limit).await?;
    let mut response = HttpResponse::Ok();
    if letters.len() == limit && offset + 2 * limit <= MAX_DEPTH {
        response.insert_header(next_link(
            &request,
            state.reads.public_base_url.as_deref(),
            &[
                ("limit", limit.to_string()),
                ("offset", (offset + limit).to_string()),
            ],
        ));
    }
    Ok(response.json(letters))
}

/// `POST /dead-letters/replay?limit=N` (default 10): `{"replayed": n}`.
pub(crate) async fn replay(
    request: HttpRequest,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let query: ReplayQuery = parse_query(request.query_string())?;
    let limit = bounded("limit", query.limit.as_deref(), 10, (1, MAX_REPLAY))?;
    let replayed = state.dead_letters.replay(limit).await?;
    tracing::info!(replayed, limit, "dead letters replayed");
    Ok(HttpResponse::Ok().json(json!({ "replayed": replayed })))
}
