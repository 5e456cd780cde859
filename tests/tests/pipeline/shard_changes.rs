//! Changing `QUEUE_SHARDS` on a running pipeline: down, up, back to one queue, and with a publisher still
//! at the old count. Whatever a publisher accepted is stored; no shard queue is left holding messages.

use std::time::Duration;

use consumer::config::Config as ConsumerConfig;
use end_to_end::{eventually, spawn_consumer, spawn_publisher, StackConfig, TestStack};
use publisher::config::Config as PublisherConfig;
use uuid::Uuid;

use crate::fixtures::message_from;

/// Both services' configurations with `shards` queues.
fn with_shards(config: &StackConfig, shards: u16) -> (PublisherConfig, ConsumerConfig) {
    let (mut publisher, mut consumer) = (config.publisher.clone(), config.consumer.clone());
    publisher.broker.queue_shards = shards;
    consumer.broker.queue_shards = shards;
    (publisher, consumer)
}

/// Publishes `count` messages from `sender` in one batch and returns their ids.
async fn publish(stack: &TestStack, sender: &str, count: usize) -> Vec<Uuid> {
    let batch: Vec<_> = (0..count).map(|_| message_from(sender)).collect();
    stack.publish_batch_ok(&batch).await
}

/// Stops whatever runs and starts both services again with `publisher` and `consumer`.
async fn restart_both(
    stack: &mut TestStack,
    publisher: &PublisherConfig,
    consumer: &ConsumerConfig,
) {
    if let Some(running) = stack.publisher.take() {
        running.stop().await.expect("publisher stops");
    }
    if let Some(running) = stack.consumer.take() {
        running.stop().await.expect("consumer stops");
    }
    stack.publisher = Some(spawn_publisher(publisher));
    stack.wait_ready(stack.publisher_url()).await;
    stack.consumer = Some(spawn_consumer(consumer));
    stack.wait_ready(stack.consumer_url()).await;
}

/// Waits until every one of `ids` is stored once, and every queue named by `suffixes` is empty.
async fn all_stored_and_drained(stack: &TestStack, ids: &[Uuid], suffixes: &[&str]) {
    let expected = i64::try_from(ids.len()).expect("a small count");
    eventually(
        Duration::from_secs(30),
        "every accepted id stored",
        || async { (stack.rows_for(ids).await == (expected, expected)).then_some(()) },
    )
    .await;
    eventually(Duration::from_secs(10), "every queue drained", || async {
        for suffix in suffixes {
            if stack.queue_depth(suffix).await != 0 {
                return None;
            }
        }
        Some(())
    })
    .await;
}

