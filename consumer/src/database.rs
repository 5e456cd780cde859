//! The PostgreSQL pool, and preparing the database at start-up: create it if missing, check its
//! encoding, then apply the migrations (see [`crate::migrations`] for how they run).

use std::{str::FromStr, time::Duration};

use anyhow::Context;
use common::backoff::retry;
use sqlx::{
    migrate::MigrateDatabase,
    postgres::{PgConnectOptions, PgPoolOptions, PgSslMode},
    PgPool, Postgres,
};
use tokio_util::sync::CancellationToken;

use crate::{
    config::DatabaseConfig,
    migrations::{self, MigrationError, MigrationSettings, MIGRATOR},
};

/// The host of `database_url` when it is not this machine and its `sslmode` does not require TLS (the
/// default, `prefer`, goes on in plaintext when the server offers none), as sqlx reads the URL.
pub(crate) fn plaintext_host(database_url: &str) -> Option<String> {
    let options = PgConnectOptions::from_str(database_url).ok()?;
    let required = matches!(
        options.get_ssl_mode(),
        PgSslMode::Require | PgSslMode::VerifyCa | PgSslMode::VerifyFull
    );
    let host = options.get_host();
    let host = host.trim_start_matches('[').trim_end_matches(']');
    (!required && !common::amqp::is_local(host)).then(|| host.to_owned())
}

/// Logs a warning when `database_url` may be used in plaintext to a host off this machine.
pub(crate) fn warn_about_plaintext(database_url: &str) {
    if let Some(host) = plaintext_host(database_url) {
        tracing::warn!(
            %host,
            "DATABASE_URL does not require TLS (sslmode verify-full, verify-ca or require) for a host \
             off this machine: the connection may go on in plaintext"
        );
    }
}

impl DatabaseConfig {
    /// The pool ingestion writes with: `DB_POOL_SIZE` connections whose statements end after
    /// `DB_STATEMENT_TIMEOUT_MS`.
    pub fn write_pool(&self) -> anyhow::Result<PgPool> {
        self.lazy_pool(
            self.db_pool_size,
            Duration::from_millis(self.db_statement_timeout_ms),
        )
    }

    /// The pool `GET /message` reads with, which ingestion never shares: `DB_READ_POOL_SIZE`
    /// connections whose statements end after `DB_READ_TIMEOUT_MS`.
    pub fn read_pool(&self) -> anyhow::Result<PgPool> {
        self.lazy_pool(
            self.db_read_pool_size,
            Duration::from_millis(self.db_read_timeout_ms),
        )
    }

    /// A pool that connects lazily, so the service starts (and answers `/healthz`) while PostgreSQL is
    /// down. Every session gets PostgreSQL's `statement_timeout` (the server cancels a statement that
    /// runs longer, such as a lock wait) and `tcp_keepalives_idle` of `DB_TCP_KEEPALIVE_SECS`: the
    /// server probes an idle connection and ends the backend (releasing its locks) when the consumer's
    /// host is gone. sqlx 0.8 sets no keepalive on its own side; the write timeout bounds a write to a
    /// server that vanished.
    fn lazy_pool(&self, size: u32, statement_timeout: Duration) -> anyhow::Result<PgPool> {
        let options = PgConnectOptions::from_str(&self.database_url)
            .context("DATABASE_URL is not a valid PostgreSQL URL")?
            .options([
                (
                    "statement_timeout",
                    format!("{}ms", statement_timeout.as_millis()),
                ),
                (
                    "tcp_keepalives_idle",
                    self.db_tcp_keepalive_secs.to_string(),
                ),
                ("tcp_keepalives_interval", "5".to_owned()),
                ("tcp_keepalives_count", "3".to_owned()),
            ]);
        Ok(PgPoolOptions::new()
            .max_connections(size)
            // A request or batch waits at most this long for a connection before reporting the
            // database down.
            .acquire_timeout(Duration::from_secs(3))
            // Checked on acquire and recycled when idle, so connections killed by a restart are not
            // handed out.
            .test_before_acquire(true)
            .idle_timeout(Duration::from_secs(60))
            .connect_lazy_with(options))
    }
}

/// A database the consumer must not run against, whatever the retries: it stops the service.
#[derive(Debug, thiserror::Error)]
#[error("the database's encoding is {0}, not UTF8: it cannot store every sender and attribute a client may send; create the database with ENCODING 'UTF8'")]
pub(crate) struct NotUtf8(pub String);

