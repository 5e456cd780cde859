//! Upgrades and rollbacks: migrations hold their locks briefly (the one released rewrite excepted), a
//! consumer runs on a schema a newer release expanded, and the queue envelope is read across versions.
//! `previous_release` runs the landed release's binaries against these (on demand: scripts/upgrade-check).

mod lock_figures;
mod partitioning;
mod previous_release;
mod stall;

use std::time::Duration;

use consumer::migrations::{self, MigrationError, MigrationSettings, LAST_RELEASED, MIGRATOR};
use end_to_end::{eventually, StackConfig, TestStack};
use sqlx::migrate::{Migration, MigrationType, Migrator};
use stall::{fill, probe, settings, ScratchDatabase, STALL_BOUND};
use uuid::Uuid;

use crate::fixtures::message_from;

/// The first release's only migration: a `jsonb` attribute column.
const FIRST_RELEASE: i64 = 20261122000000;

/// Rows in the table of a CI-sized upgrade (scripts/upgrade-check measures millions).
const CI_ROWS: u64 = 300_000;

/// What a next release would add, expand-style: a nullable column, recorded as a version newer than
/// any of this one.
fn next_release_expand() -> Migration {
    Migration::new(
        20990101000000,
        "next release expand".into(),
        MigrationType::Simple,
        "ALTER TABLE messages ADD COLUMN next_release_note text;".into(),
        false,
    )
}

/// Every migration of this version followed by `extra`.
fn with_extra(extra: Migration) -> Migrator {
    migrations::migrator(MIGRATOR.iter().cloned().chain([extra]).collect())
}

/// Every migration after the released ones, and the expand step a next release would make, applied to
/// a table of 300,000 rows while a writer and a reader run: none keeps them waiting past the bound.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_migration_after_the_released_ones_holds_its_locks_briefly() {
    let mut steps: Vec<Migration> = MIGRATOR
        .iter()
        .filter(|m| m.version > LAST_RELEASED)
        .cloned()
        .collect();
    steps.push(next_release_expand());
    for step in steps {
        // Arrange
        let before = migrations::migrator(
            MIGRATOR
                .iter()
                .filter(|m| m.version < step.version)
                .cloned()
                .collect(),
        );
        let database = ScratchDatabase::with_schema(&before).await;
        fill(&database, CI_ROWS).await;
        let through = if MIGRATOR.version_exists(step.version) {
            migrations::through(step.version)
        } else {
            with_extra(step.clone())
        };

        // Act
        let (applied, stalls) = probe(
            &database,
            migrations::apply(&database.url, &settings(), &through),
        )
        .await;

        // Assert
        applied.expect("migration applied");
        println!("{} ({}): {stalls:?}", step.version, step.description);
        assert!(
            stalls.longest() < STALL_BOUND,
            "migration {} ({}) kept the table's users waiting {:?} on {CI_ROWS} rows: rewrite \
             nothing large under an exclusive lock (expand/contract, docs/upgrades.md)",
            step.version,
            step.description,
            stalls.longest()
        );
    }
}

/// The same probe catches a rewrite: the released `20261201` (jsonb to json) on a first-release table
/// of 600,000 rows keeps writers and readers waiting for as long as it runs. This is the one known
/// exception, documented with its figures in docs/upgrades.md.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_released_rewrite_of_a_first_release_table_is_seen_as_a_stall() {
    // Arrange
    let database = ScratchDatabase::with_schema(&migrations::through(FIRST_RELEASE)).await;
    fill(&database, 2 * CI_ROWS).await;

    // Act
    let (applied, stalls) = probe(
        &database,
        migrations::apply(&database.url, &settings(), &MIGRATOR),
    )
    .await;

    // Assert
    applied.expect("migration applied");
    println!(
        "first release -> this one, {} rows: {stalls:?}",
        2 * CI_ROWS
    );
    assert!(
        stalls.longest() >= STALL_BOUND,
        "the rewrite went unnoticed: {stalls:?}"
    );
}

/// The rewrite runs on a connection of its own, without the ingest pool's statement timeout: a
/// first-release table whose rewrite takes longer than `DB_STATEMENT_TIMEOUT_MS` is migrated once,
/// and the consumer becomes ready and stores (before, the migration was cancelled and retried for ever).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rewrite_longer_than_the_statement_timeout_is_applied_once_and_the_consumer_becomes_ready(
) {
    // Arrange
    let mut config = StackConfig::unique();
    let database = ScratchDatabase::with_schema(&migrations::through(FIRST_RELEASE)).await;
    fill(&database, CI_ROWS).await;
    config.database = database.name.clone();
    config.consumer.database.database_url = database.url.clone();
    config.consumer.database.db_statement_timeout_ms = 100;

    // Act
    let stack = TestStack::start_with(config).await;
    let id = stack.publish_ok(&message_from("after the upgrade")).await;

    // Assert
    stack.wait_stored(id).await;
    let column: String = sqlx::query_scalar(
        "SELECT data_type FROM information_schema.columns \
         WHERE table_name = 'messages' AND column_name = 'message_attributes'",
    )
    .fetch_one(&stack.db)
    .await
    .unwrap();
    assert_eq!(column, "json");
    assert_eq!(stack.row_count().await, CI_ROWS as i64 + 1);
}

