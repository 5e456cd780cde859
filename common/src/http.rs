//! HTTP pieces both services configure the same way.

use actix_web::{http::StatusCode, HttpResponse};

use crate::problem::{kinds, Problem};

/// Worker threads for a configured `HTTP_WORKERS`: 0 means one per CPU core.
pub fn workers(configured: usize) -> usize {
    if configured == 0 {
        std::thread::available_parallelism().map_or(1, |n| n.get())
    } else {
        configured
    }
}

/// The answer to a path no route matches: a 404 problem, like every other error.
pub async fn not_found() -> HttpResponse {
    Problem::new(StatusCode::NOT_FOUND, kinds::NOT_FOUND, "no such route").to_response()
}
