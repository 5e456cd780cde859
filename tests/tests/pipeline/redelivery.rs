use chrono::Utc;
use common::{Message, QueuedMessage};
use end_to_end::TestStack;
use uuid::Uuid;

use crate::fixtures::message_from;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_same_message_delivered_twice_is_stored_once() {
    // Arrange
    let stack = TestStack::start().await;
    let queued = QueuedMessage {
        id: Uuid::now_v7(),
        received_at: Utc::now(),
        message: serde_json::from_value::<Message>(message_from("twice")).unwrap(),
        fingerprint: None,
    };

    // Act
    stack.publish_raw(&queued.to_payload()).await;
    stack.publish_raw(&queued.to_payload()).await;
    let sentinel = stack.publish_ok(&message_from("sentinel")).await;
    stack.wait_stored(sentinel).await;

    // Assert
    assert_eq!(stack.rows_for(&[queued.id]).await, (1, 1));
    assert_eq!(stack.row_count().await, 2);
    let metrics = stack.get("/metrics").await.text().await.unwrap();
    assert!(
        metrics.contains("consumer_messages_duplicate_total 1"),
        "{metrics}"
    );
}
