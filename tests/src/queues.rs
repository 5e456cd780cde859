//! What a test does on the broker directly, bypassing the services: raw publishes, a backlog, draining and
//! inspecting its queues.

use lapin::{
    options::{BasicGetOptions, BasicPublishOptions, QueueDeclareOptions, QueueDeleteOptions},
    types::FieldTable,
    BasicProperties, Connection,
};
use uuid::Uuid;

use crate::TestStack;

impl TestStack {
    /// Publishes raw bytes straight to the queue's exchange, bypassing the publisher.
    pub async fn publish_raw(&self, payload: &[u8]) {
        publish_raw_on(&self.amqp, &self.queue, payload).await;
    }

    /// Takes every message off the main queue, in delivery order, and returns their priorities.
    pub async fn drain_priorities(&self) -> Vec<u8> {
        let channel = self.amqp.create_channel().await.expect("channel");
        let mut priorities = Vec::new();
        while let Some(message) = channel
            .basic_get(self.queue.as_str().into(), BasicGetOptions { no_ack: true })
            .await
            .expect("basic.get")
        {
            let queued = common::QueuedMessage::from_payload(&message.delivery.data)
                .expect("a queued message");
            priorities.push(queued.message.priority().value());
        }
        let _ = channel.close(200, "done".into()).await;
        priorities
    }

    /// Takes every message off the dead-letter queue and returns the reason header of each.
    pub async fn drain_dead_letter_reasons(&self) -> Vec<String> {
        let channel = self.amqp.create_channel().await.expect("channel");
        let mut reasons = Vec::new();
        while let Some(message) = channel
            .basic_get(
                format!("{}.dead", self.queue).as_str().into(),
                BasicGetOptions { no_ack: true },
            )
            .await
            .expect("basic.get")
        {
            let reason = message
                .delivery
                .properties
                .headers()
                .as_ref()
                .and_then(|headers| {
                    headers
                        .inner()
                        .get(consumer::DEAD_LETTER_REASON_HEADER)
                        .cloned()
                })
                .map(|value| match value {
                    lapin::types::AMQPValue::LongString(text) => text.to_string(),
                    other => format!("{other:?}"),
                })
                .unwrap_or_default();
            reasons.push(reason);
        }
        let _ = channel.close(200, "done".into()).await;
        reasons
    }

    /// Messages waiting in a queue of this test (`""` for the main queue, `".dead"` for dead letters).
    pub async fn queue_depth(&self, suffix: &str) -> u32 {
        let channel = self.amqp.create_channel().await.expect("channel");
        let queue = channel
            .queue_declare(
                format!("{}{suffix}", self.queue).as_str().into(),
                QueueDeclareOptions {
                    passive: true,
                    ..Default::default()
                },
                FieldTable::default(),
            )
            .await
            .expect("queue exists");
        let _ = channel.close(200, "done".into()).await;
        queue.message_count()
    }

    /// Deletes a queue of this test (`""` for the main queue), with whatever it holds.
    pub async fn delete_queue(&self, suffix: &str) {
        let channel = self.amqp.create_channel().await.expect("channel");
        channel
            .queue_delete(
                format!("{}{suffix}", self.queue).as_str().into(),
                QueueDeleteOptions::default(),
            )
            .await
            .expect("queue deleted");
        let _ = channel.close(200, "done".into()).await;
    }

    /// Puts `count` valid messages straight on the queue's exchange, as the publisher would (1,000
    /// confirms in flight), and returns their ids: a backlog made faster than any HTTP client could.
    pub async fn fill_queue(&self, count: usize) -> Vec<Uuid> {
        let channel = self.amqp.create_channel().await.expect("channel");
        channel
            .confirm_select(Default::default())
            .await
            .expect("confirm mode");
        let exchange = format!("{}.exchange", self.queue);
        let mut ids = Vec::with_capacity(count);
        for window in (0..count).collect::<Vec<_>>().chunks(1_000) {
            let mut confirms = Vec::with_capacity(window.len());
            for index in window {
                let queued = common::QueuedMessage {
                    id: Uuid::now_v7(),
                    received_at: chrono::Utc::now(),
                    message: serde_json::from_value(serde_json::json!({
                        "ts": "19941114",
                        "sender": format!("backlog-{}", index % 10),
                        "messageAttributes": {"index": index}
                    }))
                    .expect("a valid message"),
                    fingerprint: None,
                };
                ids.push(queued.id);
                let properties = BasicProperties::default()
                    .with_delivery_mode(2)
                    .with_message_id(queued.id.to_string().into());
                confirms.push(
                    channel
                        .basic_publish(
                            exchange.as_str().into(),
                            self.queue.as_str().into(),
                            BasicPublishOptions {
                                mandatory: true,
                                ..Default::default()
                            },
                            &queued.to_payload(),
                            properties,
                        )
                        .await
                        .expect("publish"),
                );
            }
            for confirm in confirms {
                assert!(confirm.await.expect("confirm").is_ack(), "broker confirmed");
            }
        }
        let _ = channel.close(200, "filled".into()).await;
        ids
    }
}

/// Publishes raw bytes to `queue`'s exchange on `connection`, bypassing the publisher, and asserts the
/// broker confirmed and routed them.
pub async fn publish_raw_on(connection: &Connection, queue: &str, payload: &[u8]) {
    let channel = connection.create_channel().await.expect("channel");
    channel
        .confirm_select(Default::default())
        .await
        .expect("confirm mode");
    let confirm = channel
        .basic_publish(
            format!("{}.exchange", queue).as_str().into(),
            queue.into(),
            BasicPublishOptions {
                mandatory: true,
                ..Default::default()
            },
            payload,
            BasicProperties::default().with_delivery_mode(2),
        )
        .await
        .expect("publish")
        .await
        .expect("confirm");
    assert_eq!(
        confirm,
        lapin::Confirmation::Ack(None),
        "raw publish confirmed and routed"
    );
    let _ = channel.close(200, "done".into()).await;
}
