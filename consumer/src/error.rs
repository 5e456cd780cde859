//! Every way a read request can fail, and the one place that maps each to an HTTP status and an
//! `application/problem+json` body. Database details are logged, never returned.

use actix_web::{http::StatusCode, HttpResponse, ResponseError};
use common::web::problem::{kinds, Problem};

use crate::store::StoreError;

/// Why a read request failed.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// 400: a path or query parameter breaks its rule; the detail names it.
    #[error("{0}")]
    InvalidParameter(String),
    /// 404: no message with that id.
    #[error("{0}")]
    NotFound(String),
    /// 503: the database could not be reached.
    #[error("the database is unavailable; retry shortly")]
    DatabaseUnavailable(#[source] StoreError),
    /// 503: the broker could not be reached (dead-letter operations).
    #[error("the message broker is unavailable; retry shortly")]
    BrokerUnavailable(#[from] common::amqp::BrokerError),
    /// 503: `FEED_MAX_FOLLOWERS` event streams and waiting long polls are open already.
    #[error("too many clients are following the feed; retry shortly")]
    TooManyFollowers,
    /// 500: a stored row could not be read back; logged, not shown.
    #[error("an unexpected error occurred")]
    Internal(#[source] StoreError),
}

impl From<StoreError> for ApiError {
    fn from(error: StoreError) -> Self {
        if error.is_unreadable_row() {
            Self::Internal(error)
        } else {
            Self::DatabaseUnavailable(error)
        }
    }
}

impl ApiError {
    fn problem(&self) -> Problem {
        match self {
            Self::InvalidParameter(detail) => Problem::new(
                StatusCode::BAD_REQUEST,
                kinds::INVALID_PARAMETER,
                detail.clone(),
            ),
            Self::NotFound(detail) => {
                Problem::new(StatusCode::NOT_FOUND, kinds::NOT_FOUND, detail.clone())
            }
            Self::DatabaseUnavailable(_) => Problem::new(
                StatusCode::SERVICE_UNAVAILABLE,
                kinds::DATABASE_UNAVAILABLE,
                self.to_string(),
            )
            .with_retry_after(1),
            Self::BrokerUnavailable(_) => Problem::new(
                StatusCode::SERVICE_UNAVAILABLE,
                kinds::BROKER_UNAVAILABLE,
                self.to_string(),
            )
            .with_retry_after(1),
            Self::TooManyFollowers => Problem::new(
                StatusCode::SERVICE_UNAVAILABLE,
                kinds::BUSY,
                self.to_string(),
            )
            .with_retry_after(1),
            Self::Internal(_) => Problem::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                kinds::INTERNAL,
                self.to_string(),
            ),
        }
    }
}

impl ResponseError for ApiError {
    fn status_code(&self) -> StatusCode {
        self.problem().status_code()
    }

    fn error_response(&self) -> HttpResponse {
        match self {
            Self::DatabaseUnavailable(cause) => tracing::warn!(error = %cause, "read failed"),
            Self::BrokerUnavailable(cause) => {
                tracing::warn!(error = %cause, "dead-letter operation failed")
            }
            Self::Internal(cause) => tracing::error!(error = %cause, "read failed"),
            _ => {}
        }
        self.problem().to_response()
    }
}
