//! The consumer's configuration: a group of settings for each of its parts, read from the environment
//! with envy, each group handed whole to the part that uses it.

use std::fmt;

use common::amqp::BrokerConfig;
use common::settings::{ensure, Group, Vars};
use common::telemetry::TelemetryConfig;
use common::web::{DefaultPort, HttpConfig};
use serde::{Deserialize, Serialize};

/// Everything the consumer reads from the environment.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Config {
    pub database: DatabaseConfig,
    pub ingest: IngestConfig,
    pub scaling: ScalingConfig,
    pub reads: ReadConfig,
    pub feed: FeedConfig,
    pub retention: RetentionConfig,
    pub dead_letters: DeadLetterConfig,
    /// What both services read alike.
    pub broker: BrokerConfig,
    pub http: HttpConfig<Port>,
    pub telemetry: TelemetryConfig,
}

/// The consumer listens on 8081 unless `HTTP_PORT` says otherwise.
#[derive(Clone, Debug)]
pub struct Port;

impl DefaultPort for Port {
    const PORT: u16 = 8081;
}

/// The database, its two pools and their timeouts, and how migrations run: see the `database` module.
#[derive(Clone, Deserialize, Serialize)]
#[serde(default)]
pub struct DatabaseConfig {
    /// `DATABASE_URL`: the PostgreSQL database; created at start-up if it does not exist.
    pub database_url: String,
    /// `DB_POOL_SIZE`: PostgreSQL connections ingestion writes with.
    pub db_pool_size: u32,
    /// `DB_READ_POOL_SIZE`: connections `GET /message` reads with, a pool of its own that ingestion
    /// never shares.
    pub db_read_pool_size: u32,
    /// `DB_READ_TIMEOUT_MS`: the statement timeout of every read.
    pub db_read_timeout_ms: u64,
    /// `DB_STATEMENT_TIMEOUT_MS`: PostgreSQL's `statement_timeout` for the consumer's sessions.
    pub db_statement_timeout_ms: u64,
    /// `DB_WRITE_TIMEOUT_MS`: longest an insert may take before its connection is closed and the batch
    /// retried.
    pub db_write_timeout_ms: u64,
    /// `DB_STUCK_WRITE_MS`: `/readyz` fails while a write has been running longer than this.
    pub db_stuck_write_ms: u64,
    /// `DB_TCP_KEEPALIVE_SECS`: idle seconds before PostgreSQL probes the consumer's connection, so that
    /// a backend whose client vanished is ended and its locks released.
    pub db_tcp_keepalive_secs: u32,
    /// `DB_MIGRATION_TIMEOUT_SECS`: longest one migration may run at start-up (its `statement_timeout`,
    /// on a connection of its own, not the 10 s of the ingest pool). A migration past it is rolled back
    /// and the consumer stops naming this variable, rather than locking the table again and again.
    pub db_migration_timeout_secs: u64,
    /// `DB_MIGRATION_LOCK_TIMEOUT_MS`: longest a migration waits for a table lock (`lock_timeout`)
    /// before it gives up and tries again later: while it waits, every reader and writer of that table
    /// queues behind it.
    pub db_migration_lock_timeout_ms: u64,
}

impl Default for DatabaseConfig {
    fn default() -> Self {
        Self {
            database_url: "postgres://postgres@127.0.0.1:5432/messages".into(),
            db_pool_size: 8,
            db_read_pool_size: 4,
            db_read_timeout_ms: 5_000,
            db_statement_timeout_ms: 10_000,
            db_write_timeout_ms: 15_000,
            db_stuck_write_ms: 5_000,
            db_tcp_keepalive_secs: 10,
            db_migration_timeout_secs: 3600,
            db_migration_lock_timeout_ms: 1000,
        }
    }
}

impl Group for DatabaseConfig {
    fn complete(self, _vars: &Vars) -> anyhow::Result<Self> {
        ensure(self.db_pool_size > 0, "DB_POOL_SIZE must be at least 1")?;
        ensure(
            self.db_read_pool_size > 0 && self.db_read_timeout_ms > 0,
            "DB_READ_POOL_SIZE and DB_READ_TIMEOUT_MS must be at least 1",
        )?;
        ensure(
            self.db_write_timeout_ms > 0 && self.db_statement_timeout_ms > 0,
            "DB_WRITE_TIMEOUT_MS and DB_STATEMENT_TIMEOUT_MS must be at least 1",
        )?;
        ensure(
            self.db_migration_timeout_secs > 0 && self.db_migration_lock_timeout_ms > 0,
            "DB_MIGRATION_TIMEOUT_SECS and DB_MIGRATION_LOCK_TIMEOUT_MS must be at least 1",
        )?;
        Ok(self)
    }
}

/// Shows every setting with the password of `DATABASE_URL` redacted.
impl fmt::Debug for DatabaseConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        common::redact::debug_redacted("DatabaseConfig", self, f)
    }
}

