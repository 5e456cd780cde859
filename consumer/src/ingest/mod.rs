//! Draining the queue into PostgreSQL.
//!
//! Each batch of deliveries is decoded, written in one transaction, and only then acknowledged (one
//! `multiple` ack for the batch). A crash at any point leaves the unacknowledged deliveries on the
//! broker, which redelivers them; the insert skips ids already stored, so nothing is lost or doubled.
//! A delivery that cannot be decoded, or whose row the database refuses, is copied to
//! `<QUEUE_NAME>.dead` with the reason in a header, then acknowledged (or, when no copy can exist, rejected
//! without requeue so the broker dead-letters it); the rest of its batch is stored as usual. A copy the
//! broker has not answered keeps its original unsettled until it does, so no original is ever both
//! copied and rejected.
//!
//! How it reads, top to bottom:
//!
//! - here, [`Ingest::run`]: the reconnect loop, one broker session after another;
//! - `session`: one connection; it prepares a channel per drained queue (its share of the prefetch from
//!   `prefetch`), then runs a `pipeline` per queue and one `watch` beside them, until the connection
//!   fails, a new shard queue appears, or shutdown is asked for;
//! - `pipeline`: one queue's subscription; it gathers the next batch (`batch`) while earlier ones are
//!   written, and acknowledges them in delivery order;
//! - `storing`: the `Writer` every pipeline hands its batches to, which stores one and settles it
//!   (`splitting` halves a batch that runs into the statement timeout; `poison` sends what can never be
//!   stored to `<QUEUE_NAME>.dead`, through [`crate::dead_letters`]);
//! - `watch`: the queue watch, which owns each queue's `scaling` decision and sets the writer count of
//!   the queue's `flow`, the figures a pipeline and the watch share.

mod batch;
mod flow;
mod pipeline;
mod poison;
mod prefetch;
mod scaling;
mod session;
mod splitting;
mod storing;
mod watch;

pub use prefetch::prefetch_of;

use std::{sync::Arc, time::Duration};

use common::{
    amqp::{BrokerAddress, BrokerError, Topology},
    backoff::retry,
};
use tokio_util::sync::CancellationToken;

use self::{batch::BatchEnd, scaling::ScalingSettings, storing::Writer};
use crate::{
    config::{IngestConfig, ScalingConfig},
    metrics::Metrics,
    monitor::Board,
    status::PeerStatus,
    store::MessageStore,
};

/// Settings of the ingestion loop, in the units it works in.
#[derive(Debug, Clone)]
struct IngestSettings {
    pub broker: BrokerAddress,
    pub topology: Topology,
    pub batch_size: usize,
    /// A batch closes once its payloads reach this many bytes.
    pub batch_bytes: usize,
    pub batch_linger: Duration,
    /// Unacknowledged deliveries on the main queue, already bounded so that this many of the largest
    /// payloads fit the configured bytes (the fallback queue gets a sixteenth).
    pub prefetch: u16,
    /// Bounds and pace of each queue's batch writers.
    pub scaling: ScalingSettings,
    /// How often the queues are looked at and the writer counts decided.
    pub watch_interval: Duration,
}

/// Why the consumer dead-letters a message whose key was reused for other content.
pub const KEY_REUSED: &str = "Idempotency-Key reused with a different message";

/// The ingestion loop and what it needs.
pub(crate) struct Ingest {
    settings: IngestSettings,
    /// Writes and settles the batches of every pipeline.
    writer: Writer,
    status: Arc<PeerStatus>,
    metrics: Arc<Metrics>,
    board: Arc<Board>,
}

/// Why a session with the broker ended.
#[derive(Debug, thiserror::Error)]
enum SessionEnd {
    #[error("shutdown requested")]
    Cancelled,
    #[error(transparent)]
    Amqp(#[from] lapin::Error),
    #[error(transparent)]
    Broker(#[from] BrokerError),
    #[error("{0}")]
    Batch(BatchEnd),
    #[error("the channel closed before a delivery could be settled")]
    ChannelClosed,
    #[error("the broker connection was lost")]
    ConnectionLost,
    #[error("the dead-letter connection was lost")]
    DeadLettersLost,
    #[error("a shard queue this session does not drain appeared; subscribing again")]
    ShardAppeared,
}

impl From<BatchEnd> for SessionEnd {
    fn from(end: BatchEnd) -> Self {
        match end {
            BatchEnd::Cancelled => Self::Cancelled,
            other => Self::Batch(other),
        }
    }
}

/// What the ingestion loop works with besides its settings: where it stores, and what it reports to.
pub(crate) struct Outlets {
    pub store: MessageStore,
    pub status: Arc<PeerStatus>,
    pub metrics: Arc<Metrics>,
    pub board: Arc<Board>,
}

impl Ingest {
    /// The loop that drains `topology`'s queues on `broker` as `ingest` and `scaling` say.
    pub(crate) fn new(
        broker: BrokerAddress,
        topology: Topology,
        ingest: &IngestConfig,
        scaling: &ScalingConfig,
        outlets: Outlets,
    ) -> Self {
        let watch_interval = Duration::from_millis(scaling.queue_watch_interval_ms);
        let settings = IngestSettings {
            broker,
            topology,
            batch_size: ingest.batch_size,
            batch_bytes: ingest.batch_bytes,
            batch_linger: Duration::from_millis(ingest.batch_linger_ms),
            prefetch: ingest.effective_prefetch(),
            scaling: ScalingSettings::of(scaling, ingest.batch_size),
            watch_interval,
        };
        let Outlets {
            store,
            status,
            metrics,
            board,
        } = outlets;
        let writer = Writer {
            store,
            status: status.clone(),
            metrics: metrics.clone(),
            max_payload_bytes: ingest.max_payload_bytes(),
            delivery_limit: settings.topology.delivery_limit(),
        };
        Self {
            settings,
            writer,
            status,
            metrics,
            board,
        }
    }

    /// Consumes until `cancel` fires, reconnecting to the broker with backoff whenever the session ends.
    /// On cancellation the batch in hand is stored and acknowledged before returning.
    pub(crate) async fn run(self, cancel: CancellationToken) {
        let session = || async {
            let end = self.session(&cancel).await;
            self.status.set_broker(false);
            Err::<(), _>(end)
        };
        retry(
            "broker session ended; reconnecting",
            cancel.cancelled(),
            session,
            |end| matches!(end, SessionEnd::Cancelled),
        )
        .await;
        tracing::info!("ingestion stopped");
    }
}

/// lapin answers `Ok(false)` rather than an error when the channel is already gone; either way the
/// delivery is not settled and the broker will deliver it again, so the session is over.
fn settled(outcome: lapin::Result<bool>) -> Result<(), SessionEnd> {
    match outcome {
        Ok(true) => Ok(()),
        Ok(false) => Err(SessionEnd::ChannelClosed),
        Err(error) => Err(SessionEnd::Amqp(error)),
    }
}
