//! RFC 9457 problem details: the one shape every error response of both services takes.

use actix_web::{http::StatusCode, HttpResponse};
use serde::Serialize;

/// The media type of every error body.
pub const PROBLEM_JSON: &str = "application/problem+json";

/// An error response body. `kind` is serialised as `type` and tells clients which rule failed
/// without parsing `detail`, which is written for people.
#[derive(Debug, Clone, Serialize)]
pub struct Problem {
    #[serde(rename = "type")]
    pub kind: &'static str,
    pub title: &'static str,
    pub status: u16,
    pub detail: String,
    /// The message ids a request was given when its outcome is unknown, so the client can look them up.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ids: Option<Vec<uuid::Uuid>>,
    /// Seconds a client should wait before retrying; sent as the `Retry-After` header, not in the body.
    #[serde(skip)]
    pub retry_after: Option<u32>,
}

impl Problem {
    pub fn new(status: StatusCode, kind: &'static str, detail: impl Into<String>) -> Self {
        Self {
            kind,
            title: status.canonical_reason().unwrap_or("Error"),
            status: status.as_u16(),
            detail: detail.into(),
            ids: None,
            retry_after: None,
        }
    }

    /// Adds a `Retry-After` header to the response.
    pub fn with_retry_after(mut self, seconds: u32) -> Self {
        self.retry_after = Some(seconds);
        self
    }

    /// Lists the message ids whose outcome is unknown.
    pub fn with_ids(mut self, ids: Vec<uuid::Uuid>) -> Self {
        self.ids = Some(ids);
        self
    }

    pub fn status_code(&self) -> StatusCode {
        StatusCode::from_u16(self.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR)
    }

    /// Renders the problem as an HTTP response with the right status, media type and headers.
    pub fn to_response(&self) -> HttpResponse {
        let mut response = HttpResponse::build(self.status_code());
        response.content_type(PROBLEM_JSON);
        if let Some(seconds) = self.retry_after {
            response.insert_header(("Retry-After", seconds.to_string()));
        }
        response.json(self)
    }
}

/// Problem types shared by both services, as URNs so that they never pretend to be fetchable pages.
pub mod kinds {
    pub const MALFORMED_JSON: &str = "urn:message-queue:problem:malformed-json";
    pub const INVALID_FIELD: &str = "urn:message-queue:problem:invalid-field";
    pub const INVALID_PARAMETER: &str = "urn:message-queue:problem:invalid-parameter";
    pub const PAYLOAD_TOO_LARGE: &str = "urn:message-queue:problem:payload-too-large";
    pub const REQUEST_TIMEOUT: &str = "urn:message-queue:problem:request-timeout";
    pub const UNSUPPORTED_MEDIA_TYPE: &str = "urn:message-queue:problem:unsupported-media-type";
    pub const NOT_FOUND: &str = "urn:message-queue:problem:not-found";
    pub const METHOD_NOT_ALLOWED: &str = "urn:message-queue:problem:method-not-allowed";
    pub const BROKER_UNAVAILABLE: &str = "urn:message-queue:problem:broker-unavailable";
    pub const BUSY: &str = "urn:message-queue:problem:busy";
    pub const OUTCOME_UNKNOWN: &str = "urn:message-queue:problem:outcome-unknown";
    pub const DATABASE_UNAVAILABLE: &str = "urn:message-queue:problem:database-unavailable";
    pub const INTERNAL: &str = "urn:message-queue:problem:internal";
    pub const UNAUTHORIZED: &str = "urn:message-queue:problem:unauthorized";
    pub const FORBIDDEN: &str = "urn:message-queue:problem:forbidden";
}
