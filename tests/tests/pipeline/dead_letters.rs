use std::time::Duration;

use end_to_end::{eventually, TestStack};
use uuid::Uuid;

use crate::fixtures::message_from;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn undecodable_payloads_go_to_the_dead_letter_queue_and_the_messages_after_them_are_stored() {
    // Arrange
    let stack = TestStack::start().await;
    let breaks_a_rule = format!(
        r#"{{"id":"{}","received_at":"2026-01-01T00:00:00Z","message":{{"sender":"s","priority":42}}}}"#,
        Uuid::now_v7()
    );

    // Act
    stack.publish_raw(b"this is not JSON").await;
    stack.publish_raw(breaks_a_rule.as_bytes()).await;
    let after = stack.publish_ok(&message_from("after the poison")).await;

    // Assert
    stack.wait_stored(after).await;
    eventually(Duration::from_secs(10), "two dead letters", || async {
        (stack.queue_depth(".dead").await == 2).then_some(())
    })
    .await;
    assert_eq!(stack.row_count().await, 1);
    assert_eq!(stack.queue_depth("").await, 0);
}