/// Whether the consumer's `/metrics` has a `consumer_queue_messages` series for `queue`.
async fn exports_depth_of(stack: &TestStack, queue: &str) -> bool {
    let text = end_to_end::metrics_text(&stack.http, stack.consumer_url()).await;
    text.contains(&format!(
        r#"consumer_queue_messages{{queue="{queue}",state="ready"}}"#
    ))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn going_from_four_shards_to_two_stores_what_the_dropped_shards_held_and_routes_nothing_there(
) {
    // Arrange: four shards filled while no consumer runs.
    let config = StackConfig::unique();
    let (four, _) = with_shards(&config, 4);
    let (two_publisher, two_consumer) = with_shards(&config, 2);
    let mut stack = TestStack::start_publisher_only(StackConfig {
        publisher: four,
        ..config
    })
    .await;
    let mut ids = publish(&stack, "at-four", 200).await;
    assert!(stack.queue_depth(".3").await > 0, "shard 3 holds messages");

    // Act: both services with two shards, then more messages.
    restart_both(&mut stack, &two_publisher, &two_consumer).await;
    ids.extend(publish(&stack, "at-two", 200).await);

    // Assert
    all_stored_and_drained(&stack, &ids, &["", ".0", ".1", ".2", ".3"]).await;
    let queue = stack.queue.clone();
    eventually(
        Duration::from_secs(10),
        "the dropped shards in the consumer's metrics",
        || async {
            (exports_depth_of(&stack, &format!("{queue}.2")).await
                && exports_depth_of(&stack, &format!("{queue}.3")).await)
                .then_some(())
        },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn going_from_two_shards_to_four_stores_everything() {
    // Arrange
    let config = StackConfig::unique();
    let (two, _) = with_shards(&config, 2);
    let (four_publisher, four_consumer) = with_shards(&config, 4);
    let mut stack = TestStack::start_publisher_only(StackConfig {
        publisher: two,
        ..config
    })
    .await;
    let mut ids = publish(&stack, "at-two", 200).await;

    // Act
    restart_both(&mut stack, &four_publisher, &four_consumer).await;
    ids.extend(publish(&stack, "at-four", 200).await);

    // Assert
    all_stored_and_drained(&stack, &ids, &["", ".0", ".1", ".2", ".3"]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn going_from_four_shards_back_to_one_queue_stores_everything_once() {
    // Arrange
    let config = StackConfig::unique();
    let (four, _) = with_shards(&config, 4);
    let (one_publisher, one_consumer) = with_shards(&config, 1);
    let mut stack = TestStack::start_publisher_only(StackConfig {
        publisher: four,
        ..config
    })
    .await;
    let mut ids = publish(&stack, "at-four", 200).await;

    // Act
    restart_both(&mut stack, &one_publisher, &one_consumer).await;
    ids.extend(publish(&stack, "at-one", 200).await);

    // Assert: stored once each, and nothing routed to the shards any more.
    all_stored_and_drained(&stack, &ids, &["", ".0", ".1", ".2", ".3", ".unrouted"]).await;
    let stored = stack.row_count().await;
    assert_eq!(stored, 400, "one row per accepted message");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_publisher_still_at_four_shards_loses_nothing_to_a_consumer_at_two() {
    // Arrange: the four shards exist; a consumer starts with two; then a publisher at the old count
    // (re)starts and binds all four again, as one not yet updated in a rolling update does.
    let config = StackConfig::unique();
    let (four_publisher, _) = with_shards(&config, 4);
    let (_, two_consumer) = with_shards(&config, 2);
    let mut stack = TestStack::start_publisher_only(StackConfig {
        publisher: four_publisher.clone(),
        ..config
    })
    .await;
    stack.consumer = Some(spawn_consumer(&two_consumer));
    stack.wait_ready(stack.consumer_url()).await;
    stack
        .publisher
        .take()
        .expect("running")
        .stop()
        .await
        .unwrap();
    stack.publisher = Some(spawn_publisher(&four_publisher));
    stack.wait_ready(stack.publisher_url()).await;

    // Act
    let ids = publish(&stack, "old-publisher", 300).await;

    // Assert
    all_stored_and_drained(&stack, &ids, &[".0", ".1", ".2", ".3"]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shard_queues_a_publisher_at_more_shards_declares_later_are_drained_by_a_running_consumer()
{
    // Arrange: a consumer at two shards, running, and only then a publisher at four, which declares
    // `.2` and `.3` and routes to them, as one updated before the consumers does.
    let mut config = StackConfig::unique();
    config.consumer.scaling.queue_watch_interval_ms = 100;
    let (two_publisher, two_consumer) = with_shards(&config, 2);
    let (four_publisher, _) = with_shards(&config, 4);
    let mut stack = TestStack::start_publisher_only(StackConfig {
        publisher: two_publisher,
        ..config
    })
    .await;
    stack.consumer = Some(spawn_consumer(&two_consumer));
    stack.wait_ready(stack.consumer_url()).await;
    stack
        .publisher
        .take()
        .expect("running")
        .stop()
        .await
        .unwrap();
    stack.publisher = Some(spawn_publisher(&four_publisher));
    stack.wait_ready(stack.publisher_url()).await;

    // Act
    let ids = publish(&stack, "newer-publisher", 300).await;

    // Assert
    all_stored_and_drained(&stack, &ids, &[".0", ".1", ".2", ".3"]).await;
}
