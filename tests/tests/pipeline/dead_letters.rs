use std::time::Duration;

use chrono::{TimeZone, Utc};
use common::{Message, QueuedMessage};
use end_to_end::{
    broker_users::{broker_message_count, BrokerPolicy},
    eventually, TestStack,
};
use uuid::Uuid;

use crate::fixtures::message_from;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn poison_messages_go_to_the_dead_letter_queue_with_their_reason_and_the_rest_are_stored() {
    // Arrange: an undecodable payload, one that breaks a message rule, and one PostgreSQL refuses
    // (a time 7,000 years before timestamptz's earliest).
    let stack = TestStack::start().await;
    let breaks_a_rule = format!(
        r#"{{"id":"{}","received_at":"2026-01-01T00:00:00Z","message":{{"sender":"s","priority":42}}}}"#,
        Uuid::now_v7()
    );
    let refused_by_database = QueuedMessage {
        id: Uuid::now_v7(),
        received_at: Utc.with_ymd_and_hms(-7000, 1, 1, 0, 0, 0).unwrap(),
        message: serde_json::from_value::<Message>(message_from("ancient")).unwrap(),
        fingerprint: None,
    };
    let before = stack.publish_ok(&message_from("before the poison")).await;

    // Act
    stack.publish_raw(b"this is not JSON").await;
    stack.publish_raw(breaks_a_rule.as_bytes()).await;
    stack.publish_raw(&refused_by_database.to_payload()).await;
    let after = stack.publish_ok(&message_from("after the poison")).await;

    // Assert
    stack.wait_stored(before).await;
    stack.wait_stored(after).await;
    eventually(Duration::from_secs(10), "three dead letters", || async {
        (stack.queue_depth(".dead").await == 3).then_some(())
    })
    .await;
    assert_eq!(stack.row_count().await, 2);
    assert_eq!(stack.queue_depth("").await, 0);
    let reasons = stack.drain_dead_letter_reasons().await;
    assert!(
        reasons[0].starts_with("undecodable: expected"),
        "{reasons:?}"
    );
    assert!(
        reasons[1].starts_with("undecodable: priority: must be an integer from 0 to 9"),
        "{reasons:?}"
    );
    assert!(
        reasons[2].starts_with("refused by PostgreSQL")
            && reasons[2].contains("timestamp out of range"),
        "{reasons:?}"
    );
}

/// `.dead` at its length limit (the setup step's policy, here of 1): further dead letters are refused and
/// counted, and each refused one is kept by its source queue (RabbitMQ's at-least-once dead-lettering),
/// none lost; once the limit is raised, new dead letters are taken again. (The broker moves the kept
/// ones on its own timer, `dead_letter_worker_publisher_confirm_timeout`, 180 s by default.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_dead_letter_queue_refuses_more_and_counts_them_and_loses_none() {
    let stack = TestStack::start().await;
    let topology = stack.consumer_config.broker.topology();
    let limit = BrokerPolicy::apply(&topology.dead_letter_policy(1));

    for n in 0..3 {
        stack
            .publish_raw(format!("not JSON, number {n}").as_bytes())
            .await;
    }
    let stored = stack.publish_ok(&message_from("still flowing")).await;
    stack.wait_stored(stored).await;
    // A quorum queue checks its limit as messages arrive, so one more than the limit can get in; every
    // dead letter is either in `.dead` or counted as refused and kept by the queue it came from.
    let refused = eventually(
        Duration::from_secs(30),
        "every dead letter settled",
        || async {
            let refused = stack
                .metric(stack.consumer_url(), "consumer_dead_letters_refused_total")
                .await as u64;
            let dead = u64::from(stack.queue_depth(".dead").await);
            let kept = broker_message_count(&stack.queue)?;
            (refused >= 1 && dead + refused == 3 && kept == refused).then_some(refused)
        },
    )
    .await;
    assert!(stack.queue_depth(".dead").await < 3, "the limit holds");
    eprintln!(
        "{refused} of 3 dead letters refused at a limit of 1, and kept by their source queue"
    );

    limit.replace(&topology.dead_letter_policy(10));
    stack.publish_raw(b"not JSON either").await;
    eventually(
        Duration::from_secs(30),
        "a new dead letter taken once the limit is raised",
        || async { (u64::from(stack.queue_depth(".dead").await) == 4 - refused).then_some(()) },
    )
    .await;
    assert_eq!(stack.row_count().await, 1);
}
