//! Every way a publish request can fail, and the one place that maps each to an HTTP status and an
//! `application/problem+json` body.

use actix_web::{http::StatusCode, HttpResponse, ResponseError};
use common::web::problem::{kinds, Problem};

/// Seconds a client is told to wait when the broker cannot take messages.
const RETRY_AFTER_SECONDS: u32 = 1;

/// Why a message was not accepted.
#[derive(Debug, thiserror::Error)]
pub enum PublishError {
    /// 415: the body is not declared as JSON.
    #[error("Content-Type must be application/json, got {0}")]
    UnsupportedMediaType(String),
    /// 415: the body is compressed (any `Content-Encoding` but `identity`).
    #[error("Content-Encoding {0} is not accepted; send the body uncompressed")]
    UnsupportedEncoding(String),
    /// 503: the publisher already holds its limit of request bytes in flight.
    #[error("the publisher is at its limit of {0} bytes of requests in flight; retry shortly")]
    Busy(usize),
    /// 503: the broker did not confirm every message before the deadline, though some may have been
    /// queued; the ids were assigned, and a retry with the same `Idempotency-Key` gets them again.
    #[error("the message broker did not confirm every message within {deadline_ms} ms ({reason}); the outcome of the ids listed is unknown: retry with the same Idempotency-Key to avoid a duplicate")]
    InDoubt {
        ids: Vec<uuid::Uuid>,
        deadline_ms: u128,
        reason: &'static str,
    },
    /// 413: the body is over the limit.
    #[error("{0}")]
    TooLarge(String),
    /// 408: the client did not send its whole body in time.
    #[error("the request body did not arrive within {0} ms")]
    BodyTimeout(u128),
    /// 400: the body is not JSON; the detail gives line and column.
    #[error("malformed JSON: {0}")]
    MalformedJson(String),
    /// 400: the JSON does not describe a valid message; the detail names the field (and index in a batch).
    #[error("{0}")]
    InvalidMessage(String),
    /// 400: a request header breaks its rule.
    #[error("{0}")]
    InvalidHeader(String),
    /// 503: no connection to the broker right now.
    #[error("the message broker is unavailable; retry shortly")]
    BrokerUnavailable,
    /// 503: the broker blocks publishing because of a resource alarm (memory or disk).
    #[error("the message broker is refusing new messages for now ({0}); retry shortly")]
    BrokerBlocked(String),
    /// 503: the broker refused the message (for example a full queue or a resource alarm).
    #[error("the message broker refused the message; retry shortly")]
    Refused,
    /// 503: the broker returned the message as unroutable; the link and topology are set up again.
    #[error("the message broker could not route the message; retry shortly")]
    Unroutable,
    /// 503: the channel was not in confirm mode, so delivery could not be guaranteed.
    #[error("the message broker did not confirm the message; retry shortly")]
    Unconfirmed,
    /// 503: the AMQP connection or channel failed while publishing.
    #[error("the message broker connection failed; retry shortly (with the same Idempotency-Key to avoid a duplicate)")]
    Amqp(#[source] lapin::Error),
}

impl PublishError {
    /// A short label for metrics and logs.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::UnsupportedMediaType(_) => "unsupported_media_type",
            Self::UnsupportedEncoding(_) => "unsupported_encoding",
            Self::Busy(_) => "busy",
            Self::InDoubt { .. } => "in_doubt",
            Self::TooLarge(_) => "too_large",
            Self::BodyTimeout(_) => "body_timeout",
            Self::MalformedJson(_) => "malformed_json",
            Self::InvalidMessage(_) => "invalid_message",
            Self::InvalidHeader(_) => "invalid_header",
            Self::BrokerUnavailable => "broker_unavailable",
            Self::BrokerBlocked(_) => "broker_blocked",
            Self::Refused => "refused",
            Self::Unroutable => "unroutable",
            Self::Unconfirmed => "unconfirmed",
            Self::Amqp(_) => "amqp",
        }
    }

    /// Whether the supervisor should replace the connection rather than wait for its next check.
    pub fn means_link_is_broken(&self) -> bool {
        matches!(self, Self::Amqp(_) | Self::Unroutable | Self::Unconfirmed)
    }

    fn problem(&self) -> Problem {
        let (status, kind) = match self {
            Self::UnsupportedMediaType(_) | Self::UnsupportedEncoding(_) => (
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                kinds::UNSUPPORTED_MEDIA_TYPE,
            ),
            Self::Busy(_) => {
                return Problem::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    kinds::BUSY,
                    self.to_string(),
                )
                .with_retry_after(RETRY_AFTER_SECONDS)
            }
            Self::InDoubt { ids, .. } => {
                return Problem::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    kinds::OUTCOME_UNKNOWN,
                    self.to_string(),
                )
                .with_retry_after(RETRY_AFTER_SECONDS)
                .with_ids(ids.clone())
            }
            Self::TooLarge(_) => (StatusCode::PAYLOAD_TOO_LARGE, kinds::PAYLOAD_TOO_LARGE),
            Self::BodyTimeout(_) => (StatusCode::REQUEST_TIMEOUT, kinds::REQUEST_TIMEOUT),
            Self::MalformedJson(_) => (StatusCode::BAD_REQUEST, kinds::MALFORMED_JSON),
            Self::InvalidMessage(_) => (StatusCode::BAD_REQUEST, kinds::INVALID_FIELD),
            Self::InvalidHeader(_) => (StatusCode::BAD_REQUEST, kinds::INVALID_PARAMETER),
            Self::BrokerUnavailable
            | Self::BrokerBlocked(_)
            | Self::Refused
            | Self::Unroutable
            | Self::Unconfirmed
            | Self::Amqp(_) => {
                return Problem::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    kinds::BROKER_UNAVAILABLE,
                    self.to_string(),
                )
                .with_retry_after(RETRY_AFTER_SECONDS)
            }
        };
        Problem::new(status, kind, self.to_string())
    }
}

impl ResponseError for PublishError {
    fn status_code(&self) -> StatusCode {
        self.problem().status_code()
    }

    fn error_response(&self) -> HttpResponse {
        let problem = self.problem();
        if problem.status >= 500 {
            tracing::warn!(error = %self, cause = ?std::error::Error::source(self), "publish failed");
        }
        problem.to_response()
    }
}
