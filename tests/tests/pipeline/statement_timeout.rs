//! A message whose insert always runs past PostgreSQL's statement timeout (here made slow by a trigger)
//! in the middle of a batch.

use std::time::Duration;

use end_to_end::{eventually, StackConfig, TestStack};

use crate::fixtures::message_from;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_that_always_times_out_is_dead_lettered_and_the_rest_of_its_batch_is_stored() {
    // Arrange: inserting a row from sender `slow` takes longer than the statement timeout.
    let mut config = StackConfig::unique();
    config.consumer.database.db_statement_timeout_ms = 300;
    let stack = TestStack::start_with(config).await;
    for statement in [
        "CREATE FUNCTION slow_insert() RETURNS trigger LANGUAGE plpgsql AS $$ \
         BEGIN IF NEW.sender = 'slow' THEN PERFORM pg_sleep(2); END IF; RETURN NEW; END $$",
        "CREATE TRIGGER slow BEFORE INSERT ON messages \
         FOR EACH ROW EXECUTE FUNCTION slow_insert()",
    ] {
        sqlx::query(statement)
            .execute(&stack.db)
            .await
            .expect("the slow trigger is created");
    }

    // Act: one batch of 60 with the slow message among them.
    let batch: Vec<serde_json::Value> = (0..60)
        .map(|index| message_from(if index == 25 { "slow" } else { "quick" }))
        .collect();
    let ids = stack.publish_batch_ok(&batch).await;

    // Assert
    let quick: Vec<_> = ids
        .iter()
        .enumerate()
        .filter(|(i, _)| *i != 25)
        .map(|(_, id)| *id)
        .collect();
    eventually(
        Duration::from_secs(20),
        "the 59 quick messages stored",
        || async { (stack.rows_for(&quick).await == (59, 59)).then_some(()) },
    )
    .await;
    eventually(
        Duration::from_secs(10),
        "the slow one dead-lettered",
        || async { (stack.queue_depth(".dead").await == 1).then_some(()) },
    )
    .await;
    assert_eq!(stack.rows_for(&[ids[25]]).await, (0, 0));
    let reasons = stack.drain_dead_letter_reasons().await;
    assert!(
        reasons[0].starts_with("storing it alone ran into PostgreSQL's statement timeout")
            && reasons[0].contains("canceling statement due to statement timeout"),
        "{reasons:?}"
    );
    assert_eq!(stack.queue_depth("").await, 0);
}
