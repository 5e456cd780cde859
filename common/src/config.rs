//! Configuration of both services, read from environment variables with envy.
//!
//! Every field has a default that works against RabbitMQ and PostgreSQL on their standard local ports,
//! so a bare `publisher` or `consumer` runs on a developer's machine. A value that does not parse stops
//! the process at start-up with a message naming the variable.

use std::fmt;

use serde::{de::DeserializeOwned, Deserialize, Serialize};

use crate::{
    amqp::BrokerAddress,
    auth::{Scope, Tokens},
    telemetry::LogFormat,
    topology::QueueType,
    Topology,
};

/// What both services read alike. It is read on its own rather than flattened into each service's
/// struct, because envy cannot flatten numbers and enums.
#[derive(Clone, Deserialize, Serialize)]
pub struct ServiceConfig {
    /// `AMQP_URL`: the broker, with credentials and the URL-encoded virtual host.
    #[serde(default = "default_amqp_url")]
    pub amqp_url: String,
    /// `AMQP_CA_FILE`: PEM certificates trusted for `amqps://` nodes besides the system's roots, such as
    /// a private certificate authority's, mounted from a Secret.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub amqp_ca_file: Option<String>,
    /// `QUEUE_NAME`: the queue messages go to and are drained from; exchanges and the dead-letter queue
    /// derive their names from it.
    #[serde(default = "default_queue_name")]
    pub queue_name: String,
    /// `QUEUE_TYPE`: `quorum` (safe, fast, no priority before RabbitMQ 4.0) or `classic` (priority); both
    /// services must agree.
    #[serde(default)]
    pub queue_type: QueueType,
    /// `DELIVERY_LIMIT`: deliveries of one message before a quorum queue dead-letters it; both services
    /// must agree.
    #[serde(default = "default_delivery_limit")]
    pub delivery_limit: u32,
    /// `QUEUE_SHARDS`: queues messages are spread over by the hash of their id (1: the one queue
    /// `QUEUE_NAME`); both services must agree.
    #[serde(default = "default_queue_shards")]
    pub queue_shards: u16,
    /// `DECLARE_TOPOLOGY`: whether the service declares its exchanges and queues (`true`), or only checks
    /// that they exist (`false`), for a broker user without configure permission while a setup step
    /// (`consumer declare-topology`) declares them.
    #[serde(default = "default_true")]
    pub declare_topology: bool,
    /// `HTTP_HOST`: address the HTTP server binds.
    #[serde(default = "default_http_host")]
    pub http_host: String,
    /// `HTTP_WORKERS`: HTTP worker threads; 0 means one per CPU core.
    #[serde(default)]
    pub http_workers: usize,
    /// `LOG_FORMAT`: `pretty` or `json`.
    #[serde(default)]
    pub log_format: LogFormat,
    /// `MAX_MESSAGE_BYTES`: the largest message, alone or as an element of a batch; the consumer bounds
    /// its prefetch with it and dead-letters a larger payload unread.
    #[serde(default = "default_max_message_bytes")]
    pub max_message_bytes: usize,
    /// `HTTP_WRITE_TIMEOUT_SECS`: a connection whose client leaves the response unread this long is closed.
    #[serde(default = "default_http_write_timeout_secs")]
    pub http_write_timeout_secs: u64,
    /// `SHUTDOWN_TIMEOUT_SECS`: longest wait for in-flight work after SIGTERM.
    #[serde(default = "default_shutdown_timeout_secs")]
    pub shutdown_timeout_secs: u64,
    /// `REQUIRE_TOKENS`: refuse to start unless every scope this service guards has a token, so that a
    /// missing Secret in production stops the rollout instead of opening the API.
    #[serde(default)]
    pub require_tokens: bool,
    /// `PUBLISH_TOKENS`, `READ_TOKENS`, `ADMIN_TOKENS` (or their `_FILE`s): none means every route is
    /// open (unless `REQUIRE_TOKENS` is set). Read by [`Tokens::from_vars`], not by envy, and never written back by `environment()`.
    #[serde(skip)]
    pub tokens: Tokens,
}