/// Why the consumer stops instead of trying to prepare the database again.
#[derive(Debug, thiserror::Error)]
pub(crate) enum Unusable {
    #[error(transparent)]
    NotUtf8(#[from] NotUtf8),
    /// Trying again would hold the table's lock for as long again, and fail again.
    #[error(transparent)]
    MigrationTooLong(MigrationError),
}

/// Creates the database if needed, checks its encoding and migrates it, retrying with backoff until it
/// works or `cancel` fires. Returns whether the database is ready, or the reason it can never be.
pub(crate) async fn prepare(
    config: &DatabaseConfig,
    pool: &PgPool,
    cancel: &CancellationToken,
) -> Result<bool, Unusable> {
    let (database_url, migrations) = (&config.database_url, &MigrationSettings::of(config));
    let prepared = retry(
        "database not ready",
        cancel.cancelled(),
        || try_prepare(database_url, pool, migrations),
        |error| matches!(error, Prepare::Unusable(_)),
    )
    .await;
    match prepared {
        None => Ok(false),
        Some(Ok(())) => Ok(true),
        Some(Err(Prepare::Unusable(unusable))) => Err(unusable),
        Some(Err(Prepare::Retry(_))) => unreachable!("retried until it is final"),
    }
}

/// The outcome of one attempt to prepare the database.
#[derive(Debug, thiserror::Error)]
enum Prepare {
    #[error(transparent)]
    Unusable(#[from] Unusable),
    #[error(transparent)]
    Retry(#[from] anyhow::Error),
}

/// Checks and migrates the database, creating it first only if PostgreSQL says it does not exist: a
/// managed database's user often cannot reach the maintenance database that an existence check needs.
async fn try_prepare(
    database_url: &str,
    pool: &PgPool,
    migrations: &MigrationSettings,
) -> Result<(), Prepare> {
    match encoding(pool).await {
        Err(error) if is_missing(&error) => {
            // Another replica may create it at the same moment; only a failure that leaves it missing counts.
            if let Err(create) = Postgres::create_database(database_url).await {
                if !Postgres::database_exists(database_url)
                    .await
                    .unwrap_or(false)
                {
                    return Err(anyhow::Error::new(create)
                        .context("Failed to create the database")
                        .into());
                }
            }
            tracing::info!("created the database");
        }
        Err(error) => {
            return Err(anyhow::Error::new(error)
                .context("Failed to read the database's encoding")
                .into())
        }
        Ok(_) => {}
    }
    let encoding = encoding(pool)
        .await
        .context("Failed to read the database's encoding")?;
    if encoding != "UTF8" {
        return Err(Unusable::from(NotUtf8(encoding)).into());
    }
    match migrations::apply(database_url, migrations, &MIGRATOR).await {
        Ok(()) => Ok(()),
        Err(error @ MigrationError::TimedOut { .. }) => {
            Err(Unusable::MigrationTooLong(error).into())
        }
        Err(MigrationError::Other(error)) => {
            Err(error.context("Failed to apply migrations").into())
        }
    }
}

async fn encoding(pool: &PgPool) -> Result<String, sqlx::Error> {
    sqlx::query_scalar(
        "SELECT pg_encoding_to_char(encoding) FROM pg_database WHERE datname = current_database()",
    )
    .fetch_one(pool)
    .await
}

fn is_missing(error: &sqlx::Error) -> bool {
    matches!(error, sqlx::Error::Database(db) if db.code().as_deref() == Some("3D000"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_database_url_that_does_not_require_tls_off_this_machine_is_named() {
        let host = |url: &str| plaintext_host(url);
        assert_eq!(
            host("postgres://u:p@db.example:5432/m"),
            Some("db.example".into())
        );
        assert_eq!(
            host("postgres://u:p@db.example/m?sslmode=prefer"),
            Some("db.example".into())
        );
        assert_eq!(
            host("postgres://u:p@db.example/m?sslmode=verify-full&x=1"),
            None
        );
        assert_eq!(
            host("postgres://u@db.example/m?application_name=a&sslmode=require"),
            None
        );
        assert_eq!(host("postgres://postgres@127.0.0.1:5432/messages"), None);
        assert_eq!(host("postgres://u@[::1]:5432/m"), None);
        assert_eq!(host("postgres:///messages?host=/run/postgresql"), None);
        assert_eq!(
            host("postgres://u@[2001:db8::1]:5432/m"),
            Some("2001:db8::1".into())
        );
    }
}
