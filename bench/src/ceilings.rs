//! Ceilings: what RabbitMQ and PostgreSQL do on this machine for minimal clients with no HTTP, using the
//! services' own patterns (confirm window, channels, prefetch, batch size and insert statement).

use std::{
    sync::atomic::{AtomicUsize, Ordering},
    time::{Duration, Instant},
};

use common::QueuedMessage;
use consumer::MessageStore;
use futures::{stream::FuturesUnordered, StreamExt};
use lapin::{
    options::{
        BasicAckOptions, BasicConsumeOptions, BasicPublishOptions, BasicQosOptions,
        ConfirmSelectOptions,
    },
    types::FieldTable,
    BasicProperties,
};

use crate::fixture::{queued, Scratch};

/// The publisher's default of 4 confirm-mode channels.
pub const CHANNELS: usize = 4;
/// Confirms in flight when publishing flat out: as many as 64 clients sending batches keep waiting.
pub const WIDE_WINDOW: usize = 1000;
/// Confirms in flight when 64 clients each wait for one message's confirm: the single endpoint's window.
pub const CLIENT_WINDOW: usize = 64;
/// The consumer's defaults.
pub const PREFETCH: u16 = 1000;
pub const BATCH: usize = 500;
pub const LINGER: Duration = Duration::from_millis(20);

/// Messages to publish, each with its own id (a repeated id would be skipped by the insert).
pub fn messages(count: usize) -> Vec<QueuedMessage> {
    (0..count).map(|_| queued()).collect()
}

/// The AMQP bodies of `count` fresh [`messages`].
pub fn payloads(count: usize) -> Vec<Vec<u8>> {
    messages(count)
        .iter()
        .map(QueuedMessage::to_payload)
        .collect()
}

/// Publishes `payloads` as persistent, mandatory messages with at most `window` confirms outstanding, and
/// waits for every confirm. Returns msg/s. Each message has its own `message_id`, which the shards'
/// exchange hashes; with several nodes there is one connection to each, as the publisher's pool makes.
pub async fn publish(
    scratch: &Scratch,
    payloads: &[Vec<u8>],
    window: usize,
) -> anyhow::Result<f64> {
    let mut connections = Vec::new();
    let mut channels = Vec::new();
    for _ in 0..scratch.nodes() {
        let connection = scratch.connect().await?;
        for _ in 0..CHANNELS {
            let channel = connection.create_channel().await?;
            channel
                .confirm_select(ConfirmSelectOptions::default())
                .await?;
            channels.push(channel);
        }
        connections.push(connection);
    }
    let exchange = scratch.topology.exchange();
    let properties = BasicProperties::default()
        .with_delivery_mode(2)
        .with_content_type("application/json".into());
    let options = BasicPublishOptions {
        mandatory: true,
        ..Default::default()
    };
    let started = Instant::now();
    let mut in_flight = FuturesUnordered::new();
    for (i, payload) in payloads.iter().enumerate() {
        if in_flight.len() >= window {
            in_flight.next().await.expect("a publish in flight")?;
        }
        let channel = &channels[i % channels.len()];
        let (exchange, queue) = (&exchange, &scratch.queue);
        let properties = properties.clone().with_message_id(i.to_string().into());
        in_flight.push(async move {
            let confirm = channel
                .basic_publish(
                    (*exchange).into(),
                    queue.as_str().into(),
                    options,
                    payload,
                    properties,
                )
                .await?
                .await?;
            anyhow::ensure!(confirm.is_ack(), "nacked");
            Ok(())
        });
    }
    while let Some(outcome) = in_flight.next().await {
        outcome?;
    }
    let rate = payloads.len() as f64 / started.elapsed().as_secs_f64();
    for connection in connections {
        connection.close(200, "done".into()).await?;
    }
    Ok(rate)
}

/// Publishes `payloads` (with [`WIDE_WINDOW`]) while draining them into `store`, as the two services run
/// together. Returns msg/s: what was stored over the time from the first publish to the last ack.
pub async fn publish_and_drain(
    scratch: &Scratch,
    payloads: &[Vec<u8>],
    store: &MessageStore,
) -> anyhow::Result<f64> {
    let started = Instant::now();
    let (published, drained) = tokio::join!(
        publish(scratch, payloads, WIDE_WINDOW),
        drain(scratch, payloads.len(), Some(store)),
    );
    published?;
    drained?;
    Ok(payloads.len() as f64 / started.elapsed().as_secs_f64())
}

/// Drains `count` messages from every shard at once, each shard on a connection of its own, with manual
/// acks (one `multiple` ack per batch), optionally storing each batch in PostgreSQL first, as the
/// consumer does. The shards drain until `count` have been taken from all of them together, so this
/// also drains while a publish is still filling them. Returns msg/s.
pub async fn drain(
    scratch: &Scratch,
    count: usize,
    store: Option<&MessageStore>,
) -> anyhow::Result<f64> {
    let drained = AtomicUsize::new(0);
    let done = tokio::sync::Notify::new();
    let started = Instant::now();
    let drains = scratch
        .topology
        .shards()
        .iter()
        .map(|shard| drain_queue(scratch, shard, count, store, &drained, &done));
    for outcome in futures::future::join_all(drains).await {
        outcome?;
    }
    Ok(count as f64 / started.elapsed().as_secs_f64())
}

/// Drains `queue` until `drained`, shared with the other shards' drains, reaches `count`.
async fn drain_queue(
    scratch: &Scratch,
    queue: &str,
    count: usize,
    store: Option<&MessageStore>,
    drained: &AtomicUsize,
    done: &tokio::sync::Notify,
) -> anyhow::Result<()> {
    let connection = scratch.connect().await?;
    let channel = connection.create_channel().await?;
    channel
        .basic_qos(PREFETCH, BasicQosOptions::default())
        .await?;
    let mut consumer = channel
        .basic_consume(
            queue.into(),
            "".into(),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await?;
    let finished = done.notified();
    tokio::pin!(finished);
    while drained.load(Ordering::Relaxed) < count {
        let first = tokio::select! {
            () = &mut finished => break,
            delivery = consumer.next() => delivery.expect("a delivery")?,
        };
        let mut batch = vec![first];
        let deadline = tokio::time::Instant::now() + LINGER;
        while batch.len() < BATCH {
            match tokio::time::timeout_at(deadline, consumer.next()).await {
                Ok(Some(delivery)) => batch.push(delivery?),
                _ => break,
            }
        }
        if let Some(store) = store {
            let rows: Vec<QueuedMessage> = batch
                .iter()
                .map(|d| QueuedMessage::from_payload(&d.data))
                .collect::<Result<_, _>>()?;
            store.insert(&rows).await?;
        }
        batch
            .last()
            .expect("non-empty")
            .acker
            .ack(BasicAckOptions { multiple: true })
            .await?;
        if drained.fetch_add(batch.len(), Ordering::Relaxed) + batch.len() >= count {
            done.notify_waiters();
        }
    }
    connection.close(200, "done".into()).await?;
    Ok(())
}

/// Inserts `rows` in batches with the consumer's statement, on one connection. Returns rows/s.
pub async fn ingest(store: &MessageStore, rows: &[QueuedMessage]) -> anyhow::Result<f64> {
    let started = Instant::now();
    for batch in rows.chunks(BATCH) {
        store.insert(batch).await?;
    }
    Ok(rows.len() as f64 / started.elapsed().as_secs_f64())
}
