//! Applying the schema migrations at start-up, on a connection of their own.
//!
//! sqlx's [`Migrator`] does the work (checksums, the `_sqlx_migrations` table, one transaction per
//! migration); this module decides where and how it runs:
//! - on a dedicated connection, never a pooled one, closed whatever happens, so that the session's
//!   advisory lock (the one that lets several replicas start at once) goes with it: a failed run must
//!   not leave it held by a connection that lives on in a pool;
//! - with its own `statement_timeout` (`DB_MIGRATION_TIMEOUT_SECS`), not the ingest pool's 10 s, which
//!   cancelled a table rewrite and then retried it for ever;
//! - with a short `lock_timeout` (`DB_MIGRATION_LOCK_TIMEOUT_MS`) once the advisory lock is held: an
//!   `ALTER TABLE` waiting for its lock makes every reader and writer of the table queue behind it, so
//!   it gives up quickly and tries again after a backoff;
//! - accepting migrations newer than this version knows (a rollback to it after a newer release ran),
//!   since schema changes are expand/contract and the older code runs on the expanded schema;
//! - logging each migration's version, description and duration, and a "still applying" line while a
//!   long one runs.

use std::{borrow::Cow, collections::HashSet, future::Future, str::FromStr, time::Duration};

use anyhow::Context;
use common::backoff::Backoff;
use sqlx::{
    migrate::{Migrate, MigrateError, Migration, Migrator},
    postgres::PgConnectOptions,
    ConnectOptions, Connection, PgConnection,
};
use tokio::time::Instant;

/// Every migration of this version, embedded at build time.
pub static MIGRATOR: Migrator = sqlx::migrate!("../migrations");

/// The newest migration of a landed release. Those up to it have run on users' databases and stay as
/// they are (sqlx records their checksums); every later one must be an expand or contract step that
/// holds no table lock for long, which `tests/tests/pipeline/upgrades.rs` checks.
pub const LAST_RELEASED: i64 = 20261201000000;

/// How often a migration that is still running says so.
pub const PROGRESS_EVERY: Duration = Duration::from_secs(10);

/// How long connecting may take, and how long past its server-side bound a statement may go unanswered
/// before the connection is given up: a server that vanished without a reset never answers, and sqlx
/// has no client-side timeout of its own.
const UNANSWERED: Duration = Duration::from_secs(30);

/// How migrations run.
#[derive(Debug, Clone, Copy)]
pub struct MigrationSettings {
    /// The `statement_timeout` of the migration connection: the longest one migration may run.
    pub statement_timeout: Duration,
    /// The `lock_timeout` of a migration: the longest it keeps the table's users waiting for its lock.
    pub lock_timeout: Duration,
    /// How often a long migration logs that it is still running.
    pub progress_every: Duration,
    /// PostgreSQL's `tcp_keepalives_idle` for the connection, as for the pools.
    pub tcp_keepalive_secs: u32,
}

impl MigrationSettings {
    /// The settings `DB_MIGRATION_TIMEOUT_SECS`, `DB_MIGRATION_LOCK_TIMEOUT_MS` and
    /// `DB_TCP_KEEPALIVE_SECS` give, with progress logged every [`PROGRESS_EVERY`].
    pub fn of(config: &crate::config::DatabaseConfig) -> Self {
        Self {
            statement_timeout: Duration::from_secs(config.db_migration_timeout_secs),
            lock_timeout: Duration::from_millis(config.db_migration_lock_timeout_ms),
            progress_every: PROGRESS_EVERY,
            tcp_keepalive_secs: config.db_tcp_keepalive_secs,
        }
    }
}

/// Why migrating failed.
#[derive(Debug, thiserror::Error)]
pub enum MigrationError {
    /// A migration ran longer than its bound: PostgreSQL rolled it back. Retrying would lock the table
    /// for as long again, so this is final.
    #[error(
        "migration {version} ({description}) ran longer than DB_MIGRATION_TIMEOUT_SECS ({}s) and was \
         rolled back; raise DB_MIGRATION_TIMEOUT_SECS to let it finish",
        limit.as_secs()
    )]
    TimedOut {
        version: i64,
        description: String,
        limit: Duration,
    },
    /// Anything else (the database down, a connection lost): worth retrying.
    #[error(transparent)]
    Other(#[from] anyhow::Error),
}

/// The migrations of [`MIGRATOR`] up to and including `version`, for applying a schema step by step.
pub fn through(version: i64) -> Migrator {
    let migrations: Vec<Migration> = MIGRATOR
        .iter()
        .filter(|m| m.version <= version)
        .cloned()
        .collect();
    migrator(migrations)
}

/// A migrator for `migrations`, which accepts applied migrations it does not know and takes no
/// advisory lock of its own (the caller holds it). Built from sqlx's own fields, as `migrate!` does:
/// they are exempt from semver, so a sqlx upgrade must check this (Cargo.lock pins the version).
pub fn migrator(migrations: Vec<Migration>) -> Migrator {
    Migrator {
        migrations: Cow::Owned(migrations),
        ignore_missing: true,
        locking: false,
        ..Migrator::DEFAULT
    }
}