/// Configuration of the publisher service.
#[derive(Clone, Deserialize, Serialize)]
pub struct PublisherConfig {
    /// What both services share (`AMQP_URL`, `QUEUE_NAME`, …), read on its own.
    #[serde(skip)]
    pub service: ServiceConfig,
    /// `HTTP_PORT`: port the HTTP server binds; 0 picks a free one.
    #[serde(default = "default_publisher_port")]
    pub http_port: u16,
    /// `PUBLISH_CHANNELS`: confirm-mode AMQP channels on each connection, publishes spread over them.
    #[serde(default = "default_publish_channels")]
    pub publish_channels: usize,
    /// `AMQP_CONNECTIONS`: broker connections in the publisher's pool, each with its own I/O thread
    /// and `PUBLISH_CHANNELS` channels; with several nodes they spread over them.
    #[serde(default = "default_amqp_connections")]
    pub amqp_connections: usize,
    /// `CONFIRM_TIMEOUT_MS`: how long a request waits for the broker's confirm before answering 503.
    #[serde(default = "default_confirm_timeout_ms")]
    pub confirm_timeout_ms: u64,
    /// `MAX_BATCH_BYTES`: largest body of `/message/publish/batch`.
    #[serde(default = "default_max_batch_bytes")]
    pub max_batch_bytes: usize,
    /// `MAX_INFLIGHT_BYTES`: request body bytes held at once across all requests; past it, 503.
    #[serde(default = "default_max_inflight_bytes")]
    pub max_inflight_bytes: usize,
    /// `BODY_TIMEOUT_MS`: longest a client may take to send a request body before it is answered 408.
    #[serde(default = "default_body_timeout_ms")]
    pub body_timeout_ms: u64,
    /// `MAX_BATCH_MESSAGES`: most messages one `/message/publish/batch` request may carry.
    #[serde(default = "default_max_batch_messages")]
    pub max_batch_messages: usize,
    /// `MAX_JSON_DEPTH`: deepest nesting of arrays and objects a message may hold, counted from the
    /// message itself; deeper is refused (400), since PostgreSQL's `json` parser could not store it.
    #[serde(default = "default_max_json_depth")]
    pub max_json_depth: usize,
}

/// Configuration of the consumer service.
#[derive(Clone, Deserialize, Serialize)]
pub struct ConsumerConfig {
    /// What both services share (`AMQP_URL`, `QUEUE_NAME`, …), read on its own.
    #[serde(skip)]
    pub service: ServiceConfig,
    /// `DATABASE_URL`: the PostgreSQL database; created at start-up if it does not exist.
    #[serde(default = "default_database_url")]
    pub database_url: String,
    /// `HTTP_PORT`: port the HTTP server binds; 0 picks a free one.
    #[serde(default = "default_consumer_port")]
    pub http_port: u16,
    /// `BATCH_SIZE`: most messages written to PostgreSQL in one transaction.
    #[serde(default = "default_batch_size")]
    pub batch_size: usize,
    /// `BATCH_LINGER_MS`: longest wait for a batch to fill once its first message has arrived.
    #[serde(default = "default_batch_linger_ms")]
    pub batch_linger_ms: u64,
    /// `PREFETCH`: unacknowledged deliveries the broker may push ahead; at least `BATCH_SIZE`.
    #[serde(default = "default_prefetch")]
    pub prefetch: u16,
    /// `DB_POOL_SIZE`: PostgreSQL connections shared by ingestion and the HTTP API.
    #[serde(default = "default_db_pool_size")]
    pub db_pool_size: u32,
    /// Connections `GET /message` reads with, a pool of their own that ingestion never shares.
    #[serde(default = "default_db_read_pool_size")]
    pub db_read_pool_size: u32,
    /// The statement timeout of every read.
    #[serde(default = "default_db_read_timeout_ms")]
    pub db_read_timeout_ms: u64,
    /// `PREFETCH_BYTES`: most payload bytes the broker may push ahead per queue; the prefetch count is
    /// lowered so that `PREFETCH` of the largest messages fit.
    #[serde(default = "default_prefetch_bytes")]
    pub prefetch_bytes: usize,
    /// `BATCH_BYTES`: a batch closes once its payloads reach this many bytes.
    #[serde(default = "default_batch_bytes")]
    pub batch_bytes: usize,
    /// `DB_STATEMENT_TIMEOUT_MS`: PostgreSQL's `statement_timeout` for the consumer's sessions.
    #[serde(default = "default_db_statement_timeout_ms")]
    pub db_statement_timeout_ms: u64,
    /// `DB_WRITE_TIMEOUT_MS`: longest an insert may take before its connection is closed and the batch
    /// retried.
    #[serde(default = "default_db_write_timeout_ms")]
    pub db_write_timeout_ms: u64,
    /// `DB_STUCK_WRITE_MS`: `/readyz` fails while a write has been running longer than this.
    #[serde(default = "default_db_stuck_write_ms")]
    pub db_stuck_write_ms: u64,
    /// `MAX_PAGE_BYTES`: a page of `GET /message` ends before the message that would take its senders and
    /// attributes past this many bytes, so that what one read holds is set here, not by what was stored.
    #[serde(default = "default_max_page_bytes")]
    pub max_page_bytes: usize,
    /// `PUBLIC_BASE_URL`: where clients reach the consumer (`https://api.example.com/queue`), for the
    /// absolute `Link` URLs of `GET /message`. Unset, the links are the request's path and query alone;
    /// never built from the `Host` or `Forwarded` headers a client sends.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub public_base_url: Option<String>,
    /// `DB_TCP_KEEPALIVE_SECS`: idle seconds before PostgreSQL probes the consumer's connection, so that
    /// a backend whose client vanished is ended and its locks released.
    #[serde(default = "default_db_tcp_keepalive_secs")]
    pub db_tcp_keepalive_secs: u32,
    /// `DEAD_LETTER_LIMIT`: the length limit of `<QUEUE_NAME>.dead` that the setup step applies as a
    /// policy (`consumer dead-letter-policy`); beyond it dead letters are refused, counted, and kept by
    /// their source queues.
    #[serde(default = "default_dead_letter_limit")]
    pub dead_letter_limit: u64,
    /// Batch writers each drained queue keeps at least.
    #[serde(default = "default_writers_min")]
    pub writers_min: usize,
    /// Batch writers each drained queue may grow to while its backlog drains too slowly.
    #[serde(default = "default_writers_max")]
    pub writers_max: usize,
    /// Writers are added while a queue's backlog would take longer than this to drain.
    #[serde(default = "default_scale_target_drain_secs")]
    pub scale_target_drain_secs: u64,
    /// Writers are removed only after the backlog has stayed gone this long since the last change.
    #[serde(default = "default_scale_cooldown_secs")]
    pub scale_cooldown_secs: u64,
    /// How often the queues are looked at (depths, consumers, rates) and the writer counts decided.
    #[serde(default = "default_queue_watch_interval_ms")]
    pub queue_watch_interval_ms: u64,
    /// `DB_MIGRATION_TIMEOUT_SECS`: longest one migration may run at start-up (its `statement_timeout`,
    /// on a connection of its own, not the 10 s of the ingest pool). A migration past it is rolled back
    /// and the consumer stops naming this variable, rather than locking the table again and again.
    #[serde(default = "default_db_migration_timeout_secs")]
    pub db_migration_timeout_secs: u64,
    /// `DB_MIGRATION_LOCK_TIMEOUT_MS`: longest a migration waits for a table lock (`lock_timeout`)
    /// before it gives up and tries again later: while it waits, every reader and writer of that table
    /// queues behind it.
    #[serde(default = "default_db_migration_lock_timeout_ms")]
    pub db_migration_lock_timeout_ms: u64,
}

