//! Turning on `RETENTION` on a live table: the conversion to partitions.

use chrono::Utc;
use consumer::migrations::MIGRATOR;
use end_to_end::StackConfig;

use super::{
    stall::{fill, probe, ScratchDatabase, STALL_BOUND},
    CI_ROWS,
};

/// `RETENTION` set on a table of 300,000 rows while a writer and a reader run, by three pods whose
/// maintenance starts at the same moment: one converts the table, the others skip the round; every row
/// is kept, the writer's rows included, and neither the writer nor the reader waits past the bound.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_live_table_is_partitioned_once_by_pods_starting_together_keeping_every_row() {
    // Arrange
    let database = ScratchDatabase::with_schema(&MIGRATOR).await;
    fill(&database, CI_ROWS).await;
    let mut config = StackConfig::unique().consumer;
    config.database.database_url = database.url.clone();
    config.retention.retention = "7d".into();
    let now = Utc::now();

    // Act
    let pods = futures::future::join_all((0..3).map(|_| consumer::maintenance_round(&config, now)));
    let (rounds, stalls) = probe(&database, pods).await;
    let again = consumer::maintenance_round(&config, now).await.unwrap();

    // Assert
    let rounds: Vec<_> = rounds.into_iter().map(|r| r.unwrap()).collect();
    println!("{rounds:?}\n{stalls:?}");
    assert_eq!(
        rounds.iter().filter(|r| r.converted).count(),
        1,
        "{rounds:?}"
    );
    assert!(rounds.iter().all(|r| r.converted || !r.ran), "{rounds:?}");
    assert!(again.ran && !again.converted, "{again:?}");
    let mut connection = database.connect().await;
    let (kind, rows): (String, i64) = sqlx::query_as(
        "SELECT (SELECT relkind::text FROM pg_class WHERE oid = 'messages'::regclass), count(*) \
         FROM messages",
    )
    .fetch_one(&mut connection)
    .await
    .unwrap();
    assert_eq!(kind, "p");
    assert_eq!(rows, CI_ROWS as i64 + stalls.writes as i64);
    assert!(
        stalls.longest() < STALL_BOUND,
        "the conversion kept the table's users waiting {:?}",
        stalls.longest()
    );
}
