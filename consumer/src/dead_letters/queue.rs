//! Looking at `<QUEUE_NAME>.dead` and putting its messages back: what the admin routes do, over a
//! connection of their own for each request.
//!
//! Looking takes up to `limit` messages with `basic.get` without acknowledging them, and closing the
//! channel returns every one to the queue, so a look changes nothing but their redelivery count. A replay
//! takes one message at a time, publishes its body with its properties (less the dead-letter headers) to
//! the main exchange, and acknowledges it in `.dead` only once the broker has confirmed the publish: a
//! crash in between publishes it twice, which the consumer stores once, by its id. A message that fails
//! again is dead-lettered again by the consumer, with its new reason.
//!
//! A replay takes only what `.dead` held when it began, and marks each copy it puts back with its own
//! id ([`REPLAY_HEADER`]): a copy that fails again while the replay still runs reaches the end of
//! `.dead` with the mark, and the replay stops there rather than take it a second time and count it
//! twice.

use chrono::{DateTime, TimeZone, Utc};
use common::amqp::{BrokerAddress, BrokerError, ConfirmChannel, Confirmed, Topology};
use lapin::{
    message::BasicGetMessage,
    options::{BasicAckOptions, BasicGetOptions, BasicNackOptions},
    types::{AMQPValue, FieldTable},
    Channel, Connection,
};
use serde::Serialize;

use super::outbox::{ORIGIN_HEADER, REASON_HEADER};

/// Bytes of a dead letter's payload shown; the rest is counted.
pub(crate) const PAYLOAD_PREFIX_BYTES: usize = 1024;

/// The header a replay sets on each message it puts back: the replay's own id, which the message keeps
/// if it is dead-lettered again, so that the replay can tell its own copies from what it came for.
pub(crate) const REPLAY_HEADER: &str = "x-replay-id";

/// One dead letter, as `GET /dead-letters` shows it.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub(crate) struct DeadLetter {
    /// The message id the publisher gave it, if it carries one.
    pub message_id: Option<String>,
    /// Why it was dead-lettered: the consumer's reason, or the broker's (`rejected`, `delivery_limit`, …).
    pub reason: Option<String>,
    /// The queue it was taken from.
    pub queue: Option<String>,
    /// When the publisher accepted it.
    pub received_at: Option<DateTime<Utc>>,
    /// The payload's whole length.
    pub payload_bytes: usize,
    /// The start of the payload, as text (invalid UTF-8 replaced).
    pub payload: String,
    /// Whether `payload` is the whole of it.
    pub truncated: bool,
}

/// The admin side of the dead-letter queue.
#[derive(Debug, Clone)]
pub(crate) struct DeadLetterQueue {
    broker: BrokerAddress,
    topology: Topology,
}

impl DeadLetterQueue {
    pub(crate) fn new(broker: BrokerAddress, topology: Topology) -> Self {
        Self { broker, topology }
    }

    async fn connect(&self) -> Result<(Connection, Channel), BrokerError> {
        self.broker
            .channel_as("message-consumer-dead-letter-admin")
            .await
    }

    /// Returns `message` to `.dead`, where it stays a dead letter.
    async fn put_back(message: &BasicGetMessage) -> lapin::Result<()> {
        let requeue = BasicNackOptions {
            requeue: true,
            ..BasicNackOptions::default()
        };
        message.delivery.acker.nack(requeue).await.map(drop)
    }

    /// Up to `limit` dead letters after the first `offset`, oldest first, all left where they are.
    pub(crate) async fn look(
        &self,
        offset: usize,
        limit: usize,
    ) -> Result<Vec<DeadLetter>, BrokerError> {
        let (connection, channel) = self.connect().await?;
        let mut letters = Vec::new();
        let mut seen = 0;
        while letters.len() < limit {
            let Some(message) = self.get(&channel).await? else {
                break;
            };
            seen += 1;
            if seen > offset {
                letters.push(view(&message));
            }
        }
        // Closing returns every message taken and not acknowledged, in their order.
        common::amqp::close(&connection, "looked").await;
        Ok(letters)
    }

