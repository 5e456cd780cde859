//! HTTP routes of the consumer, one module an endpoint group; [`API`] lists them with who may use
//! each.

pub(crate) mod dead_letters;
pub(crate) mod feed;
pub(crate) mod health;
pub(crate) mod messages;

use actix_web::web::{get, ServiceConfig};
use common::web::{Access, Api, Doors, Scope};

use crate::{error::ApiError, monitor};

/// The consumer's own routes. Reading messages and the monitor's data needs a read token when tokens
/// are configured, and dead-letter operations an admin token. The monitor page itself holds no data.
fn routes(app: &mut ServiceConfig, doors: &Doors) {
    let (read, admin) = (Access::Needs(Scope::Read), Access::Needs(Scope::Admin));
    app.service(doors.get("/", Access::Open, monitor::page))
        .service(doors.get("/monitor/status", read, monitor::status))
        .service(doors.get("/dead-letters", admin, dead_letters::list))
        .service(doors.post("/dead-letters/replay", admin, dead_letters::replay))
        .service(doors.get("/message", read, messages::list))
        // Before `/message/{id}`, which would take `feed` for an id.
        .service(doors.get("/message/feed", read, feed::feed))
        .service(doors.get("/message/{id}", read, messages::get));
}

/// What the consumer serves: its routes, and its probes and metrics, open for probes and scrapers.
pub(crate) const API: Api = Api {
    openapi: include_str!("../../openapi.yaml"),
    routes,
    probes: || [get().to(health::readyz), get().to(health::metrics)],
};

/// The `Link: <…>; rel="next"` header to this route with `query`: under `PUBLIC_BASE_URL` when it is
/// set, else the path alone (a relative reference, which clients resolve against the URL they asked).
/// Never built from `Host`, `X-Forwarded-Host` or `Forwarded`, which any client can set.
pub(crate) fn next_link(
    request: &actix_web::HttpRequest,
    public_base_url: Option<&str>,
    query: &[(&str, String)],
) -> (actix_web::http::header::HeaderName, String) {
    let query = serde_urlencoded::to_string(query).expect("strings always encode");
    (
        actix_web::http::header::LINK,
        format!(
            "<{}{}?{query}>; rel=\"next\"",
            public_base_url.unwrap_or("").trim_end_matches('/'),
            request.path()
        ),
    )
}

/// The query string's parameters as `T` (whose fields are each route's parameters, refusing others),
/// or a problem that names what is wrong.
pub(crate) fn parse_query<T: serde::de::DeserializeOwned>(query: &str) -> Result<T, ApiError> {
    serde_urlencoded::from_str(query)
        .map_err(|e| ApiError::InvalidParameter(format!("query string: {e}")))
}

/// The integer query parameter `name` as sent (`raw`), `default` when absent, refused with a problem
/// that names the parameter and its range when it is not an integer within `range` (both ends in).
pub(crate) fn bounded(
    name: &str,
    raw: Option<&str>,
    default: usize,
    range: (usize, usize),
) -> Result<usize, ApiError> {
    let Some(raw) = raw else { return Ok(default) };
    raw.parse::<usize>()
        .ok()
        .filter(|n| (range.0..=range.1).contains(n))
        .ok_or_else(|| {
            ApiError::InvalidParameter(format!(
                "{name} must be an integer from {} to {}, got {raw:?}",
                range.0, range.1
            ))
        })
}
