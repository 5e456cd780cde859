//! The PostgreSQL pool, and preparing the database at start-up: create it if missing, then apply the
//! migrations (sqlx takes an advisory lock, so replicas starting together apply them once).

use std::{str::FromStr, time::Duration};

use anyhow::Context;
use common::backoff::Backoff;
use sqlx::{
    migrate::MigrateDatabase,
    postgres::{PgConnectOptions, PgPoolOptions},
    PgPool, Postgres,
};
use tokio_util::sync::CancellationToken;

/// A pool that connects lazily, so the service starts (and answers `/healthz`) while PostgreSQL is down.
pub fn lazy_pool(database_url: &str, size: u32) -> anyhow::Result<PgPool> {
    let options = PgConnectOptions::from_str(database_url)
        .context("DATABASE_URL is not a valid PostgreSQL URL")?;
    Ok(PgPoolOptions::new()
        .max_connections(size)
        // A request or batch waits at most this long for a connection before reporting the database down.
        .acquire_timeout(Duration::from_secs(3))
        // Checked on acquire and recycled when idle, so connections killed by a restart are not handed out.
        .test_before_acquire(true)
        .idle_timeout(Duration::from_secs(60))
        .connect_lazy_with(options))
}

/// Creates the database if needed and migrates it, retrying with backoff until it works or `cancel`
/// fires. Returns whether the database is ready.
pub async fn prepare(database_url: &str, pool: &PgPool, cancel: &CancellationToken) -> bool {
    let mut backoff = Backoff::new();
    loop {
        match try_prepare(database_url, pool).await {
            Ok(()) => return true,
            Err(error) => {
                let delay = backoff.next_delay();
                tracing::warn!(error = format!("{error:#}"), retry_in = ?delay, "database not ready");
                tokio::select! {
                    () = cancel.cancelled() => return false,
                    () = tokio::time::sleep(delay) => {}
                }
            }
        }
    }
}

/// Migrates the database, creating it first only if PostgreSQL says it does not exist: a managed
/// database's user often cannot reach the maintenance database that an existence check needs.
async fn try_prepare(database_url: &str, pool: &PgPool) -> anyhow::Result<()> {
    match migrate(pool).await {
        Err(error) if is_missing_database(&error) => {
            // Another replica may create it at the same moment; only a failure that leaves it missing counts.
            if let Err(create) = Postgres::create_database(database_url).await {
                if !Postgres::database_exists(database_url)
                    .await
                    .unwrap_or(false)
                {
                    return Err(create).context("Failed to create the database");
                }
            }
            tracing::info!("created the database");
            migrate(pool).await.context("Failed to apply migrations")
        }
        other => other.context("Failed to apply migrations"),
    }
}

async fn migrate(pool: &PgPool) -> Result<(), sqlx::migrate::MigrateError> {
    sqlx::migrate!("../migrations").run(pool).await
}

fn is_missing_database(error: &sqlx::migrate::MigrateError) -> bool {
    match error {
        sqlx::migrate::MigrateError::Execute(sqlx::Error::Database(db)) => {
            db.code().as_deref() == Some("3D000")
        }
        _ => false,
    }
}