    /// Puts up to `limit` of the dead letters `.dead` holds now back on the main exchange, each
    /// acknowledged in `.dead` only once its publish is confirmed. Returns how many went back; none is
    /// taken or counted twice, even if it fails again while the replay runs.
    pub(crate) async fn replay(&self, limit: usize) -> Result<usize, BrokerError> {
        let (connection, channel) = self.connect().await?;
        let channel = ConfirmChannel::select(channel).await?;
        let replay_id = uuid::Uuid::new_v4().to_string();
        let mut replayed = 0;
        let outcome = async {
            let waiting = self.waiting(channel.channel()).await?;
            while replayed < limit.min(waiting) {
                let Some(message) = self.get(channel.channel()).await? else {
                    break;
                };
                if replayed_by(&message) == Some(replay_id.as_str()) {
                    // This replay's own copy, dead-lettered again: everything before it is taken.
                    Self::put_back(&message).await?;
                    break;
                }
                let confirmed = channel
                    .publish(
                        self.topology.exchange(),
                        self.topology.queue(),
                        &message.delivery.data,
                        replayed_properties(&message, &replay_id),
                    )
                    .await?;
                if confirmed == Confirmed::Acked {
                    message
                        .delivery
                        .acker
                        .ack(BasicAckOptions::default())
                        .await?;
                    replayed += 1;
                } else {
                    // Not taken by the main queue: it stays a dead letter, and the replay stops here.
                    Self::put_back(&message).await?;
                    break;
                }
            }
            Ok::<_, lapin::Error>(())
        }
        .await;
        common::amqp::close(&connection, "replayed").await;
        outcome.map(|()| replayed).map_err(BrokerError::from)
    }

    /// Messages ready in `.dead` now.
    async fn waiting(&self, channel: &Channel) -> lapin::Result<usize> {
        let declared = common::amqp::look_at(channel, self.topology.dead_letter_queue()).await?;
        Ok(usize::try_from(declared.message_count()).unwrap_or(usize::MAX))
    }

    async fn get(&self, channel: &Channel) -> lapin::Result<Option<BasicGetMessage>> {
        channel
            .basic_get(
                self.topology.dead_letter_queue().into(),
                BasicGetOptions { no_ack: false },
            )
            .await
    }
}

fn header<'a>(headers: Option<&'a FieldTable>, name: &str) -> Option<&'a AMQPValue> {
    headers?.inner().get(name)
}

fn text(value: Option<&AMQPValue>) -> Option<String> {
    match value? {
        AMQPValue::LongString(text) => Some(String::from_utf8_lossy(text.as_bytes()).into_owned()),
        AMQPValue::ShortString(text) => Some(text.as_str().to_owned()),
        _ => None,
    }
}

fn view(message: &BasicGetMessage) -> DeadLetter {
    let delivery = &message.delivery;
    let headers = delivery.properties.headers().as_ref();
    let reason = text(header(headers, REASON_HEADER))
        .or_else(|| text(header(headers, "x-first-death-reason")));
    let queue = text(header(headers, ORIGIN_HEADER))
        .or_else(|| text(header(headers, "x-first-death-queue")))
        .or_else(|| Some(delivery.routing_key.as_str().to_owned()).filter(|k| !k.is_empty()));
    let data = &delivery.data;
    let shown = &data[..data.len().min(PAYLOAD_PREFIX_BYTES)];
    DeadLetter {
        message_id: delivery
            .properties
            .message_id()
            .as_ref()
            .map(|id| id.as_str().to_owned()),
        reason,
        queue,
        received_at: delivery
            .properties
            .timestamp()
            .and_then(|seconds| Utc.timestamp_opt(i64::try_from(seconds).ok()?, 0).single()),
        payload_bytes: data.len(),
        payload: String::from_utf8_lossy(shown).into_owned(),
        truncated: data.len() > shown.len(),
    }
}

/// The replay that last put `message` back, if one did.
fn replayed_by(message: &BasicGetMessage) -> Option<&str> {
    match header(
        message.delivery.properties.headers().as_ref(),
        REPLAY_HEADER,
    )? {
        AMQPValue::LongString(id) => std::str::from_utf8(id.as_bytes()).ok(),
        _ => None,
    }
}

/// The message's own properties, without what dead-lettering added, so it goes back as it was sent,
/// marked with the id of the replay that puts it back.
fn replayed_properties(message: &BasicGetMessage, replay_id: &str) -> lapin::BasicProperties {
    let properties = message.delivery.properties.clone();
    let mut headers = properties.headers().clone().unwrap_or_default();
    let kept: FieldTable = headers
        .inner()
        .iter()
        .filter(|(name, _)| {
            let name = name.as_str();
            name != REASON_HEADER
                && !name.starts_with("x-death")
                && !name.starts_with("x-first-death")
                && !name.starts_with("x-last-death")
                && name != "x-delivery-count"
        })
        .map(|(name, value)| (name.clone(), value.clone()))
        .collect::<std::collections::BTreeMap<_, _>>()
        .into();
    headers = kept;
    headers.insert(
        REPLAY_HEADER.into(),
        AMQPValue::LongString(replay_id.to_owned().into()),
    );
    properties.with_headers(headers)
}
