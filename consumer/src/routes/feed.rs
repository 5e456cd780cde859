//! `GET /message/feed`: stored messages in commit order, as JSON pages that always link to the next one,
//! or as server-sent events (`Accept: text/event-stream`).

use actix_web::{http::header, web, HttpRequest, HttpResponse};
use serde::Deserialize;
use tokio::time::{Duration, Instant};

use super::messages::{parse_limit, parse_sender};
use crate::{
    error::ApiError,
    feed::{self, Wake},
    state::AppState,
    store::{FeedCursor, FeedRequest},
};

/// The `after` (or `Last-Event-ID`) that starts after every message stored at the time of the request.
const END: &str = "end";

/// The longest `wait` accepted, in seconds.
pub(crate) const MAX_WAIT_SECS: u64 = 30;

/// The query string of `GET /message/feed`, before validation.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct FeedParams {
    after: Option<String>,
    limit: Option<String>,
    sender: Option<String>,
    wait: Option<String>,
}

/// The query string of `GET /message/feed`, validated.
#[derive(Debug, Clone)]
pub(crate) struct FeedQuery {
    pub request: FeedRequest,
    /// `after=end`: start after every message stored now, to follow only what comes next.
    pub from_end: bool,
    /// How long to wait for a first row when none is newer than the cursor.
    pub wait: Duration,
}

/// Parses the query string, and the `Last-Event-ID` a reconnecting event stream sends, which takes the
/// place of `after`.
fn parse_feed_query(query: &str, last_event_id: Option<&str>) -> Result<FeedQuery, ApiError> {
    let params: FeedParams = super::parse_query(query)?;
    let limit = parse_limit(params.limit.as_deref())?;
    parse_sender(params.sender.as_deref())?;
    let (name, raw) = match last_event_id {
        Some(id) => ("Last-Event-ID", Some(id)),
        None => ("after", params.after.as_deref()),
    };
    let from_end = raw == Some(END);
    let after = match raw {
        None => FeedCursor::Start,
        Some(END) => FeedCursor::Start,
        Some(raw) => raw
            .parse()
            .map_err(|error| ApiError::InvalidParameter(format!("{name}: {error}, got {raw:?}")))?,
    };
    let wait = super::bounded(
        "wait",
        params.wait.as_deref(),
        0,
        (0, MAX_WAIT_SECS as usize),
    )?;
    Ok(FeedQuery {
        request: FeedRequest {
            after,
            sender: params.sender,
            limit,
        },
        from_end,
        wait: Duration::from_secs(wait as u64),
    })
}

/// Whether the client asked for server-sent events.
fn wants_events(request: &HttpRequest) -> bool {
    request
        .headers()
        .get_all(header::ACCEPT)
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(','))
        .any(|kind| {
            kind.split(';')
                .next()
                .is_some_and(|kind| kind.trim().eq_ignore_ascii_case("text/event-stream"))
        })
}

/// Serves the feed after the cursor given.
#[tracing::instrument(name = "feed", skip_all)]
pub(crate) async fn feed(
    request: HttpRequest,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let events = wants_events(&request);
    let last_event_id = match request.headers().get("last-event-id") {
        Some(value) if events => Some(value.to_str().map_err(|_| {
            ApiError::InvalidParameter("Last-Event-ID must be a feed cursor".into())
        })?),
        _ => None,
    };
    let FeedQuery {
        request: mut query,
        from_end,
        wait,
    } = parse_feed_query(request.query_string(), last_event_id)?;
    if from_end {
        // Resolved once: a wait that follows must not move the start past rows committed meanwhile.
        query.after = state.store.feed_end(query.sender.as_deref()).await?;
    }
    if events {
        let follower = state
            .feed
            .follow(&state.store)
            .ok_or(ApiError::TooManyFollowers)?;
        return Ok(HttpResponse::Ok()
            .content_type("text/event-stream")
            .insert_header((header::CACHE_CONTROL, "no-cache"))
            // Tells nginx (and the ingress controllers built on it) not to buffer the stream.
            .insert_header(("X-Accel-Buffering", "no"))
            .streaming(feed::events(state.clone(), follower, query)));
    }
    let max_bytes = state.reads.max_page_bytes;
    let mut page = state.store.feed_page(&query, max_bytes).await?;
    if page.messages.is_empty() && !wait.is_zero() {
        let deadline = Instant::now() + wait;
        let mut follower = state
            .feed
            .follow(&state.store)
            .ok_or(ApiError::TooManyFollowers)?;
        while page.messages.is_empty() {
            match follower.wait(deadline, &state.feed.closing).await {
                Wake::Look => {
                    follower.looked();
                    page = state.store.feed_page(&query, max_bytes).await?;
                }
                Wake::Deadline | Wake::Closing => break,
            }
        }
    }
    query.after = page.next;
    let messages: Vec<_> = page.messages.into_iter().map(|(_, m)| m).collect();
    Ok(HttpResponse::Ok()
        .insert_header(next_link(
            &request,
            state.reads.public_base_url.as_deref(),
            &query,
            wait,
        ))
        .json(messages))
}

/// The `next` link that continues after `query.after` with the same filters and wait.
fn next_link(
    request: &HttpRequest,
    public_base_url: Option<&str>,
    query: &FeedRequest,
    wait: Duration,
) -> (header::HeaderName, String) {
    let mut pairs = vec![
        ("after", query.after.to_string()),
        ("limit", query.limit.to_string()),
    ];
    if let Some(sender) = &query.sender {
        pairs.push(("sender", sender.clone()));
    }
    if !wait.is_zero() {
        pairs.push(("wait", wait.as_secs().to_string()));
    }
    super::next_link(request, public_base_url, &pairs)
}

#[cfg(test)]
mod tests {
    use super::*;
    use actix_web::test::TestRequest;

    #[test]
    fn a_query_is_read_with_its_defaults_and_last_event_id_wins_over_after() {
        let query = parse_feed_query("", None).unwrap();
        assert_eq!(query.request.after, FeedCursor::Start);
        assert_eq!(query.request.limit, 100);
        assert!(query.wait.is_zero());
        let id = uuid::Uuid::now_v7();
        let resumed = FeedCursor::At { xid: 42, id };
        let query = parse_feed_query(
            "after=0&wait=30&sender=a&limit=5",
            Some(&resumed.to_string()),
        )
        .unwrap();
        assert_eq!(query.request.after, resumed);
        assert_eq!(query.wait, Duration::from_secs(30));
        assert_eq!(query.request.sender.as_deref(), Some("a"));
    }

    #[test]
    fn every_bad_parameter_is_refused_naming_it() {
        for (query, last_event_id, named) in [
            ("wait=31", None, "wait"),
            ("wait=-1", None, "wait"),
            ("limit=0", None, "limit"),
            ("after=nope", None, "after"),
            ("after=", None, "after"),
            ("", Some("12"), "Last-Event-ID"),
            ("sender=", None, "sender"),
            ("before=x", None, "before"),
        ] {
            let error = parse_feed_query(query, last_event_id).unwrap_err();
            assert!(error.to_string().contains(named), "{query}: {error}");
        }
    }

    #[test]
    fn events_are_chosen_by_any_accepted_type_in_any_case() {
        for (accept, events) in [
            ("text/event-stream", true),
            ("application/json, TEXT/Event-Stream;q=0.5", true),
            ("application/json", false),
            ("text/event-streams", false),
        ] {
            let request = TestRequest::default()
                .insert_header((header::ACCEPT, accept))
                .to_http_request();
            assert_eq!(wants_events(&request), events, "{accept}");
        }
    }
}
