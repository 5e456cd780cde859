//! Sending a delivery that can never be stored to `<QUEUE_NAME>.dead`, with the reason in a header, so
//! that whoever inspects the dead-letter queue sees why each message is there.

use common::Topology;
use lapin::{
    message::Delivery,
    options::{BasicPublishOptions, ConfirmSelectOptions},
    types::{AMQPValue, LongString, ShortString},
    Channel, Confirmation, Connection,
};

/// The header that carries why a message was dead-lettered.
pub const REASON_HEADER: &str = "x-dead-letter-reason";
/// Longest reason kept; PostgreSQL and serde errors can quote a lot of the payload.
const MAX_REASON_CHARS: usize = 1000;

/// A confirm-mode channel to the dead-letter exchange.
pub struct DeadLetters {
    channel: Channel,
    exchange: String,
    routing_key: String,
}

impl DeadLetters {
    pub async fn open(connection: &Connection, topology: &Topology) -> lapin::Result<Self> {
        let channel = connection.create_channel().await?;
        channel
            .confirm_select(ConfirmSelectOptions::default())
            .await?;
        Ok(Self {
            channel,
            exchange: topology.dead_letter_exchange(),
            routing_key: topology.dead_letter_queue(),
        })
    }

    /// Copies `delivery` (body and properties) to the dead-letter queue with `reason` added to its
    /// headers. Returns whether the broker confirmed the copy, which is when the original may be acked.
    pub async fn copy(&self, delivery: &Delivery, reason: &str) -> lapin::Result<bool> {
        let mut headers = delivery.properties.headers().clone().unwrap_or_default();
        let reason: String = reason.chars().take(MAX_REASON_CHARS).collect();
        headers.insert(
            ShortString::from(REASON_HEADER),
            AMQPValue::LongString(LongString::from(reason)),
        );
        let properties = delivery.properties.clone().with_headers(headers);
        let options = BasicPublishOptions {
            mandatory: true,
            ..BasicPublishOptions::default()
        };
        let confirmation = self
            .channel
            .basic_publish(
                self.exchange.as_str().into(),
                self.routing_key.as_str().into(),
                options,
                &delivery.data,
                properties,
            )
            .await?
            .await?;
        Ok(matches!(confirmation, Confirmation::Ack(None)))
    }
}
