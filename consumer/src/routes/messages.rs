//! `GET /message` (newest first, keyset-paginated with a `Link: rel="next"` header) and
//! `GET /message/{id}`.

use actix_web::{http::header, web, HttpRequest, HttpResponse};
use serde::Deserialize;
use uuid::Uuid;

use crate::{
    error::ApiError,
    state::AppState,
    store::{PageRequest, StoredMessage},
};

/// Page size when `limit` is not given.
pub(crate) const DEFAULT_LIMIT: u32 = 100;
/// Largest `limit` accepted.
pub const MAX_LIMIT: u32 = 1000;

/// The query string of `GET /message`, before validation.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ListParams {
    limit: Option<String>,
    sender: Option<String>,
    before: Option<String>,
}

/// The query string of `GET /message`, validated: everything but whether `before` names a stored message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListQuery {
    pub limit: u32,
    pub sender: Option<String>,
    pub before: Option<Uuid>,
}

/// Parses and validates the query string of `GET /message` without touching the database, so that the
/// parsing of untrusted query strings can be exercised on its own (the fuzz targets do).
pub fn parse_list_query(query: &str) -> Result<ListQuery, ApiError> {
    let params: ListParams = super::parse_query(query)?;
    let limit = parse_limit(params.limit.as_deref())?;
    parse_sender(params.sender.as_deref())?;
    let before = params
        .before
        .as_deref()
        .map(|raw| parse_id("before", raw))
        .transpose()?;
    Ok(ListQuery {
        limit,
        sender: params.sender,
        before,
    })
}

/// Lists stored messages newest first.
#[tracing::instrument(name = "list messages", skip_all)]
pub(crate) async fn list(
    request: HttpRequest,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let ListQuery {
        limit,
        sender,
        before,
    } = parse_list_query(request.query_string())?;
    let after =
        match before {
            None => None,
            Some(id) => {
                let cursor = state.store.cursor_of(id).await?;
                Some(cursor.ok_or_else(|| {
                    ApiError::NotFound(format!("before: no message has the id {id}"))
                })?)
            }
        };
    let page = PageRequest {
        sender: sender.clone(),
        after,
        limit,
    };
    let (messages, more) = state.store.page(&page, state.reads.max_page_bytes).await?;
    let mut response = HttpResponse::Ok();
    if more {
        let last = messages.last().expect("a page holds at least one row");
        response.insert_header(next_link(
            &request,
            state.reads.public_base_url.as_deref(),
            limit,
            sender.as_deref(),
            last,
        ));
    }
    Ok(response.json(messages))
}

/// Returns one message.
#[tracing::instrument(name = "get message", skip_all)]
pub(crate) async fn get(
    path: web::Path<String>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let id = parse_id("id", &path)?;
    let message = state
        .store
        .find(id)
        .await?
        .ok_or_else(|| ApiError::NotFound(format!("no message has the id {id}")))?;
    Ok(HttpResponse::Ok().json(message))
}

/// Refuses a `sender` filter that no stored message can have.
pub(crate) fn parse_sender(sender: Option<&str>) -> Result<(), ApiError> {
    match sender {
        Some(sender) if sender.is_empty() || sender.contains('\0') => {
            Err(ApiError::InvalidParameter(
                "sender must be a non-empty name without NUL characters".into(),
            ))
        }
        _ => Ok(()),
    }
}

/// `limit`: 100 when absent, 1 to [`MAX_LIMIT`].
pub(crate) fn parse_limit(raw: Option<&str>) -> Result<u32, ApiError> {
    let limit = super::bounded(
        "limit",
        raw,
        DEFAULT_LIMIT as usize,
        (1, MAX_LIMIT as usize),
    )?;
    Ok(u32::try_from(limit).expect("at most MAX_LIMIT"))
}

fn parse_id(name: &str, raw: &str) -> Result<Uuid, ApiError> {
    Uuid::parse_str(raw).map_err(|_| {
        ApiError::InvalidParameter(format!("{name} must be a message id (a UUID), got {raw:?}"))
    })
}

/// The `next` link to the page after `last`, keeping the request's filters.
fn next_link(
    request: &HttpRequest,
    public_base_url: Option<&str>,
    limit: u32,
    sender: Option<&str>,
    last: &StoredMessage,
) -> (header::HeaderName, String) {
    let mut query = vec![("limit", limit.to_string())];
    if let Some(sender) = sender {
        query.push(("sender", sender.to_owned()));
    }
    query.push(("before", last.id.to_string()));
    super::next_link(request, public_base_url, &query)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limit_defaults_to_100_and_accepts_1_to_1000() {
        assert_eq!(parse_limit(None).unwrap(), DEFAULT_LIMIT);
        assert_eq!(parse_limit(Some("1")).unwrap(), 1);
        assert_eq!(parse_limit(Some("1000")).unwrap(), 1000);
        for bad in ["0", "1001", "-1", "ten", ""] {
            assert!(parse_limit(Some(bad)).is_err(), "{bad}");
        }
    }

    #[test]
    fn an_id_that_is_not_a_uuid_is_refused_naming_the_parameter() {
        let error = parse_id("before", "nope").unwrap_err();
        assert!(
            error.to_string().starts_with("before must be a message id"),
            "{error}"
        );
    }
}