/// Applies the migrations of `migrator` that the database lacks, on a connection opened for it and
/// closed at the end whatever happened.
pub async fn apply(
    database_url: &str,
    settings: &MigrationSettings,
    migrator: &Migrator,
) -> Result<(), MigrationError> {
    let mut connection = within(UNANSWERED, connect(database_url, settings))
        .await?
        .context("Failed to open the migration connection")?;
    let applied = apply_on(&mut connection, settings, migrator).await;
    // Ending the session releases the advisory lock and rolls back anything open, on success or not.
    // A server that does not answer the goodbye gets the socket closed when the connection is dropped.
    let _ = tokio::time::timeout(Duration::from_secs(5), connection.close()).await;
    applied
}

/// A connection for schema work (migrations, and the partition maintenance of `retention`): the
/// `statement_timeout` of `DB_MIGRATION_TIMEOUT_SECS`, no bound on lock waits until the caller sets one,
/// and the pools' keepalives.
pub(crate) async fn connect(
    database_url: &str,
    settings: &MigrationSettings,
) -> anyhow::Result<PgConnection> {
    let options = PgConnectOptions::from_str(database_url)
        .context("DATABASE_URL is not a valid PostgreSQL URL")?
        .application_name("consumer-migrations")
        .options([
            (
                "statement_timeout",
                format!("{}ms", settings.statement_timeout.as_millis()),
            ),
            // No lock_timeout while waiting for the advisory lock: that wait blocks no table.
            ("lock_timeout", "0".to_owned()),
            (
                "tcp_keepalives_idle",
                settings.tcp_keepalive_secs.to_string(),
            ),
            ("tcp_keepalives_interval", "5".to_owned()),
            ("tcp_keepalives_count", "3".to_owned()),
        ]);
    Ok(options.connect().await?)
}

async fn apply_on(
    connection: &mut PgConnection,
    settings: &MigrationSettings,
    migrator: &Migrator,
) -> Result<(), MigrationError> {
    // The same advisory lock as sqlx's Migrator takes, so replicas of this and of earlier versions
    // starting together apply each migration once.
    let locked = with_progress(connection.lock(), settings.progress_every, |waited| {
        tracing::info!(
            waited_secs = waited.as_secs(),
            "waiting for another replica to finish applying migrations"
        );
    });
    within(settings.statement_timeout + UNANSWERED, locked)
        .await?
        .context("Failed to take the migration lock")?;
    let set = format!(
        "SET lock_timeout = '{}ms'",
        settings.lock_timeout.as_millis()
    );
    within(UNANSWERED, sqlx::query(&set).execute(&mut *connection))
        .await?
        .context("Failed to set the migration lock timeout")?;
    within(UNANSWERED, connection.ensure_migrations_table())
        .await?
        .context("Failed to create the migrations table")?;
    let applied: HashSet<i64> = within(UNANSWERED, connection.list_applied_migrations())
        .await?
        .context("Failed to list the applied migrations")?
        .into_iter()
        .map(|m| m.version)
        .collect();
    let known: HashSet<i64> = migrator.iter().map(|m| m.version).collect();
    let mut unknown: Vec<i64> = applied.difference(&known).copied().collect();
    if !unknown.is_empty() {
        unknown.sort_unstable();
        tracing::warn!(
            versions = ?unknown,
            "the database has migrations this version does not know (applied by a newer release): \
             running on that schema, as expand/contract migrations allow"
        );
    }
    let pending: Vec<&Migration> = migrator
        .iter()
        .filter(|m| !m.migration_type.is_down_migration() && !applied.contains(&m.version))
        .collect();
    if pending.is_empty() {
        tracing::info!("the database schema is up to date");
    }
    for migration in pending {
        apply_one(connection, settings, migrator, migration).await?;
    }
    within(UNANSWERED, connection.unlock())
        .await?
        .context("Failed to release the migration lock")?;
    Ok(())
}

