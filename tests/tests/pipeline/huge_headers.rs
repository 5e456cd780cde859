//! A message whose headers are larger than any publisher writes, put on the queue by another client.

use std::time::Duration;

use chrono::Utc;
use common::{Message, QueuedMessage};
use end_to_end::{amqp_url, eventually, TestStack};
use lapin::{
    options::BasicPublishOptions,
    types::{AMQPValue, FieldTable},
    BasicProperties, Connection, ConnectionProperties,
};
use uuid::Uuid;

use crate::fixtures::message_from;

/// Publishes a valid message carrying `header_bytes` of headers on a connection of the broker's own
/// frame size, as any AMQP client can; RabbitMQ delivers its content header as one frame.
async fn publish_with_huge_headers(queue: &str, header_bytes: usize) -> Uuid {
    let connection = Connection::connect(&amqp_url(), ConnectionProperties::default())
        .await
        .expect("broker reachable");
    let channel = connection.create_channel().await.expect("channel");
    channel
        .confirm_select(Default::default())
        .await
        .expect("confirm mode");
    let queued = QueuedMessage {
        id: Uuid::now_v7(),
        received_at: Utc::now(),
        message: serde_json::from_value::<Message>(message_from("huge headers")).unwrap(),
        fingerprint: None,
    };
    let mut headers = FieldTable::default();
    for index in 0..header_bytes / 1024 {
        headers.insert(
            format!("h{index}").into(),
            AMQPValue::LongString("x".repeat(1_000).into()),
        );
    }
    let confirm = channel
        .basic_publish(
            format!("{queue}.exchange").as_str().into(),
            queue.into(),
            BasicPublishOptions {
                mandatory: true,
                ..Default::default()
            },
            &queued.to_payload(),
            BasicProperties::default()
                .with_delivery_mode(2)
                .with_message_id(queued.id.to_string().into())
                .with_headers(headers),
        )
        .await
        .expect("publish")
        .await
        .expect("confirm");
    assert_eq!(confirm, lapin::Confirmation::Ack(None), "routed and taken");
    let _ = connection.close(200, "done".into()).await;
    queued.id
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_with_huge_headers_is_dead_lettered_with_its_reason_and_costs_its_neighbours_nothing(
) {
    // Arrange
    let stack = TestStack::start().await;

    // Act: 64 KiB of headers (four times the frame the consumer used to take), then 20 good messages.
    let huge = publish_with_huge_headers(&stack.queue, 64 * 1024).await;
    let good = stack.fill_queue(20).await;

    // Assert: the good ones are all stored promptly, once, and none of them is a dead letter.
    eventually(
        Duration::from_secs(15),
        "the 20 good messages stored",
        || async { (stack.rows_for(&good).await == (20, 20)).then_some(()) },
    )
    .await;
    eventually(Duration::from_secs(5), "one dead letter", || async {
        (stack.queue_depth(".dead").await == 1).then_some(())
    })
    .await;
    assert_eq!(stack.rows_for(&[huge]).await, (0, 0));
    let listed: serde_json::Value = stack
        .get("/dead-letters")
        .await
        .json()
        .await
        .expect("the dead letters as JSON");
    let letters = listed.as_array().expect("an array of dead letters");
    assert_eq!(letters.len(), 1, "{listed}");
    assert_eq!(letters[0]["message_id"], huge.to_string(), "{listed}");
    let reason = letters[0]["reason"].as_str().unwrap_or_default();
    assert!(
        reason.starts_with("the properties and headers are ") && reason.contains("over the 16384"),
        "{listed}"
    );
    let metrics = stack.get("/metrics").await.text().await.unwrap();
    assert!(
        metrics.contains("consumer_messages_dead_lettered_total 1"),
        "{metrics}"
    );
}
