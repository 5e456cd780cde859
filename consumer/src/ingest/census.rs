//! The depth of every queue of the topology, read from the broker at an interval and kept in
//! `consumer_queue_messages{queue,state="ready"}`. The dead-letter queue is among them, so dead letters
//! the broker makes on its own (a delivery limit reached while no consumer could give a reason, a
//! rejected copy) are counted there as well as the consumer's own, which
//! `consumer_messages_dead_lettered_total` counts.

use std::{convert::Infallible, time::Duration};

use common::Topology;
use lapin::{options::QueueDeclareOptions, types::FieldTable, Connection};
use prometheus::IntGaugeVec;

/// How often the queues are looked at. Each look is one passive declare per queue.
const CENSUS_INTERVAL: Duration = Duration::from_secs(5);

/// Every queue the topology declares: the drained ones and the dead letters.
fn counted_queues(topology: &Topology) -> Vec<&str> {
    let mut queues = topology.drained_queues();
    queues.push(topology.dead_letter_queue());
    queues
}

/// Sets `gauge` to each queue's ready messages every [`CENSUS_INTERVAL`], for as long as it is polled:
/// it never ends by itself. A failed look leaves the last figures; the session's own failure handling
/// judges the connection.
pub async fn count_queues(
    connection: &Connection,
    topology: &Topology,
    gauge: &IntGaugeVec,
) -> Infallible {
    let mut ticks = tokio::time::interval(CENSUS_INTERVAL);
    loop {
        ticks.tick().await;
        if let Err(error) = look(connection, topology, gauge).await {
            tracing::debug!(%error, "could not count the queues");
        }
    }
}

async fn look(
    connection: &Connection,
    topology: &Topology,
    gauge: &IntGaugeVec,
) -> lapin::Result<()> {
    let channel = connection.create_channel().await?;
    let passive = QueueDeclareOptions {
        passive: true,
        ..QueueDeclareOptions::default()
    };
    for queue in counted_queues(topology) {
        // A missing queue closes the channel; it is declared again by whoever finds it missing.
        let declared = channel
            .queue_declare(queue.into(), passive, FieldTable::default())
            .await?;
        gauge
            .with_label_values(&[queue, "ready"])
            .set(i64::from(declared.message_count()));
    }
    let _ = channel.close(200, "counted".into()).await;
    Ok(())
}