/// Applies `migration` (every earlier one is applied), trying again while it cannot have its lock.
async fn apply_one(
    connection: &mut PgConnection,
    settings: &MigrationSettings,
    migrator: &Migrator,
    migration: &Migration,
) -> Result<(), MigrationError> {
    let (version, description) = (migration.version, migration.description.to_string());
    // sqlx's Migrator applies what is missing; given the migrations up to this one, it applies this one
    // alone, checking the checksums of those before it.
    let step = self::migrator(
        migrator
            .iter()
            .filter(|m| m.version <= version)
            .cloned()
            .collect(),
    );
    let mut backoff = Backoff::starting_at(settings.lock_timeout.min(Duration::from_millis(500)));
    for attempt in 1.. {
        if migration.no_tx {
            within(UNANSWERED, drop_invalid_indexes(connection))
                .await?
                .context("Failed to remove an index left unfinished")?;
        }
        let started = Instant::now();
        tracing::info!(version, %description, attempt, "applying migration");
        let run = step.run_direct(&mut *connection);
        let result = with_progress(run, settings.progress_every, |elapsed| {
            tracing::info!(
                version,
                %description,
                elapsed_secs = elapsed.as_secs(),
                "still applying migration"
            );
        });
        let result = within(settings.statement_timeout + UNANSWERED, result).await?;
        let elapsed = started.elapsed();
        match result {
            Ok(()) => {
                tracing::info!(
                    version,
                    %description,
                    duration_ms = elapsed.as_millis() as u64,
                    "applied migration"
                );
                return Ok(());
            }
            Err(error) if sqlstate(&error) == Some("55P03") => {
                let delay = backoff.next_delay();
                tracing::warn!(
                    version,
                    %description,
                    attempt,
                    lock_timeout_ms = settings.lock_timeout.as_millis() as u64,
                    retry_in = ?delay,
                    "migration could not take its table lock within DB_MIGRATION_LOCK_TIMEOUT_MS; \
                     it let the table's readers and writers go on and will try again"
                );
                tokio::time::sleep(delay).await;
            }
            Err(error) if sqlstate(&error) == Some("57014") => {
                return Err(MigrationError::TimedOut {
                    version,
                    description,
                    limit: settings.statement_timeout,
                });
            }
            Err(error) => {
                return Err(anyhow::Error::new(error)
                    .context(format!(
                        "Failed to apply migration {version} ({description})"
                    ))
                    .into())
            }
        }
    }
    unreachable!("the attempts never run out")
}

/// Drops the indexes of `messages` that are marked invalid: what a `CREATE INDEX CONCURRENTLY` leaves
/// when it fails (a lock it could not have, a lost connection). `IF NOT EXISTS` would take one for done,
/// so it is removed first, and built again. Only the replica holding the migration lock builds indexes,
/// so none of these is being built now.
pub(crate) async fn drop_invalid_indexes(connection: &mut PgConnection) -> Result<(), sqlx::Error> {
    let invalid: Vec<String> = sqlx::query_scalar(
        "SELECT quote_ident(n.nspname) || '.' || quote_ident(c.relname) \
         FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid \
         JOIN pg_namespace n ON n.oid = c.relnamespace \
         WHERE NOT i.indisvalid AND i.indrelid = 'messages'::regclass",
    )
    .fetch_all(&mut *connection)
    .await?;
    for index in invalid {
        tracing::warn!(%index, "dropping an index that an interrupted build left invalid");
        sqlx::query(&format!("DROP INDEX CONCURRENTLY IF EXISTS {index}"))
            .execute(&mut *connection)
            .await?;
    }
    Ok(())
}

/// The SQLSTATE of the database error behind `error`, if it is one.
fn sqlstate(error: &MigrateError) -> Option<&str> {
    let database = match error {
        MigrateError::ExecuteMigration(sqlx::Error::Database(db), _)
        | MigrateError::Execute(sqlx::Error::Database(db)) => db,
        _ => return None,
    };
    let code = database.code()?;
    // `code()` borrows from the error; the two codes looked for are static.
    ["55P03", "57014"].into_iter().find(|c| *c == code)
}

/// `work`, or an error once `limit` has passed without an answer (the connection is then dropped,
/// which closes its socket).
async fn within<T>(limit: Duration, work: impl Future<Output = T>) -> anyhow::Result<T> {
    tokio::time::timeout(limit, work).await.map_err(|_| {
        anyhow::anyhow!("PostgreSQL did not answer within {limit:?}; giving up this connection")
    })
}

/// Runs `work`, calling `report` with the time spent every `every` until it finishes.
async fn with_progress<T>(
    work: impl Future<Output = T>,
    every: Duration,
    mut report: impl FnMut(Duration),
) -> T {
    let started = Instant::now();
    let mut ticks = tokio::time::interval_at(started + every, every);
    tokio::pin!(work);
    loop {
        tokio::select! {
            done = &mut work => return done,
            _ = ticks.tick() => report(started.elapsed()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_released_migrations_are_known_and_through_stops_at_the_version_given() {
        assert!(MIGRATOR.version_exists(LAST_RELEASED));
        let first = MIGRATOR.iter().next().expect("a migration").version;
        let step = through(first);
        assert_eq!(step.iter().count(), 1);
        assert!(step.ignore_missing && !step.locking);
        assert_eq!(through(i64::MAX).iter().count(), MIGRATOR.iter().count());
    }

    #[tokio::test]
    async fn a_long_step_reports_progress_at_each_interval_and_returns_its_value() {
        let mut reports = Vec::new();
        let value = with_progress(
            async {
                tokio::time::sleep(Duration::from_millis(1000)).await;
                7
            },
            Duration::from_millis(300),
            |elapsed| reports.push(elapsed),
        )
        .await;
        assert_eq!(value, 7);
        // Three intervals fit in the step; a busy machine may deliver the last one after it ended.
        assert!((2..=3).contains(&reports.len()), "{reports:?}");
        assert!(
            reports.windows(2).all(|w| w[0] < w[1]) && reports[0] >= Duration::from_millis(300),
            "{reports:?}"
        );
    }
}
