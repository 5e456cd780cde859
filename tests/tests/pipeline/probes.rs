//! `/readyz` and `/metrics` ask the database on a pool ingestion does not use: a write that holds every
//! ingestion connection neither fails the probes nor waits behind them.

use std::time::Duration;

use end_to_end::{eventually, StackConfig, TestStack};

use crate::fixtures::message_from;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readiness_and_metrics_answer_while_a_write_holds_every_ingestion_connection() {
    // Arrange: one ingestion connection, and writes allowed to wait on a lock for a minute.
    let mut config = StackConfig::unique();
    config.consumer.database.db_pool_size = 1;
    config.consumer.database.db_stuck_write_ms = 60_000;
    config.consumer.database.db_statement_timeout_ms = 60_000;
    config.consumer.database.db_write_timeout_ms = 60_000;
    let stack = TestStack::start_with(config).await;
    let mut lock = stack.db.begin().await.expect("transaction");
    sqlx::query("LOCK TABLE messages IN ACCESS EXCLUSIVE MODE")
        .execute(&mut *lock)
        .await
        .expect("table locked");
    let id = stack.publish_ok(&message_from("waits for the lock")).await;
    let database = stack.database.clone();
    eventually(
        Duration::from_secs(10),
        "the consumer's insert waiting on the lock",
        || async {
            let waiting: i64 = sqlx::query_scalar(
                "SELECT count(*) FROM pg_stat_activity WHERE datname = $1 AND wait_event_type = 'Lock'",
            )
            .bind(&database)
            .fetch_one(&stack.db)
            .await
            .ok()?;
            (waiting > 0).then_some(())
        },
    )
    .await;

    // Act
    let mut statuses = Vec::new();
    for _ in 0..3 {
        statuses.push(stack.get("/readyz").await.status().as_u16());
    }
    let ready = stack.metric(stack.consumer_url(), "consumer_ready").await;

    // Assert
    assert_eq!(statuses, [200, 200, 200], "ready while ingestion waits");
    assert_eq!(ready, 1.0, "consumer_ready while ingestion waits");
    lock.rollback().await.expect("lock released");
    stack.wait_stored(id).await;
}
