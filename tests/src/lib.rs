//! Test harness for the end-to-end suite: a [`TestStack`] runs the real publisher and consumer against the
//! machine's RabbitMQ and PostgreSQL, with a database and queue names of its own so tests run in parallel,
//! and removes both when dropped (even when the test panics).

pub mod broker_users;
mod cleanup;
pub mod process;
pub mod proxy;
mod queues;
pub mod raw_http;
mod running;
mod stack;
pub mod tls;

use std::{future::Future, time::Duration};

pub use cleanup::{
    remove_resources, remove_resources_blocking, remove_resources_blocking_on, remove_resources_on,
};
pub use queues::publish_raw_on;
pub use running::{spawn_consumer, spawn_publisher, RunningService};
pub use stack::{StackConfig, TestStack};

/// The broker tests use, overridable with `TEST_AMQP_URL`.
pub fn amqp_url() -> String {
    std::env::var("TEST_AMQP_URL")
        .unwrap_or_else(|_| "amqp://guest:guest@127.0.0.1:5672/%2f".into())
}

/// The PostgreSQL server tests use (any database on it), overridable with `TEST_DATABASE_URL`.
pub fn server_url() -> String {
    std::env::var("TEST_DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into())
}

/// The URL of database `name` on the test server.
pub fn database_url(name: &str) -> String {
    let server = server_url();
    let base = server
        .rsplit_once('/')
        .map_or(server.as_str(), |(base, _)| base);
    format!("{base}/{name}")
}

/// The URL of database `name` on the test server, reached through `address` (a proxy) instead.
pub fn database_url_via(address: std::net::SocketAddr, name: &str) -> String {
    let url = database_url(name);
    let (scheme_and_user, rest) = url.split_once('@').expect("a URL with a user");
    let (_, path) = rest.split_once('/').expect("a URL with a database");
    format!("{scheme_and_user}@{address}/{path}")
}

/// The host and port of a URL such as `amqp://user:password@host:port/vhost`.
pub fn url_address(url: &str) -> std::net::SocketAddr {
    let after_scheme = url.split_once("://").map_or(url, |(_, rest)| rest);
    let authority = after_scheme
        .rsplit_once('@')
        .map_or(after_scheme, |(_, host)| host);
    let authority = authority.split('/').next().expect("an authority");
    std::net::ToSocketAddrs::to_socket_addrs(authority)
        .expect("a resolvable address")
        .next()
        .expect("an address")
}

/// The `/metrics` text of the service at `base_url`.
pub async fn metrics_text(http: &reqwest::Client, base_url: &str) -> String {
    http.get(format!("{base_url}/metrics"))
        .send()
        .await
        .expect("metrics reachable")
        .text()
        .await
        .expect("metrics text")
}

/// The value of the unlabelled sample `name` in a `/metrics` text, 0 when it is absent.
pub fn metric_value(text: &str, name: &str) -> f64 {
    text.lines()
        .find_map(|line| line.strip_prefix(name)?.strip_prefix(' '))
        .map_or(0.0, |value| value.trim().parse().expect("a number"))
}

/// Status of `GET url/readyz`, or 0 when the service did not answer within 2 s.
pub async fn readiness(http: &reqwest::Client, url: &str) -> u16 {
    match http
        .get(format!("{url}/readyz"))
        .timeout(Duration::from_secs(2))
        .send()
        .await
    {
        Ok(response) => response.status().as_u16(),
        Err(_) => 0,
    }
}

/// Polls `probe` every 25 ms until it returns `Some`, failing the test with `what` after `deadline`.
pub async fn eventually<T, F, Fut>(deadline: Duration, what: &str, mut probe: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let give_up = tokio::time::Instant::now() + deadline;
    loop {
        if let Some(value) = probe().await {
            return value;
        }
        assert!(
            tokio::time::Instant::now() < give_up,
            "timed out after {deadline:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}
