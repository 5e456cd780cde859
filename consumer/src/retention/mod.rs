//! Keeping the table bounded: partitions of `messages` by `received_at`, made ahead of time and dropped
//! whole once past `RETENTION`, and the hourly partitions of `message_keys` (the claims of keyed inserts),
//! dropped an hour after their inserts ended.
//!
//! One consumer pod at a time does it: each round takes a session advisory lock on a connection of its
//! own (settings as for migrations: a long statement bound, a short lock wait), and a pod that does not
//! get it skips the round. Every step is idempotent, so a round cut short by a crash or a lock it could
//! not have is finished by the next one, on any pod. The first round with `RETENTION` set converts an
//! unpartitioned table (`convert`).

mod convert;
mod partitions;

use std::{sync::Arc, time::Duration};

use chrono::{DateTime, Utc};
use sqlx::{Connection, PgConnection};
use tokio_util::sync::CancellationToken;

use crate::{
    config::RetentionConfig,
    metrics::Metrics,
    migrations::{self, MigrationSettings},
};
use partitions::Width;

/// The advisory lock of maintenance rounds (distinct from sqlx's migration lock).
const LOCK: i64 = 0x6d71_7265_7465_6e74; // "mqretent"

/// Hours of `message_keys` partitions made ahead of the current one.
const KEY_HOURS_AHEAD: i64 = 3;

/// Partitions of `messages` made ahead of the current one.
const PERIODS_AHEAD: i32 = 3;

/// What maintenance needs.
pub(crate) struct Maintenance {
    database_url: String,
    settings: MigrationSettings,
    kept: Option<Duration>,
    every: Duration,
    metrics: Arc<Metrics>,
}

/// What one round did.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Round {
    /// Whether this pod held the lock (else it did nothing).
    pub ran: bool,
    /// Whether it converted the table to partitions.
    pub converted: bool,
    /// Partitions of `messages` made, and dropped.
    pub made: usize,
    pub dropped: usize,
    /// Rows of the default partition deleted (stragglers past retention).
    pub stragglers: u64,
}

impl Maintenance {
    pub(crate) fn new(
        database_url: &str,
        settings: MigrationSettings,
        config: &RetentionConfig,
        metrics: Arc<Metrics>,
    ) -> anyhow::Result<Self> {
        Ok(Self {
            database_url: database_url.to_owned(),
            settings,
            kept: config.kept()?,
            every: Duration::from_secs(config.retention_check_secs),
            metrics,
        })
    }

    /// A round now, then one every `RETENTION_CHECK_SECS`, until `cancel`.
    pub(crate) async fn run(self, cancel: CancellationToken) {
        loop {
            match self.round(Utc::now()).await {
                Ok(round) => {
                    if round.ran {
                        self.metrics
                            .maintenance_last_success
                            .set(Utc::now().timestamp());
                    }
                    if round.converted || round.made > 0 || round.dropped > 0 {
                        tracing::info!(?round, "maintenance round");
                    }
                }
                Err(error) => {
                    self.metrics.maintenance_failures.inc();
                    tracing::warn!(error = %format!("{error:#}"), "maintenance round failed; the next one tries again");
                }
            }
            tokio::select! {
                () = cancel.cancelled() => return,
                () = tokio::time::sleep(self.every) => {}
            }
        }
    }

    /// One round as of `now`: takes the lock or returns at once; converts the table if `RETENTION` is
    /// set and it is not partitioned yet; makes the partitions ahead; drops what is past retention.
    pub async fn round(&self, now: DateTime<Utc>) -> anyhow::Result<Round> {
        let mut connection = migrations::connect(&self.database_url, &self.settings).await?;
        let round = self.round_on(&mut connection, now).await;
        // Ending the session releases the lock, whatever happened.
        let _ = tokio::time::timeout(Duration::from_secs(5), connection.close()).await;
        round
    }

    async fn round_on(
        &self,
        connection: &mut PgConnection,
        now: DateTime<Utc>,
    ) -> anyhow::Result<Round> {
        let locked: bool = sqlx::query_scalar("SELECT pg_try_advisory_lock($1)")
            .bind(LOCK)
            .fetch_one(&mut *connection)
            .await?;
        let mut round = Round {
            ran: locked,
            ..Round::default()
        };
        if !locked {
            return Ok(round);
        }
        sqlx::query(&format!(
            "SET lock_timeout = '{}ms'",
            self.settings.lock_timeout.as_millis()
        ))
        .execute(&mut *connection)
        .await?;
        partitions::keep_key_hours(connection, KEY_HOURS_AHEAD).await?;
        let width = Width::for_retention(self.kept);
        if self.kept.is_some() {
            round.converted = convert::partition(connection, now, width).await?;
        }
        if partitions::is_partitioned(connection).await? {
            round.made = partitions::make_ahead(connection, now, width, PERIODS_AHEAD).await?;
            if let Some(kept) = self.kept {
                let horizon = now - chrono::Duration::from_std(kept)?;
                round.dropped = partitions::drop_before(connection, horizon).await?;
                round.stragglers = partitions::delete_stragglers(connection, horizon).await?;
            }
            let (count, expired) = partitions::census(connection, self.kept, now).await?;
            self.metrics.message_partitions.set(count);
            self.metrics.expired_partitions.set(expired);
        }
        Ok(round)
    }
}
