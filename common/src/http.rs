//! HTTP pieces both services configure the same way.

use std::{future::Future, net::TcpListener};

use actix_web::{dev::Server, http::StatusCode, HttpResponse};
use anyhow::Context;

use crate::problem::{kinds, Problem};

/// Binds `host:port` (port 0 picks a free one) and returns the listener with the port it got.
pub fn bind(host: &str, port: u16) -> anyhow::Result<(TcpListener, u16)> {
    let listener =
        TcpListener::bind((host, port)).with_context(|| format!("Failed to bind {host}:{port}"))?;
    let port = listener
        .local_addr()
        .context("Failed to read the bound port")?
        .port();
    Ok((listener, port))
}

/// Serves until the server fails or `shutdown` resolves. On shutdown, `on_stop` runs first (so the
/// caller's background work winds down at the same moment), then the server stops gracefully: it takes
/// no new connections and answers the requests in flight, within its shutdown timeout.
pub async fn serve_until(
    server: Server,
    shutdown: impl Future<Output = ()>,
    on_stop: impl FnOnce(),
) -> anyhow::Result<()> {
    let handle = server.handle();
    let mut serving = tokio::spawn(server);
    let served = tokio::select! {
        result = &mut serving => result,
        () = shutdown => {
            tracing::info!("stopping: finishing the work in flight");
            on_stop();
            handle.stop(true).await;
            serving.await
        }
    };
    served
        .context("The HTTP server task failed")?
        .context("The HTTP server failed")
}

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
