//! Keeping the pool of links usable: [`tend`] drops broken links, makes new ones up to the pool's size,
//! declares the topology again when a queue went missing, and keeps the [`Readiness`] `/readyz` reports.

use std::sync::RwLock;

use super::{LinkPool, QUEUE_CHECK_EVERY, TEND_INTERVAL};
use crate::metrics::Metrics;

/// Why the broker cannot take messages right now, for `/readyz`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Unready {
    /// No connection.
    Disconnected,
    /// Connected, but the broker blocks publishing (resource alarm).
    Blocked(String),
}

/// What [`tend`] last found, for `/readyz`.
pub(crate) struct Readiness(RwLock<Result<(), Unready>>);

impl Readiness {
    pub(crate) fn new() -> Self {
        Self(RwLock::new(Err(Unready::Disconnected)))
    }

    pub(crate) fn get(&self) -> Result<(), Unready> {
        self.0.read().expect("readiness lock poisoned").clone()
    }

    fn set(&self, readiness: Result<(), Unready>) {
        *self.0.write().expect("readiness lock poisoned") = readiness;
    }
}

impl Default for Readiness {
    fn default() -> Self {
        Self::new()
    }
}

/// Keeps the pool full of usable links until `shutdown` resolves, then closes them all cleanly.
/// Publishes still awaiting confirms are expected to have been answered before `shutdown` resolves.
pub(crate) async fn tend(
    pool: &LinkPool,
    readiness: &Readiness,
    metrics: &Metrics,
    shutdown: impl std::future::Future<Output = ()>,
) {
    tokio::pin!(shutdown);
    let mut ticks = tokio::time::interval(TEND_INTERVAL);
    let mut tends: u32 = 0;
    loop {
        tokio::select! {
            () = &mut shutdown => break,
            _ = ticks.tick() => {}
        }
        let removed = pool.retain(|link, _| link.is_usable()).removed;
        if !removed.is_empty() {
            tracing::warn!(links = removed.len(), "broker links failed; replacing them");
        }
        for link in removed {
            tokio::spawn(async move { common::amqp::close(&link.connection, "replaced").await });
        }
        top_up(pool).await;
        tends = tends.wrapping_add(1);
        if tends.is_multiple_of(QUEUE_CHECK_EVERY) {
            redeclare_missing_queues(pool).await;
        }
        let (ready, found) = look(pool);
        metrics.broker_connected.set(i64::from(ready.is_ok()));
        metrics.broker_links.set(found as i64);
        readiness.set(ready);
    }
    readiness.set(Err(Unready::Disconnected));
    metrics.broker_connected.set(0);
    pool.close();
    let links = pool.retain(|_, _| false).removed;
    futures::future::join_all(
        links
            .iter()
            .map(|link| common::amqp::close(&link.connection, "shutting down")),
    )
    .await;
    tracing::info!("broker connections closed");
}

/// Makes links until the pool holds its maximum, stopping at the first that cannot be made (the
/// backoff paces the next try). The links taken meanwhile are held so that each `get` makes a new one.
async fn top_up(pool: &LinkPool) {
    let status = pool.status();
    let mut held = Vec::new();
    for _ in status.size..status.max_size {
        match pool.get().await {
            Ok(link) => held.push(link),
            Err(_) => break,
        }
    }
}

/// Whether some link can take publishes now, and how many usable links the pool holds.
fn look(pool: &LinkPool) -> (Result<(), Unready>, usize) {
    let mut usable = 0;
    let mut blocked = None;
    let mut ready = false;
    pool.retain(|link, _| {
        if link.is_usable() {
            usable += 1;
            match link.blocked() {
                Some(reason) => blocked = Some(reason),
                None => ready = true,
            }
        }
        true
    });
    let readiness = match (ready, blocked) {
        (true, _) => Ok(()),
        (false, Some(reason)) => Err(Unready::Blocked(reason)),
        (false, None) => Err(Unready::Disconnected),
    };
    (readiness, usable)
}

/// Declares the topology again if one of the queues messages are routed to is missing (someone
/// deleted it). Meanwhile, messages reach `<queue>.unrouted` through the alternate exchange and are
/// stored from there.
async fn redeclare_missing_queues(pool: &LinkPool) {
    let Ok(link) = pool.get().await else { return };
    let topology = &pool.manager().topology;
    let check = async {
        for queue in topology.shards() {
            if !common::amqp::queue_exists(&link.connection, queue).await? {
                tracing::warn!(%queue, "a queue is missing; declaring the topology again");
                let channel = link.connection.create_channel().await?;
                topology.ensure(&channel).await?;
                let _ = channel.close(200, "declared".into()).await;
                return Ok(());
            }
        }
        Ok::<_, lapin::Error>(())
    };
    // A slow or failing check is for the link checks to judge.
    let _ = tokio::time::timeout(TEND_INTERVAL * 4, check).await;
}