impl ServiceConfig {
    /// The broker of `AMQP_URL`, trusting the certificates of `AMQP_CA_FILE` when it is set; fails,
    /// naming the variable, when that file cannot be read or holds no certificate.
    pub fn broker(&self) -> anyhow::Result<BrokerAddress> {
        let broker = BrokerAddress::new(self.amqp_url.clone());
        let Some(path) = &self.amqp_ca_file else {
            return Ok(broker);
        };
        let pem = std::fs::read_to_string(path).map_err(|e| {
            anyhow::anyhow!("invalid configuration: AMQP_CA_FILE {path:?} cannot be read: {e}")
        })?;
        broker
            .trusting(&pem)
            .map_err(|e| anyhow::anyhow!("invalid configuration: AMQP_CA_FILE {path:?} {e}"))
    }

    /// With `REQUIRE_TOKENS`, fails naming the first of `scopes` that has no token. Called where a
    /// service builds the HTTP server that guards those scopes, not when the configuration is read: a
    /// setup step (`consumer declare-topology`) shares the service's settings but serves nothing.
    pub fn require_tokens_for(&self, scopes: &[Scope]) -> anyhow::Result<()> {
        if !self.require_tokens {
            return Ok(());
        }
        match scopes.iter().find(|scope| !self.tokens.has(**scope)) {
            Some(scope) => {
                let variable = scope.variable();
                anyhow::bail!(
                    "invalid configuration: REQUIRE_TOKENS is set but {variable} (or {variable}_FILE) \
                     gives no token: without it the routes it guards would be open"
                )
            }
            None => Ok(()),
        }
    }

    pub fn topology(&self) -> Topology {
        let topology = Topology::new(
            &self.queue_name,
            self.queue_type,
            self.delivery_limit,
            self.queue_shards,
        );
        if self.declare_topology {
            topology
        } else {
            topology.verified_only()
        }
    }
}

