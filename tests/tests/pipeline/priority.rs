use common::amqp::QueueType;
use end_to_end::{StackConfig, TestStack};
use serde_json::json;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_classic_queue_delivers_a_backlog_highest_priority_first() {
    // Arrange: a classic queue and no consumer, so the messages wait as a backlog.
    let mut config = StackConfig::unique();
    config.publisher.broker.queue_type = QueueType::Classic;
    let stack = TestStack::start_publisher_only(config).await;
    let priorities = [3, 0, 9, 5, 1, 7, 2, 8, 4, 6];

    // Act
    for priority in priorities {
        stack
            .publish_ok(&json!({ "sender": "p", "priority": priority }))
            .await;
    }
    let delivered = stack.drain_priorities().await;

    // Assert
    assert_eq!(delivered, vec![9, 8, 7, 6, 5, 4, 3, 2, 1, 0]);
}
