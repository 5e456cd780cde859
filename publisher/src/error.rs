//! Every way a publish request can fail, and the one place that maps each to an HTTP status and an
//! `application/problem+json` body. The layers below have their own errors, which know nothing of HTTP:
//! the body's ([`BodyError`]), the `Idempotency-Key` header's ([`InvalidKey`]) and the broker's
//! ([`PublishFailure`]).

use actix_web::{http::StatusCode, HttpResponse, ResponseError};
use common::web::problem::{kinds, Problem};

use crate::{body::BodyError, broker::PublishFailure, idempotency::InvalidKey};

/// Seconds a client is told to wait when the broker cannot take messages.
const RETRY_AFTER_SECONDS: u32 = 1;

/// Why a message was not accepted.
#[derive(Debug, thiserror::Error)]
pub(crate) enum PublishError {
    #[error(transparent)]
    Body(#[from] BodyError),
    #[error(transparent)]
    Key(#[from] InvalidKey),
    #[error(transparent)]
    Broker(#[from] PublishFailure),
}

impl PublishError {
    fn problem(&self) -> Problem {
        let (status, kind) = match self {
            Self::Body(error) => match error {
                BodyError::UnsupportedMediaType(_) | BodyError::UnsupportedEncoding(_) => (
                    StatusCode::UNSUPPORTED_MEDIA_TYPE,
                    kinds::UNSUPPORTED_MEDIA_TYPE,
                ),
                BodyError::Busy(_) => {
                    return Problem::new(
                        StatusCode::SERVICE_UNAVAILABLE,
                        kinds::BUSY,
                        self.to_string(),
                    )
                    .with_retry_after(RETRY_AFTER_SECONDS)
                }
                BodyError::TooLarge(_) => (StatusCode::PAYLOAD_TOO_LARGE, kinds::PAYLOAD_TOO_LARGE),
                BodyError::BodyTimeout(_) => (StatusCode::REQUEST_TIMEOUT, kinds::REQUEST_TIMEOUT),
                BodyError::MalformedJson(_) => (StatusCode::BAD_REQUEST, kinds::MALFORMED_JSON),
                BodyError::InvalidMessage(_) => (StatusCode::BAD_REQUEST, kinds::INVALID_FIELD),
            },
            Self::Key(_) => (StatusCode::BAD_REQUEST, kinds::INVALID_PARAMETER),
            Self::Broker(PublishFailure::InDoubt { ids, .. }) => {
                return Problem::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    kinds::OUTCOME_UNKNOWN,
                    self.to_string(),
                )
                .with_retry_after(RETRY_AFTER_SECONDS)
                .with_ids(ids.clone())
            }
            Self::Broker(_) => {
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