impl Default for ServiceConfig {
    /// Every setting at its default, as an empty environment gives.
    fn default() -> Self {
        envy::from_iter(std::iter::empty::<(String, String)>()).expect("every field has a default")
    }
}

impl PublisherConfig {
    /// Reads the process environment.
    pub fn from_env() -> anyhow::Result<Self> {
        Self::from_vars(std::env::vars())
    }

    /// Reads the configuration from `vars` (name, value), as from the environment.
    pub fn from_vars(vars: impl IntoIterator<Item = (String, String)>) -> anyhow::Result<Self> {
        let config: Self = load(vars)?;
        ensure(
            config.publish_channels > 0,
            "PUBLISH_CHANNELS must be at least 1",
        )?;
        ensure(
            config.amqp_connections > 0,
            "AMQP_CONNECTIONS must be at least 1",
        )?;
        ensure(
            config.max_batch_messages > 0,
            "MAX_BATCH_MESSAGES must be at least 1",
        )?;
        ensure(
            config.max_json_depth >= 2,
            "MAX_JSON_DEPTH must be at least 2 (the message and its messageAttributes object)",
        )?;
        ensure(
            config.service.max_message_bytes <= config.max_batch_bytes
                && config.max_batch_bytes <= config.max_inflight_bytes,
            "MAX_MESSAGE_BYTES must be at most MAX_BATCH_BYTES, and MAX_BATCH_BYTES at most MAX_INFLIGHT_BYTES",
        )?;
        Ok(config)
    }

    /// The environment variables that give this configuration.
    pub fn environment(&self) -> Vec<(String, String)> {
        environment(&self.service)
            .into_iter()
            .chain(environment(self))
            .collect()
    }
}

impl ConsumerConfig {
    /// Reads the process environment.
    pub fn from_env() -> anyhow::Result<Self> {
        Self::from_vars(std::env::vars())
    }

    /// Reads the configuration from `vars` (name, value), as from the environment.
    pub fn from_vars(vars: impl IntoIterator<Item = (String, String)>) -> anyhow::Result<Self> {
        let config: Self = load(vars)?;
        ensure(config.batch_size > 0, "BATCH_SIZE must be at least 1")?;
        ensure(
            usize::from(config.prefetch) >= config.batch_size,
            "PREFETCH must be at least BATCH_SIZE, or batches could never fill",
        )?;
        ensure(config.db_pool_size > 0, "DB_POOL_SIZE must be at least 1")?;
        ensure(
            config.db_read_pool_size > 0 && config.db_read_timeout_ms > 0,
            "DB_READ_POOL_SIZE and DB_READ_TIMEOUT_MS must be at least 1",
        )?;
        ensure(
            config.writers_min >= 1 && config.writers_max >= config.writers_min,
            "WRITERS_MIN must be at least 1 and WRITERS_MAX at least WRITERS_MIN",
        )?;
        if let Some(base) = &config.public_base_url {
            ensure(
                (base.starts_with("http://") || base.starts_with("https://"))
                    && !base.contains(['?', '#', ' ']),
                "PUBLIC_BASE_URL must be an http:// or https:// URL without a query or fragment",
            )?;
        }
        ensure(
            config.queue_watch_interval_ms > 0,
            "QUEUE_WATCH_INTERVAL_MS must be at least 1",
        )?;
        ensure(
            config.service.max_message_bytes > 0 && config.batch_bytes > 0,
            "MAX_MESSAGE_BYTES and BATCH_BYTES must be at least 1",
        )?;
        ensure(
            config.db_write_timeout_ms > 0 && config.db_statement_timeout_ms > 0,
            "DB_WRITE_TIMEOUT_MS and DB_STATEMENT_TIMEOUT_MS must be at least 1",
        )?;
        ensure(
            config.db_migration_timeout_secs > 0 && config.db_migration_lock_timeout_ms > 0,
            "DB_MIGRATION_TIMEOUT_SECS and DB_MIGRATION_LOCK_TIMEOUT_MS must be at least 1",
        )?;
        Ok(config)
    }

    /// The environment variables that give this configuration.
    pub fn environment(&self) -> Vec<(String, String)> {
        environment(&self.service)
            .into_iter()
            .chain(environment(self))
            .collect()
    }

    /// The largest payload a publisher with the same `MAX_MESSAGE_BYTES` can put on the queue: the
    /// message, re-serialised, plus its id, time and fingerprint.
    pub fn max_payload_bytes(&self) -> usize {
        self.service.max_message_bytes + PAYLOAD_ENVELOPE_BYTES
    }