/// A rollback: this consumer starts on a database where a newer release recorded a migration it does
/// not know (an expand step), becomes ready, stores and serves (before, `VersionMissing` for ever).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_consumer_runs_on_a_schema_that_a_newer_release_expanded() {
    // Arrange
    let mut config = StackConfig::unique();
    let database = ScratchDatabase::with_schema(&with_extra(next_release_expand())).await;
    config.database = database.name.clone();
    config.consumer.database.database_url = database.url.clone();

    // Act
    let stack = TestStack::start_with(config).await;
    let id = stack.publish_ok(&message_from("during a rollback")).await;

    // Assert
    let stored = stack.wait_stored(id).await;
    assert_eq!(stored["sender"], "during a rollback");
    let newest: i64 = sqlx::query_scalar("SELECT max(version) FROM _sqlx_migrations")
        .fetch_one(&stack.db)
        .await
        .unwrap();
    assert_eq!(newest, next_release_expand().version);
}

/// While something holds a lock on the table (a long read), a migration gives up its wait after the
/// lock timeout and tries again, so readers and writers are never queued behind it for long; it is
/// applied once the lock is free.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_migration_waiting_for_a_lock_lets_readers_and_writers_through_and_applies_later() {
    // Arrange
    let database = ScratchDatabase::with_schema(&MIGRATOR).await;
    let mut holder = database.connect().await;
    for statement in ["BEGIN", "SELECT count(*) FROM messages"] {
        sqlx::query(statement).execute(&mut holder).await.unwrap();
    }
    let lock_timeout = Duration::from_millis(200);
    let settings = MigrationSettings {
        lock_timeout,
        ..settings()
    };
    let through = with_extra(next_release_expand());
    let migration = tokio::spawn({
        let url = database.url.clone();
        async move { migrations::apply(&url, &settings, &through).await }
    });

    // Act
    let ((), stalls) = probe(&database, tokio::time::sleep(Duration::from_secs(4))).await;
    let waiting = !migration.is_finished();
    sqlx::query("COMMIT").execute(&mut holder).await.unwrap();

    // Assert
    println!("while the migration waited: {stalls:?}");
    assert!(waiting, "the migration did not wait for the lock");
    assert!(
        stalls.longest() < lock_timeout + Duration::from_secs(1),
        "the table's users queued behind the migration: {stalls:?}"
    );
    tokio::time::timeout(Duration::from_secs(30), migration)
        .await
        .expect("the migration applies once the lock is free")
        .unwrap()
        .expect("migration applied");
}

/// A migration that runs past `DB_MIGRATION_TIMEOUT_SECS` is final (retrying would lock the table as
/// long again) and names the setting; its connection is closed, so the advisory lock is free and the
/// next replica applies what it can at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_migration_past_its_time_bound_fails_naming_it_and_leaves_no_lock_behind() {
    // Arrange
    let database = ScratchDatabase::with_schema(&MIGRATOR).await;
    let slow = Migration::new(
        20990101000000,
        "too slow".into(),
        MigrationType::Simple,
        "SELECT pg_sleep(5);".into(),
        false,
    );
    let settings = MigrationSettings {
        statement_timeout: Duration::from_secs(1),
        ..settings()
    };

    // Act
    let failed = migrations::apply(&database.url, &settings, &with_extra(slow)).await;

    // Assert
    let error = failed.expect_err("the migration is cut at its bound");
    assert!(matches!(error, MigrationError::TimedOut { .. }), "{error}");
    assert!(
        error.to_string().contains("DB_MIGRATION_TIMEOUT_SECS"),
        "{error}"
    );
    let pool = sqlx::PgPool::connect(&database.url).await.unwrap();
    eventually(
        Duration::from_secs(10),
        "the advisory lock to go",
        || async {
            let held: i64 = sqlx::query_scalar(
                "SELECT count(*) FROM pg_locks l JOIN pg_database d ON d.oid = l.database \
             WHERE l.locktype = 'advisory' AND d.datname = current_database()",
            )
            .fetch_one(&pool)
            .await
            .unwrap();
            (held == 0).then_some(())
        },
    )
    .await;
    pool.close().await;
    tokio::time::timeout(
        Duration::from_secs(5),
        migrations::apply(&database.url, &settings, &with_extra(next_release_expand())),
    )
    .await
    .expect("no lock left waiting for")
    .expect("applied");
}

/// The queue envelope ignores fields this version does not know (a newer publisher's), keyed or not,
/// while the message inside keeps its strict rules: an unknown field there is dead-lettered.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn envelope_fields_from_a_newer_publisher_are_ignored_and_the_message_is_stored() {
    // Arrange
    let stack = TestStack::start().await;
    let (plain, keyed, strict) = (Uuid::now_v7(), Uuid::now_v7(), Uuid::now_v7());
    let envelope = |id: Uuid, extra: &str, message: &str| {
        format!(
            r#"{{"id":"{id}","received_at":"2026-12-07T00:00:00Z","message":{message}{extra},"next_release":{{"v":2}}}}"#
        )
    };

    // Act
    stack
        .publish_raw(envelope(plain, "", r#"{"sender":"plain"}"#).as_bytes())
        .await;
    stack
        .publish_raw(envelope(keyed, r#","fingerprint":"0f""#, r#"{"sender":"keyed"}"#).as_bytes())
        .await;
    stack
        .publish_raw(envelope(strict, "", r#"{"sender":"s","colour":"red"}"#).as_bytes())
        .await;

    // Assert
    assert_eq!(stack.wait_stored(plain).await["sender"], "plain");
    assert_eq!(stack.wait_stored(keyed).await["sender"], "keyed");
    let reasons = eventually(Duration::from_secs(30), "the dead letter", || async {
        let reasons = stack.drain_dead_letter_reasons().await;
        (!reasons.is_empty()).then_some(reasons)
    })
    .await;
    assert_eq!(reasons.len(), 1, "{reasons:?}");
    assert!(reasons[0].contains("colour"), "{reasons:?}");
    assert_eq!(stack.rows_for(&[plain, keyed, strict]).await, (2, 2));
}
