//! Every way a read request can fail, and the one place that maps each to an HTTP status and an
//! `application/problem+json` body. Database details are logged, never returned.

use actix_web::{http::StatusCode, HttpResponse, ResponseError};
use common::problem::{kinds, Problem};

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
    DatabaseUnavailable(#[source] sqlx::Error),
}

impl From<sqlx::Error> for ApiError {
    fn from(error: sqlx::Error) -> Self {
        Self::DatabaseUnavailable(error)
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
        }
    }
}

impl ResponseError for ApiError {
    fn status_code(&self) -> StatusCode {
        self.problem().status_code()
    }

    fn error_response(&self) -> HttpResponse {
        if let Self::DatabaseUnavailable(cause) = self {
            tracing::warn!(error = %cause, "read failed");
        }
        self.problem().to_response()
    }
}