    /// `PREFETCH`, lowered where needed so that that many of the largest payloads fit `PREFETCH_BYTES`
    /// (RabbitMQ does not implement a prefetch in bytes). Never below 1.
    pub fn effective_prefetch(&self) -> u16 {
        let fit = self.prefetch_bytes / self.max_payload_bytes();
        self.prefetch
            .min(u16::try_from(fit).unwrap_or(u16::MAX))
            .max(1)
    }
}

/// What the queue envelope adds to a message: `{"id":…,"received_at":…,"message":…,"fingerprint":…}`,
/// with room to spare. (Re-serialising a message can only shorten it: the publisher drops whitespace
/// outside the attributes, which it keeps as sent.)
pub const PAYLOAD_ENVELOPE_BYTES: usize = 512;

/// Shows every setting with the passwords of `AMQP_URL` redacted and the tokens counted, never shown.
impl fmt::Debug for ServiceConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        crate::redact::debug_redacted("ServiceConfig", self, &[("tokens", &self.tokens)], f)
    }
}

/// Shows every setting with passwords redacted.
impl fmt::Debug for PublisherConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        crate::redact::debug_redacted("PublisherConfig", self, &[("service", &self.service)], f)
    }
}

/// Shows every setting with the passwords of `DATABASE_URL` and `AMQP_URL` redacted.
impl fmt::Debug for ConsumerConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        crate::redact::debug_redacted("ConsumerConfig", self, &[("service", &self.service)], f)
    }
}

/// Every environment variable either service reads, for documentation checks.
pub const VARIABLES: &[&str] = &[
    "AMQP_URL",
    "AMQP_CA_FILE",
    "DECLARE_TOPOLOGY",
    "DATABASE_URL",
    "QUEUE_NAME",
    "QUEUE_TYPE",
    "QUEUE_SHARDS",
    "AMQP_CONNECTIONS",
    "DELIVERY_LIMIT",
    "HTTP_HOST",
    "HTTP_PORT",
    "HTTP_WORKERS",
    "RUST_LOG",
    "LOG_FORMAT",
    "PUBLISH_CHANNELS",
    "CONFIRM_TIMEOUT_MS",
    "MAX_MESSAGE_BYTES",
    "MAX_BATCH_MESSAGES",
    "MAX_JSON_DEPTH",
    "MAX_BATCH_BYTES",
    "MAX_INFLIGHT_BYTES",
    "BODY_TIMEOUT_MS",
    "BATCH_SIZE",
    "BATCH_LINGER_MS",
    "PREFETCH",
    "DB_POOL_SIZE",
    "DB_READ_POOL_SIZE",
    "DB_READ_TIMEOUT_MS",
    "PREFETCH_BYTES",
    "BATCH_BYTES",
    "DB_STATEMENT_TIMEOUT_MS",
    "DB_WRITE_TIMEOUT_MS",
    "DB_STUCK_WRITE_MS",
    "DB_TCP_KEEPALIVE_SECS",
    "MAX_PAGE_BYTES",
    "PUBLIC_BASE_URL",
    "DEAD_LETTER_LIMIT",
    "WRITERS_MIN",
    "WRITERS_MAX",
    "SCALE_TARGET_DRAIN_SECS",
    "SCALE_COOLDOWN_SECS",
    "QUEUE_WATCH_INTERVAL_MS",
    "DB_MIGRATION_TIMEOUT_SECS",
    "DB_MIGRATION_LOCK_TIMEOUT_MS",
    "HTTP_WRITE_TIMEOUT_SECS",
    "SHUTDOWN_TIMEOUT_SECS",
    "REQUIRE_TOKENS",
    "PUBLISH_TOKENS",
    "PUBLISH_TOKENS_FILE",
    "READ_TOKENS",
    "READ_TOKENS_FILE",
    "ADMIN_TOKENS",
    "ADMIN_TOKENS_FILE",
];

/// Variables whose value must be one of a few words. envy's own error for these quotes the value but
/// not the variable, so they are checked first.
const CHOICES: &[(&str, &[&str])] = &[
    ("QUEUE_TYPE", &["quorum", "classic"]),
    ("LOG_FORMAT", &["pretty", "json"]),
];

/// The environment variables of one configuration struct's own fields: the inverse of reading them.
fn environment<T: Serialize>(config: &T) -> Vec<(String, String)> {
    let serde_json::Value::Object(fields) =
        serde_json::to_value(config).expect("a flat configuration")
    else {
        unreachable!("a configuration is a struct");
    };
    fields
        .into_iter()
        .map(|(field, value)| {
            let value = match value {
                serde_json::Value::String(text) => text,
                other => other.to_string(),
            };
            (field.to_uppercase(), value)
        })
        .collect()
}

