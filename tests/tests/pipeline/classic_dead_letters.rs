//! With `QUEUE_TYPE=classic` the setup step sets no length limit on `.dead`: a classic queue
//! dead-letters at most once, so a dead letter refused at the limit would be dropped.

use std::time::Duration;

use common::amqp::QueueType;
use end_to_end::{broker_users::BrokerPolicy, eventually, StackConfig, TestStack};

use crate::fixtures::message_from;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_classic_queues_every_dead_letter_reaches_the_dead_letter_queue_past_its_limit() {
    // Arrange: classic queues, a limit of 1, and whatever policy the setup step gives for them.
    let mut config = StackConfig::unique();
    config.publisher.broker.queue_type = QueueType::Classic;
    config.consumer.broker.queue_type = QueueType::Classic;
    config.consumer.dead_letters.dead_letter_limit = 1;
    let stack = TestStack::start_with(config).await;
    let _policy = consumer::dead_letter_limit(&stack.consumer_config)
        .map(|policy| BrokerPolicy::apply(&policy));

    // Act: three messages that can never be stored.
    for n in 0..3 {
        stack
            .publish_raw(format!("not JSON, number {n}").as_bytes())
            .await;
    }
    let stored = stack.publish_ok(&message_from("still flowing")).await;
    stack.wait_stored(stored).await;

    // Assert: all three kept.
    eventually(
        Duration::from_secs(15),
        "three dead letters in .dead",
        || async { (stack.queue_depth(".dead").await == 3).then_some(()) },
    )
    .await;
    assert_eq!(stack.row_count().await, 1);
}