/// How deliveries are taken from the broker and gathered into batches: see the `ingest` module.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(default)]
pub struct IngestConfig {
    /// `BATCH_SIZE`: most messages written to PostgreSQL in one transaction.
    pub batch_size: usize,
    /// `BATCH_BYTES`: a batch closes once its payloads reach this many bytes.
    pub batch_bytes: usize,
    /// `BATCH_LINGER_MS`: longest wait for a batch to fill once its first message has arrived.
    pub batch_linger_ms: u64,
    /// `PREFETCH`: unacknowledged deliveries the broker may push ahead; at least `BATCH_SIZE`.
    pub prefetch: u16,
    /// `PREFETCH_BYTES`: most payload bytes the broker may push ahead per queue; the prefetch count is
    /// lowered so that `PREFETCH` of the largest messages fit.
    pub prefetch_bytes: usize,
    /// `MAX_MESSAGE_BYTES`: the largest message a publisher takes; the consumer bounds its prefetch with
    /// it and dead-letters a larger payload unread.
    pub max_message_bytes: usize,
}

impl Default for IngestConfig {
    fn default() -> Self {
        Self {
            batch_size: 500,
            batch_bytes: 8 * 1024 * 1024,
            batch_linger_ms: 20,
            prefetch: 1_000,
            prefetch_bytes: 64 * 1024 * 1024,
            max_message_bytes: common::model::MAX_MESSAGE_BYTES,
        }
    }
}

impl Group for IngestConfig {
    fn complete(self, _vars: &Vars) -> anyhow::Result<Self> {
        ensure(self.batch_size > 0, "BATCH_SIZE must be at least 1")?;
        ensure(
            usize::from(self.prefetch) >= self.batch_size,
            "PREFETCH must be at least BATCH_SIZE, or batches could never fill",
        )?;
        ensure(
            self.max_message_bytes > 0 && self.batch_bytes > 0,
            "MAX_MESSAGE_BYTES and BATCH_BYTES must be at least 1",
        )?;
        Ok(self)
    }
}