/// Reads a service's configuration and the [`ServiceConfig`] it holds from the same variables.
fn load<T: DeserializeOwned + HoldsService>(
    vars: impl IntoIterator<Item = (String, String)>,
) -> anyhow::Result<T> {
    let vars: Vec<(String, String)> = vars.into_iter().collect();
    check_choices(vars.iter().cloned())?;
    let invalid = |e: envy::Error| anyhow::anyhow!("invalid configuration: {e}");
    let mut config: T = envy::from_iter(vars.iter().cloned()).map_err(invalid)?;
    let mut service: ServiceConfig = envy::from_iter(vars.iter().cloned()).map_err(invalid)?;
    service.tokens = Tokens::from_vars(&vars)?;
    check_amqp_url(&service.amqp_url)?;
    ensure(
        (1..=MAX_QUEUE_SHARDS).contains(&service.queue_shards),
        "QUEUE_SHARDS must be between 1 and 256",
    )?;
    *config.service_mut() = service;
    Ok(config)
}

/// The most queues one `QUEUE_NAME` may be spread over: each is a Raft group (quorum) or an Erlang
/// process on the broker, and the consumer opens a channel for each.
const MAX_QUEUE_SHARDS: u16 = 256;

/// A service's configuration, which holds the shared part.
trait HoldsService {
    fn service_mut(&mut self) -> &mut ServiceConfig;
}

impl HoldsService for PublisherConfig {
    fn service_mut(&mut self) -> &mut ServiceConfig {
        &mut self.service
    }
}

impl HoldsService for ConsumerConfig {
    fn service_mut(&mut self) -> &mut ServiceConfig {
        &mut self.service
    }
}

fn check_choices(vars: impl Iterator<Item = (String, String)>) -> anyhow::Result<()> {
    for (name, value) in vars {
        if let Some((_, allowed)) = CHOICES.iter().find(|(variable, _)| *variable == name) {
            ensure(
                allowed.contains(&value.as_str()),
                &format!(
                    "{name} must be one of {}, got {value:?}",
                    allowed.join(", ")
                ),
            )?;
        }
    }
    Ok(())
}

/// Every URL of `AMQP_URL` (one, or several separated by commas) must parse, and there must be one.
fn check_amqp_url(urls: &str) -> anyhow::Result<()> {
    ensure(
        crate::amqp::node_urls(urls).next().is_some(),
        "invalid configuration: AMQP_URL names no broker",
    )?;
    for url in crate::amqp::node_urls(urls) {
        url.parse::<lapin::uri::AMQPUri>().map_err(|e| {
            anyhow::anyhow!(
                "invalid configuration: AMQP_URL {:?} is not an AMQP URL: {e}",
                crate::redact::url(url)
            )
        })?;
    }
    Ok(())
}

fn ensure(condition: bool, message: &str) -> anyhow::Result<()> {
    if condition {
        Ok(())
    } else {
        anyhow::bail!("invalid configuration: {message}")
    }
}

fn default_dead_letter_limit() -> u64 {
    100_000
}
fn default_http_write_timeout_secs() -> u64 {
    30
}
fn default_true() -> bool {
    true
}
fn default_amqp_url() -> String {
    "amqp://guest:guest@127.0.0.1:5672/%2f".into()
}
fn default_database_url() -> String {
    "postgres://postgres@127.0.0.1:5432/messages".into()
}
fn default_queue_name() -> String {
    "messages".into()
}
fn default_queue_shards() -> u16 {
    1
}

fn default_delivery_limit() -> u32 {
    20
}
fn default_http_host() -> String {
    "0.0.0.0".into()
}
fn default_publisher_port() -> u16 {
    8080
}
fn default_consumer_port() -> u16 {
    8081
}
/// Measured on 2 cores with one broker (`AMQP_CONNECTIONS=N bench --publisher`): one connection gave the
/// most single-message throughput for the least CPU (22.3k msg/s at 0.24 s per 10,000, against 19.1k at
/// 0.34 s with two and 16.4k at 0.43 s with four); more pay off only with cores to spare.
fn default_amqp_connections() -> usize {
    1
}

