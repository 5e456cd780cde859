//! How long an upgrade from each earlier release keeps the table's users waiting, at table sizes given
//! in `UPGRADE_ROWS` (default 1 and 3 million rows): on demand, by scripts/upgrade-check, which prints
//! these figures for docs/upgrades.md.

use std::time::{Duration, Instant};

use consumer::migrations::{self, LAST_RELEASED};
use end_to_end::{eventually, readiness, spawn_consumer, StackConfig};
use sqlx::migrate::Migrator;

use super::{
    next_release_expand,
    stall::{fill, probe, settings, ScratchDatabase},
    with_extra, FIRST_RELEASE,
};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "fills tables of millions of rows: scripts/upgrade-check"]
async fn lock_durations_of_an_upgrade_from_each_earlier_release() {
    let sizes: Vec<u64> = std::env::var("UPGRADE_ROWS")
        .unwrap_or_else(|_| "1000000,3000000".into())
        .split(',')
        .map(|n| {
            n.trim()
                .parse()
                .expect("UPGRADE_ROWS: row counts separated by commas")
        })
        .collect();
    let cases: [(&str, Migrator, Migrator); 3] = [
        (
            "first release (20261122, jsonb) -> this release",
            migrations::through(FIRST_RELEASE),
            migrations::through(i64::MAX),
        ),
        (
            "later releases (20261201) -> this release",
            migrations::through(LAST_RELEASED),
            migrations::through(i64::MAX),
        ),
        (
            "this release -> an expand step (nullable column)",
            migrations::through(i64::MAX),
            with_extra(next_release_expand()),
        ),
    ];
    for rows in sizes {
        for (case, from, to) in &cases {
            let database = ScratchDatabase::with_schema(from).await;
            fill(&database, rows).await;
            let pending = to.iter().count() - from.iter().count();
            let (applied, stalls) =
                probe(&database, migrations::apply(&database.url, &settings(), to)).await;
            applied.expect("migration applied");
            let millions = rows as f64 / 1e6;
            println!(
                "UPGRADE {case}: {rows} rows, {pending} migration(s): applied in {:.2} s; longest \
                 write {:.2} s, longest read {:.2} s ({:.2} s per million rows); {} writes, {} reads \
                 meanwhile",
                stalls.work.as_secs_f64(),
                stalls.write.as_secs_f64(),
                stalls.read.as_secs_f64(),
                stalls.longest().as_secs_f64() / millions,
                stalls.writes,
                stalls.reads,
            );
        }
    }
}

/// The consumer itself on a first-release table of `UPGRADE_CONSUMER_ROWS` rows (default 6 million),
/// with the default settings (a 10 s statement timeout on its pools): it applies the rewrite once and
/// becomes ready, where the earlier releases' consumer cancelled it and retried for ever.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "fills a table of millions of rows: scripts/upgrade-check"]
async fn a_consumer_upgrades_a_large_first_release_table_and_becomes_ready() {
    // Arrange
    let rows: u64 = std::env::var("UPGRADE_CONSUMER_ROWS")
        .map(|n| n.parse().expect("UPGRADE_CONSUMER_ROWS: a row count"))
        .unwrap_or(6_000_000);
    let mut config = StackConfig::unique();
    let database = ScratchDatabase::with_schema(&migrations::through(FIRST_RELEASE)).await;
    fill(&database, rows).await;
    config.database = database.name.clone();
    config.consumer.database.database_url = database.url.clone();
    let started = Instant::now();

    // Act
    let consumer = spawn_consumer(&config.consumer);
    let http = reqwest::Client::new();
    eventually(
        Duration::from_secs(900),
        "the consumer to be ready",
        || async { (readiness(&http, &consumer.url).await == 200).then_some(()) },
    )
    .await;

    // Assert
    let ready = started.elapsed();
    let pool = sqlx::PgPool::connect(&database.url).await.unwrap();
    let (count, column): (i64, String) = sqlx::query_as(
        "SELECT (SELECT count(*) FROM messages), (SELECT data_type FROM information_schema.columns \
         WHERE table_name = 'messages' AND column_name = 'message_attributes')",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!((count, column.as_str()), (rows as i64, "json"));
    println!(
        "UPGRADE the consumer on a first-release table of {rows} rows: ready after {:.1} s, migrated \
         once",
        ready.as_secs_f64()
    );
    pool.close().await;
    consumer.stop().await.unwrap();
    end_to_end::remove_resources(&config.queue, &config.database).await;
}
