//! Readiness with several batch writers, one of which the database holds.

use std::time::Duration;

use end_to_end::{eventually, StackConfig, TestStack};

use crate::fixtures::message_from;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_held_write_makes_the_consumer_unready_even_while_another_writer_finishes() {
    // Arrange: two writers; inserting a row from sender `held` takes 4 s.
    let mut config = StackConfig::unique();
    config.consumer.scaling.writers_min = 2;
    config.consumer.scaling.writers_max = 2;
    config.consumer.database.db_stuck_write_ms = 500;
    let stack = TestStack::start_with(config).await;
    sqlx::query(
        "CREATE FUNCTION held_insert() RETURNS trigger LANGUAGE plpgsql AS $$ \
         BEGIN IF NEW.sender = 'held' THEN PERFORM pg_sleep(4); END IF; RETURN NEW; END $$",
    )
    .execute(&stack.db)
    .await
    .expect("function created");
    sqlx::query(
        "CREATE TRIGGER held BEFORE INSERT ON messages FOR EACH ROW EXECUTE FUNCTION held_insert()",
    )
    .execute(&stack.db)
    .await
    .expect("trigger created");

    // Act: one writer takes the held message; the other stores quick ones after it.
    let held = stack.publish_ok(&message_from("held")).await;
    eventually(Duration::from_secs(5), "the held insert to run", || async {
        let running: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() \
             AND state = 'active' AND query LIKE '%INSERT INTO messages%' \
             AND pid <> pg_backend_pid()",
        )
        .fetch_one(&stack.db)
        .await
        .ok()?;
        (running > 0).then_some(())
    })
    .await;
    let quick = stack.publish_ok(&message_from("quick")).await;
    stack.wait_stored(quick).await;

    // Assert: while the held write goes on, the consumer is not ready, and says why.
    let readyz = format!("{}/readyz", stack.consumer_url());
    let detail = eventually(
        Duration::from_secs(3),
        "readiness to see the held write",
        || async {
            let response = stack.http.get(&readyz).send().await.ok()?;
            (response.status() == 503).then_some(())?;
            let problem: serde_json::Value = response.json().await.ok()?;
            Some(problem["detail"].as_str()?.to_owned())
        },
    )
    .await;
    assert!(
        detail.contains("a write to the database has been running"),
        "{detail}"
    );
    assert_eq!(
        stack.rows_for(&[held]).await,
        (0, 0),
        "the held write is still running"
    );
    stack.wait_stored(held).await;
    stack.wait_ready(stack.consumer_url()).await;
}
