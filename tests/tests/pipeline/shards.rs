//! `QUEUE_SHARDS`: messages spread over several queues by the hash of their id, drained by every consumer,
//! and the move from one queue to several losing nothing.

use std::time::Duration;

use common::amqp::{QueueType, Topology};
use end_to_end::{amqp_url, eventually, spawn_consumer, spawn_publisher, StackConfig, TestStack};
use lapin::ConnectionProperties;
use uuid::Uuid;

use crate::fixtures::message_from;

/// A batch of `count` messages from `sender`.
fn batch(sender: &str, count: usize) -> Vec<serde_json::Value> {
    (0..count).map(|_| message_from(sender)).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn going_from_one_queue_to_four_shards_stores_what_the_one_queue_held_and_spreads_new_messages(
) {
    // Arrange: a publisher on one queue, and no consumer, so what it accepts stays in `<queue>`.
    let config = StackConfig::unique();
    let (mut sharded_publisher, mut sharded_consumer) =
        (config.publisher.clone(), config.consumer.clone());
    sharded_publisher.broker.queue_shards = 4;
    sharded_consumer.broker.queue_shards = 4;
    let mut stack = TestStack::start_publisher_only(config).await;
    let mut ids = stack.publish_batch_ok(&batch("before", 200)).await;
    assert_eq!(stack.queue_depth("").await, 200);

    // Act: both services again, with four shards.
    stack
        .publisher
        .take()
        .expect("running")
        .stop()
        .await
        .unwrap();
    stack.publisher = Some(spawn_publisher(&sharded_publisher));
    stack.wait_ready(stack.publisher_url()).await;
    ids.extend(stack.publish_batch_ok(&batch("after", 400)).await);
    let depths = [
        stack.queue_depth(".0").await,
        stack.queue_depth(".1").await,
        stack.queue_depth(".2").await,
        stack.queue_depth(".3").await,
    ];
    stack.consumer = Some(spawn_consumer(&sharded_consumer));
    stack.wait_ready(stack.consumer_url()).await;

    // Assert: the 400 new ones went to the shards, none to the old queue; all 600 are stored once.
    assert_eq!(depths.iter().sum::<u32>(), 400, "{depths:?}");
    assert!(
        depths.iter().all(|&depth| depth >= 40),
        "each shard takes a share: {depths:?}"
    );
    eventually(Duration::from_secs(30), "all 600 stored", || async {
        (stack.rows_for(&ids).await == (600, 600)).then_some(())
    })
    .await;
    eventually(Duration::from_secs(10), "every queue drained", || async {
        let mut depths = vec![stack.queue_depth("").await];
        for shard in 0..4 {
            depths.push(stack.queue_depth(&format!(".{shard}")).await);
        }
        depths.iter().all(|&depth| depth == 0).then_some(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_published_again_with_its_key_lands_in_the_shard_its_first_copy_went_to() {
    // Arrange
    let mut config = StackConfig::unique();
    config.publisher.broker.queue_shards = 4;
    let stack = TestStack::start_publisher_only(config).await;

    // Act: the same keyed message three times, as a client retrying would send it.
    for _ in 0..3 {
        let response = stack
            .http
            .post(format!("{}/message/publish", stack.publisher_url()))
            .header("Idempotency-Key", "retried-order")
            .json(&message_from("alice"))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 202);
    }

    // Assert
    let mut depths = Vec::new();
    for shard in 0..4 {
        depths.push(stack.queue_depth(&format!(".{shard}")).await);
    }
    depths.sort();
    assert_eq!(depths, [0, 0, 0, 3], "all three copies in one shard");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_replicas_declaring_the_sharded_topology_at_once_all_succeed() {
    // Arrange
    let queue = format!("test.{}", Uuid::new_v4().simple());
    let topology = Topology::new(&queue, QueueType::Quorum, 20, 4);
    let connection = common::amqp::BrokerAddress::new(amqp_url())
        .connect(ConnectionProperties::default())
        .await
        .expect("broker");

    // Act: eight declarations at once, each on a channel of its own, as replicas starting together do.
    let declarations = (0..8).map(|_| async {
        let channel = connection.create_channel().await?;
        topology.declare(&channel).await
    });
    let outcomes = futures::future::join_all(declarations).await;

    // Assert
    end_to_end::remove_resources(&queue, "unused").await;
    for outcome in outcomes {
        outcome.expect("a concurrent declaration succeeds");
    }
}
