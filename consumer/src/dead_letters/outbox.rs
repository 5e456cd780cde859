//! Sending a delivery that can never be stored to `<QUEUE_NAME>.dead`, with the reason in a header, so
//! that whoever inspects the dead-letter queue sees why each message is there.

use std::{future::Future, pin::Pin, time::Duration};

use common::amqp::{BrokerAddress, BrokerError, ConfirmChannel, Confirmed, Topology};
use lapin::{
    message::Delivery,
    protocol::basic::{gen_properties, AMQPProperties},
    types::{AMQPValue, FieldTable, LongString, ShortString},
    Connection,
};

/// The header that carries why a message was dead-lettered.
pub const REASON_HEADER: &str = "x-dead-letter-reason";
/// The header that carries the queue the consumer took it from.
pub(crate) const ORIGIN_HEADER: &str = "x-dead-letter-queue";
/// Longest reason kept; PostgreSQL and serde errors can quote a lot of the payload.
const MAX_REASON_CHARS: usize = 1000;
/// The largest content header (properties and headers, as encoded on the wire) the consumer takes.
/// The publisher writes a few hundred bytes (message id, trace context); anything larger was written by
/// another client. Its copy to `.dead` keeps the properties but not the headers, so that the copy, with
/// its reason added, always fits the frame the broker accepts.
pub(crate) const MAX_HEADER_BYTES: usize = 16 * 1024;
/// How long a batch waits in all for its copies' answers. Copies are sent one after another, each once
/// the one before is answered, so that `.dead`'s length limit (checked as copies land) sees each; a copy
/// still unanswered at the deadline stays outstanding, its original unsettled until the answer comes,
/// and the batch's later copies are sent without waiting. Confirms take milliseconds; this only bounds
/// what a slow broker costs a batch.
const COPY_WAIT: Duration = Duration::from_secs(1);

/// A copy's send and confirm, running: it resolves to the broker's answer for this very copy, or to an
/// error if the channel or connection failed before that answer came.
pub(crate) type CopyInFlight<'a> =
    Pin<Box<dyn Future<Output = lapin::Result<Confirmed>> + Send + 'a>>;

/// What became of a copy to the dead-letter queue, which decides what is done with the original.
pub(crate) enum Copy<'a> {
    /// The broker took the copy: the original is acknowledged.
    Taken,
    /// No copy exists: none was sent, since the broker blocks the connection (a resource alarm holds
    /// every publish until it clears), or the broker refused or returned it. The original is rejected,
    /// and the broker dead-letters it itself (without the reason).
    NotTaken,
    /// The copy was sent but is not answered yet. The original stays unsettled until it is: rejecting
    /// it now could put a second copy in `.dead` once the first is taken after all.
    Unanswered(CopyInFlight<'a>),
}

/// A confirm-mode channel to the dead-letter exchange, on a connection of its own: the broker blocks a
/// connection that publishes during a resource alarm, and that must never be the one that consumes.
pub(crate) struct DeadLetters {
    connection: Connection,
    channel: ConfirmChannel,
    exchange: String,
    routing_key: String,
}

impl DeadLetters {
    pub(crate) async fn open(
        broker: &BrokerAddress,
        topology: &Topology,
    ) -> Result<Self, BrokerError> {
        let (connection, channel) = broker.channel_as(CONNECTION_NAME).await?;
        let channel = ConfirmChannel::select(channel).await?;
        Ok(Self {
            connection,
            channel,
            exchange: topology.dead_letter_exchange().to_owned(),
            routing_key: topology.dead_letter_queue().to_owned(),
        })
    }

    /// The connection, for the session to notice when it is lost.
    pub(crate) fn connection(&self) -> &Connection {
        &self.connection
    }

    /// Closes the connection, waiting a bounded time for the broker.
    pub(crate) async fn close(&self) {
        common::amqp::close(&self.connection, "closing").await;
    }

    /// The latest time a batch whose copies start now waits for their answers.
    pub(crate) fn answer_deadline() -> tokio::time::Instant {
        tokio::time::Instant::now() + COPY_WAIT
    }

    /// Copies `delivery` (body and properties) to the dead-letter queue with `reason` and the `queue` it
    /// came from added to its headers, waiting until `deadline` at most for the broker's answer. Nothing
    /// is sent while the broker blocks the connection: lapin would hold the copy until the alarm clears.
    /// An error means the connection or its channel failed.
    pub(crate) async fn copy(
        &self,
        delivery: &Delivery,
        reason: &str,
        queue: &str,
        deadline: tokio::time::Instant,
    ) -> lapin::Result<Copy<'_>> {
        if self.connection.status().blocked() {
            return Ok(Copy::NotTaken);
        }
        let properties = copy_properties(delivery, reason, queue);
        let payload = delivery.data.clone();
        let mut copying: CopyInFlight<'_> = Box::pin(async move {
            self.channel
                .publish(&self.exchange, &self.routing_key, &payload, properties)
                .await
        });
        // The copy is polled once even past the deadline, which sends it.
        match tokio::time::timeout_at(deadline, &mut copying).await {
            Ok(answer) => Ok(answered(answer?)),
            Err(_) => Ok(Copy::Unanswered(copying)),
        }
    }

    /// Whether the connection is up; a copy that failed on a live connection was refused by the broker
    /// (its channel closed on an error), so none exists.
    pub(crate) fn connected(&self) -> bool {
        self.connection.status().connected()
    }
}

/// The connection name the broker lists for the dead-letter connection.
pub const CONNECTION_NAME: &str = "message-consumer-dead-letters";

/// What the broker's answer to a copy means for the original.
pub(crate) fn answered(confirmed: Confirmed) -> Copy<'static> {
    match confirmed {
        Confirmed::Acked => Copy::Taken,
        Confirmed::Returned | Confirmed::Nacked | Confirmed::NotRequested => Copy::NotTaken,
    }
}

/// The original's properties with `reason` and `queue` added to its headers (its own headers dropped if
/// they are too large to travel in a frame).
fn copy_properties(delivery: &Delivery, reason: &str, queue: &str) -> AMQPProperties {
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
    delivery.properties.clone().with_headers(headers)
}

/// The size of `properties` (headers included) as encoded in a content header frame.
pub(crate) fn properties_bytes(properties: &AMQPProperties) -> usize {
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
