//! Sending a delivery that can never be stored to `<QUEUE_NAME>.dead`, with the reason in a header, so
//! that whoever inspects the dead-letter queue sees why each message is there.

use std::time::Duration;

use common::{
    amqp::{BrokerAddress, ConfirmChannel, Confirmed},
    Topology,
};
use lapin::{
    message::Delivery,
    protocol::basic::{gen_properties, AMQPProperties},
    types::{AMQPValue, FieldTable, LongString, ShortString},
    Connection, ConnectionProperties,
};

/// The header that carries why a message was dead-lettered.
pub const REASON_HEADER: &str = "x-dead-letter-reason";
/// The header that carries the queue the consumer took it from.
pub const ORIGIN_HEADER: &str = "x-dead-letter-queue";
/// Longest reason kept; PostgreSQL and serde errors can quote a lot of the payload.
const MAX_REASON_CHARS: usize = 1000;
/// The largest content header (properties and headers, as encoded on the wire) the consumer takes.
/// The publisher writes a few hundred bytes (message id, trace context); anything larger was written by
/// another client. Its copy to `.dead` keeps the properties but not the headers, so that the copy, with
/// its reason added, always fits the frame the broker accepts.
pub const MAX_HEADER_BYTES: usize = 16 * 1024;
/// Longest wait for the copy's confirm. Under a resource alarm the broker blocks publishing connections;
/// past this the delivery is rejected instead, so a poison message never stalls the batch.
const COPY_TIMEOUT: Duration = Duration::from_secs(5);

/// A confirm-mode channel to the dead-letter exchange, on a connection of its own: the broker blocks a
/// connection that publishes during a resource alarm, and that must never be the one that consumes.
pub struct DeadLetters {
    connection: Connection,
    channel: ConfirmChannel,
    exchange: String,
    routing_key: String,
}

impl DeadLetters {
    pub async fn open(broker: &BrokerAddress, topology: &Topology) -> lapin::Result<Self> {
        let properties = ConnectionProperties::default()
            .with_connection_name("message-consumer-dead-letters".into());
        let connection = broker.connect(properties).await?;
        let channel = ConfirmChannel::select(connection.create_channel().await?).await?;
        Ok(Self {
            connection,
            channel,
            exchange: topology.dead_letter_exchange().to_owned(),
            routing_key: topology.dead_letter_queue().to_owned(),
        })
    }

    /// Closes the connection, waiting a bounded time for the broker.
    pub async fn close(&self) {
        common::amqp::close(&self.connection, "closing").await;
    }

    /// Copies `delivery` (body and properties) to the dead-letter queue with `reason` and the `queue` it
    /// came from added to its headers. Returns whether the broker confirmed the copy in time, which is
    /// when the original may be acked.
    pub async fn copy(
        &self,
        delivery: &Delivery,
        reason: &str,
        queue: &str,
    ) -> lapin::Result<bool> {
        match tokio::time::timeout(COPY_TIMEOUT, self.copy_confirmed(delivery, reason, queue)).await
        {
            Ok(outcome) => outcome,
            Err(_) => Ok(false),
        }
    }

    async fn copy_confirmed(
        &self,
        delivery: &Delivery,
        reason: &str,
        queue: &str,
    ) -> lapin::Result<bool> {
        let mut headers = if properties_bytes(&delivery.properties) > MAX_HEADER_BYTES {
            FieldTable::default()
        } else {
            delivery.properties.headers().clone().unwrap_or_default()
        };
        let reason: String = reason.chars().take(MAX_REASON_CHARS).collect();
        headers.insert(
            ShortString::from(REASON_HEADER),
            AMQPValue::LongString(LongString::from(reason)),
        );
        headers.insert(
            ShortString::from(ORIGIN_HEADER),
            AMQPValue::LongString(LongString::from(queue)),
        );
        let properties = delivery.properties.clone().with_headers(headers);
        let confirmed = self
            .channel
            .publish(
                &self.exchange,
                &self.routing_key,
                &delivery.data,
                properties,
            )
            .await?;
        Ok(confirmed == Confirmed::Acked)
    }
}

/// The size of `properties` (headers included) as encoded in a content header frame.
pub fn properties_bytes(properties: &AMQPProperties) -> usize {
    cookie_factory::gen_simple(gen_properties(properties), Vec::new())
        .map_or(usize::MAX, |encoded| encoded.len())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_size_of_properties_counts_every_header_byte() {
        let bare = properties_bytes(&AMQPProperties::default());
        let mut headers = FieldTable::default();
        headers.insert(
            "big".into(),
            AMQPValue::LongString("x".repeat(20_000).into()),
        );
        let large = properties_bytes(&AMQPProperties::default().with_headers(headers));
        assert!(
            large > bare + 20_000 && large < bare + 20_100,
            "{bare} {large}"
        );
    }
}