fn default_publish_channels() -> usize {
    4
}
fn default_confirm_timeout_ms() -> u64 {
    5_000
}
fn default_max_message_bytes() -> usize {
    64 * 1024
}
/// 64 of the largest messages, or 1000 of 4 KiB: what one request may hold in memory.
fn default_max_batch_bytes() -> usize {
    4 * 1024 * 1024
}
/// Three of the largest batches at once. With 24 MiB, 16 clients of the largest batches took the
/// publisher to 120 MiB; with this, 65-111 MiB (and a lower cap no longer lowers the peak).
fn default_max_inflight_bytes() -> usize {
    12 * 1024 * 1024
}
/// PostgreSQL parses `json` recursively within its `max_stack_depth`: at the smallest value it allows
/// (100kB) it took 500 levels here and refused 1,000; at the default (2MB), 8,000 and not 20,000.
fn default_max_json_depth() -> usize {
    256
}
fn default_body_timeout_ms() -> u64 {
    10_000
}
fn default_max_batch_messages() -> usize {
    1_000
}
fn default_shutdown_timeout_secs() -> u64 {
    20
}
fn default_batch_size() -> usize {
    500
}
fn default_batch_linger_ms() -> u64 {
    20
}
fn default_prefetch() -> u16 {
    1_000
}
fn default_prefetch_bytes() -> usize {
    64 * 1024 * 1024
}
fn default_batch_bytes() -> usize {
    8 * 1024 * 1024
}
fn default_db_statement_timeout_ms() -> u64 {
    10_000
}
fn default_db_write_timeout_ms() -> u64 {
    15_000
}
fn default_db_stuck_write_ms() -> u64 {
    5_000
}
/// 32 of the largest messages, or all 1,000 of a page of 2 KiB ones.
fn default_max_page_bytes() -> usize {
    2 * 1024 * 1024
}
fn default_db_tcp_keepalive_secs() -> u32 {
    10
}
fn default_writers_min() -> usize {
    1
}
fn default_writers_max() -> usize {
    4
}
fn default_scale_target_drain_secs() -> u64 {
    10
}
fn default_scale_cooldown_secs() -> u64 {
    60
}
fn default_queue_watch_interval_ms() -> u64 {
    5_000
}
fn default_db_migration_timeout_secs() -> u64 {
    3600
}
fn default_db_migration_lock_timeout_ms() -> u64 {
    1000
}
fn default_db_read_pool_size() -> u32 {
    4
}
fn default_db_read_timeout_ms() -> u64 {
    5_000
}
fn default_db_pool_size() -> u32 {
    8
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pairs(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn an_empty_environment_gives_the_contract_defaults() {
        let publisher = PublisherConfig::from_vars([]).unwrap();
        let consumer = ConsumerConfig::from_vars([]).unwrap();
        assert_eq!(
            publisher.service.amqp_url,
            "amqp://guest:guest@127.0.0.1:5672/%2f"
        );
        assert_eq!(publisher.http_port, 8080);
        assert_eq!(consumer.http_port, 8081);
        assert_eq!(
            consumer.database_url,
            "postgres://postgres@127.0.0.1:5432/messages"
        );
        assert_eq!(consumer.service.queue_name, "messages");
        assert_eq!(consumer.service.http_host, "0.0.0.0");
        assert_eq!(consumer.service.log_format, LogFormat::Pretty);
        assert_eq!(publisher.service.queue_type, QueueType::Quorum);
    }

    /// The configuration table of docs/configuration.md is what users read: every variable, with its
    /// real default.
    #[test]
    fn the_configuration_page_documents_every_variable_with_its_default() {
        let page = include_str!("../../docs/configuration.md");
        let rows: Vec<&str> = page.lines().filter(|l| l.starts_with("| `")).collect();
        let row = |variable: &str| {
            rows.iter()
                .find(|l| l.starts_with(&format!("| `{variable}` |")))
                .unwrap_or_else(|| panic!("docs/configuration.md has no row for {variable}"))
                .to_string()
        };
        for variable in VARIABLES {
            row(variable);
        }
        let p = PublisherConfig::from_vars([]).unwrap();
        let c = ConsumerConfig::from_vars([]).unwrap();
        let defaults: Vec<(String, String)> =
            p.environment().into_iter().chain(c.environment()).collect();
        for (variable, _) in &defaults {
            assert!(
                VARIABLES.contains(&variable.as_str()),
                "{variable} is read but missing from VARIABLES"
            );
        }
        for (variable, default) in defaults {
            let line = row(&variable);
            assert!(
                line.contains(&format!("`{default}`")),
                "docs/configuration.md default of {variable} should be {default}: {line}"
            );
        }
    }

    #[test]
    fn a_value_that_does_not_parse_is_reported_with_its_variable() {
        let err = PublisherConfig::from_vars(pairs(&[("HTTP_PORT", "eighty")])).unwrap_err();
        assert!(err.to_string().contains("HTTP_PORT"), "{err}");
        let err = ConsumerConfig::from_vars(pairs(&[("DELIVERY_LIMIT", "many")])).unwrap_err();
        assert!(err.to_string().contains("DELIVERY_LIMIT"), "{err}");
    }

    #[test]
    fn a_word_outside_its_choices_is_reported_with_its_variable() {
        let vars = [("QUEUE_TYPE".to_string(), "stream".to_string())];
        let err = check_choices(vars.into_iter()).unwrap_err();
        assert!(
            err.to_string()
                .contains("QUEUE_TYPE must be one of quorum, classic"),
            "{err}"
        );
        assert!(
            check_choices([("LOG_FORMAT".to_string(), "json".to_string())].into_iter()).is_ok()
        );
    }

    #[test]
    fn required_tokens_stop_each_service_naming_the_scope_it_lacks() {
        let required = ("REQUIRE_TOKENS", "true");
        let publisher = |vars: &[(&str, &str)]| {
            PublisherConfig::from_vars(pairs(vars))
                .unwrap()
                .service
                .require_tokens_for(&[Scope::Publish])
        };
        let consumer = |vars: &[(&str, &str)]| {
            ConsumerConfig::from_vars(pairs(vars))
                .unwrap()
                .service
                .require_tokens_for(&[Scope::Read, Scope::Admin])
        };
        let err = publisher(&[required]).unwrap_err();
        assert!(err.to_string().contains("PUBLISH_TOKENS"), "{err}");
        let err = consumer(&[required, ("READ_TOKENS", READ)]).unwrap_err();
        assert!(err.to_string().contains("ADMIN_TOKENS"), "{err}");
        let err = consumer(&[required, ("ADMIN_TOKENS", ADMIN)]).unwrap_err();
        assert!(err.to_string().contains("READ_TOKENS"), "{err}");
        // A publisher does not need the consumer's scopes, nor the consumer the publisher's.
        assert!(publisher(&[required, ("PUBLISH_TOKENS", PUBLISH)]).is_ok());
        assert!(consumer(&[required, ("READ_TOKENS", READ), ("ADMIN_TOKENS", ADMIN)]).is_ok());
        // Without the setting, no token is needed.
        assert!(publisher(&[]).is_ok() && consumer(&[]).is_ok());
    }

    const PUBLISH: &str = "publish-token-secret-0001";
    const READ: &str = "read-token-secret-000001";
    const ADMIN: &str = "admin-token-secret-00001";

    #[test]
    fn a_configuration_read_back_from_its_environment_is_the_same() {
        let vars = pairs(&[
            ("AMQP_URL", "amqp://u:p@broker:5673/v"),
            ("QUEUE_TYPE", "classic"),
            ("BATCH_SIZE", "7"),
            ("PREFETCH", "9"),
        ]);
        let consumer = ConsumerConfig::from_vars(vars).unwrap();
        let again = ConsumerConfig::from_vars(consumer.environment()).unwrap();
        assert_eq!(format!("{again:?}"), format!("{consumer:?}"));
    }

    #[test]
    fn configurations_print_without_passwords_or_tokens() {
        let vars = pairs(&[
            ("AMQP_URL", "amqp://app:amqp-secret@10.0.0.1:5672/%2f"),
            ("DATABASE_URL", "postgres://app:db-secret@db:5432/messages"),
            ("PUBLISH_TOKENS", "publish-token-secret-0001"),
            ("READ_TOKENS", "read-token-secret-000001"),
        ]);
        let shown = format!(
            "{:?} {:?}",
            ConsumerConfig::from_vars(vars.clone()).unwrap(),
            PublisherConfig::from_vars(vars).unwrap()
        );
        for secret in ["amqp-secret", "db-secret", "token-secret"] {
            assert!(!shown.contains(secret), "{secret} in {shown}");
        }
        assert!(
            shown.contains("app:***@10.0.0.1") && shown.contains("publish: 1"),
            "{shown}"
        );
    }

    #[test]
    fn an_amqp_url_that_does_not_parse_is_reported_with_its_variable() {
        assert!(check_amqp_url("amqp://guest:guest@127.0.0.1:5672/%2f").is_ok());
        let err = check_amqp_url("http://[oops").unwrap_err();
        assert!(err.to_string().contains("AMQP_URL"), "{err}");
        assert!(check_amqp_url("amqp://a:5672/%2f,amqp://b:5672/%2f").is_ok());
        let err = check_amqp_url("amqp://a:5672/%2f,http://[oops").unwrap_err();
        assert!(err.to_string().contains("http://[oops"), "{err}");
        assert!(check_amqp_url(" , ").is_err());
    }
}