impl IngestConfig {
    /// The largest payload a publisher with the same `MAX_MESSAGE_BYTES` can put on the queue: the
    /// message, re-serialised, plus its id, time and fingerprint.
    pub fn max_payload_bytes(&self) -> usize {
        self.max_message_bytes + common::model::ENVELOPE_BYTES
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

/// How many batch writers each queue gets, and how often the queues are looked at: see
/// the queue watch of `ingest`.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(default)]
pub struct ScalingConfig {
    /// `WRITERS_MIN`: batch writers each drained queue keeps at least.
    pub writers_min: usize,
    /// `WRITERS_MAX`: batch writers each drained queue may grow to while its backlog drains too slowly.
    pub writers_max: usize,
    /// `SCALE_TARGET_DRAIN_SECS`: writers are added while a queue's backlog would take longer than this
    /// to drain.
    pub scale_target_drain_secs: u64,
    /// `SCALE_COOLDOWN_SECS`: writers are removed only after the backlog has stayed gone this long
    /// since the last change.
    pub scale_cooldown_secs: u64,
    /// `QUEUE_WATCH_INTERVAL_MS`: how often the queues are looked at (depths, consumers, rates) and the
    /// writer counts decided.
    pub queue_watch_interval_ms: u64,
}

impl Default for ScalingConfig {
    fn default() -> Self {
        Self {
            writers_min: 1,
            writers_max: 4,
            scale_target_drain_secs: 10,
            scale_cooldown_secs: 60,
            queue_watch_interval_ms: 5_000,
        }
    }
}

impl Group for ScalingConfig {
    fn complete(self, _vars: &Vars) -> anyhow::Result<Self> {
        ensure(
            self.writers_min >= 1 && self.writers_max >= self.writers_min,
            "WRITERS_MIN must be at least 1 and WRITERS_MAX at least WRITERS_MIN",
        )?;
        ensure(
            self.queue_watch_interval_ms > 0,
            "QUEUE_WATCH_INTERVAL_MS must be at least 1",
        )?;
        Ok(self)
    }
}

/// How `GET /message` pages are bounded and linked: see the `routes` module.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(default)]
pub struct ReadConfig {
    /// `MAX_PAGE_BYTES`: a page of `GET /message` ends before the message that would take its senders
    /// and attributes past this many bytes, so that what one read holds is set here, not by what was
    /// stored.
    pub max_page_bytes: usize,
    /// `PUBLIC_BASE_URL`: where clients reach the consumer (`https://api.example.com/queue`), for the
    /// absolute `Link` URLs of `GET /message`. Unset, the links are the request's path and query alone;
    /// never built from the `Host` or `Forwarded` headers a client sends.
    pub public_base_url: Option<String>,
}

impl Default for ReadConfig {
    fn default() -> Self {
        Self {
            // 32 of the largest messages, or all 1,000 of a page of 2 KiB ones.
            max_page_bytes: 2 * 1024 * 1024,
            public_base_url: None,
        }
    }
}

impl Group for ReadConfig {
    fn complete(self, _vars: &Vars) -> anyhow::Result<Self> {
        if let Some(base) = &self.public_base_url {
            ensure(
                (base.starts_with("http://") || base.starts_with("https://"))
                    && !base.contains(['?', '#', ' ']),
                "PUBLIC_BASE_URL must be an http:// or https:// URL without a query or fragment",
            )?;
        }
        Ok(self)
    }
}

/// How the feed's followers (long polls with `wait=` and server-sent event streams) are bounded and
/// woken: see the `feed` module.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(default)]
pub struct FeedConfig {
    /// `FEED_MAX_FOLLOWERS`: event streams and waiting long polls open at once; one more is answered
    /// `503` with `Retry-After`.
    pub feed_max_followers: usize,
    /// `FEED_POLL_MS`: how often a follower looks for rows that other consumer processes stored (rows
    /// this process stores wake it at once).
    pub feed_poll_ms: u64,
    /// `FEED_HEARTBEAT_SECS`: an idle event stream sends a comment this often, so that proxies do not
    /// close it.
    pub feed_heartbeat_secs: u64,
    /// `FEED_SLOW_READER_SECS`: an event stream whose reader takes nothing for this long is closed
    /// rather than buffered for; the client resumes with `Last-Event-ID`.
    pub feed_slow_reader_secs: u64,
}

impl Default for FeedConfig {
    fn default() -> Self {
        Self {
            feed_max_followers: 32,
            feed_poll_ms: 250,
            feed_heartbeat_secs: 15,
            feed_slow_reader_secs: 10,
        }
    }
}

impl Group for FeedConfig {
    fn complete(self, _vars: &Vars) -> anyhow::Result<Self> {
        ensure(
            self.feed_poll_ms > 0 && self.feed_heartbeat_secs > 0 && self.feed_slow_reader_secs > 0,
            "FEED_POLL_MS, FEED_HEARTBEAT_SECS and FEED_SLOW_READER_SECS must be at least 1",
        )?;
        Ok(self)
    }
}

/// How long stored messages are kept, and how often that is looked after: see the `retention` module.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(default)]
pub struct RetentionConfig {
    /// `RETENTION`: how long stored messages are kept (`7d`, `12h`); `off` (or `0`) keeps everything and
    /// leaves the table as it is. Set, the table is partitioned by `received_at` and whole partitions
    /// past it are dropped.
    pub retention: String,
    /// `RETENTION_CHECK_SECS`: how often one consumer pod makes the partitions ahead and drops those past
    /// `RETENTION`.
    pub retention_check_secs: u64,
}

impl Default for RetentionConfig {
    fn default() -> Self {
        Self {
            retention: "off".to_owned(),
            retention_check_secs: 60,
        }
    }
}

impl Group for RetentionConfig {
    fn complete(self, _vars: &Vars) -> anyhow::Result<Self> {
        self.kept()?;
        ensure(
            self.retention_check_secs > 0,
            "RETENTION_CHECK_SECS must be at least 1",
        )?;
        Ok(self)
    }
}

impl RetentionConfig {
    /// How long rows are kept, or `None` for ever.
    pub fn kept(&self) -> anyhow::Result<Option<std::time::Duration>> {
        let value = self.retention.trim();
        if value.eq_ignore_ascii_case("off") || value == "0" {
            return Ok(None);
        }
        let invalid = || {
            anyhow::anyhow!(
                "RETENTION must be off, 0, or a whole number of hours or days such as 12h or 7d \
                 (at least 2h), got {:?}",
                self.retention
            )
        };
        let (number, unit) = value.split_at(value.len().saturating_sub(1));
        let number: u64 = number
            .parse()
            .ok()
            .filter(|n| *n > 0 && number.bytes().all(|b| b.is_ascii_digit()))
            .ok_or_else(invalid)?;
        let hours = match unit {
            "h" => number,
            "d" => number.checked_mul(24).ok_or_else(invalid)?,
            _ => return Err(invalid()),
        };
        if !(2..=24 * 365 * 100).contains(&hours) {
            return Err(invalid());
        }
        Ok(Some(std::time::Duration::from_secs(hours * 3600)))
    }
}

/// The dead-letter queue's limit, which the setup step applies as a policy: see the `setup` module.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(default)]
pub struct DeadLetterConfig {
    /// `DEAD_LETTER_LIMIT`: the length limit of `<QUEUE_NAME>.dead` that the setup step applies as a
    /// policy (`consumer dead-letter-policy`); beyond it dead letters are refused, counted, and kept by
    /// their source queues.
    pub dead_letter_limit: u64,
}

impl Default for DeadLetterConfig {
    fn default() -> Self {
        Self {
            dead_letter_limit: 100_000,
        }
    }
}

impl Group for DeadLetterConfig {}

common::settings!(Config {
    broker,
    http,
    telemetry,
    database,
    ingest,
    scaling,
    reads,
    feed,
    retention,
    dead_letters
});

#[cfg(test)]
mod tests;
