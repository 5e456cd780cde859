//! The queue watch: at every `QUEUE_WATCH_INTERVAL_MS`, look at each queue of the topology, export its
//! backlog, consumers and rates, and let each drained queue's scaler set its writer count.
//!
//! The broker is asked with a passive `queue.declare` per queue on the session's own connection: one
//! round trip each, answered by the queue itself with its ready messages and its consumers, and no
//! plugin or second credential needed. It does not report unacknowledged messages; those this process
//! holds it knows exactly (its flows), so each consumer exports its own share, and the queue's total is
//! their sum (the management API would give the total, at the price of an HTTP client, the management
//! plugin and its credentials in every consumer).

use std::{convert::Infallible, time::Instant};

use lapin::Connection;

use super::{
    flow::QueueFlow,
    scaling::{Decision, Observation, Scaler},
    Ingest,
};
use crate::monitor::{DecisionRecord, QueueFigures};

/// What one look at the broker found for one queue.
#[derive(Debug, Clone, Copy)]
struct Depth {
    ready: u64,
    consumers: u64,
}

/// The previous look at a drained queue, to turn counts into rates.
#[derive(Debug, Clone, Copy)]
struct Previous {
    at: Instant,
    drained: u64,
    backlog: u64,
}

/// The queue watch of one session: it owns each drained queue's scaler and what the previous look
/// found, and gives each queue's flow the writer count its scaler decides.
pub(super) struct QueueWatch<'s> {
    ingest: &'s Ingest,
    flows: &'s [QueueFlow],
    scalers: Vec<Scaler>,
    previous: Vec<Option<Previous>>,
}

impl<'s> QueueWatch<'s> {
    /// A watch of `flows`, each queue at its minimum writer count.
    pub(super) fn new(ingest: &'s Ingest, flows: &'s [QueueFlow]) -> Self {
        for flow in flows {
            ingest
                .metrics
                .writers
                .with_label_values(&[flow.queue()])
                .set(flow.writers() as i64);
        }
        Self {
            ingest,
            flows,
            scalers: flows
                .iter()
                .map(|_| Scaler::new(ingest.settings.scaling))
                .collect(),
            previous: vec![None; flows.len()],
        }
    }

    /// Watches the queues for as long as it is polled: it never ends by itself. A failed look leaves the
    /// last figures; the session's own failure handling judges the connection. A queue of the topology
    /// that is missing (deleted by hand, say) is this watch's to report, once when it is found missing
    /// and once when it is back: nothing else looks at the dead-letter queue, and the broker's answer
    /// itself is kept out of the log ([`common::telemetry`]).
    pub(super) async fn run(mut self, connection: &Connection) -> Infallible {
        let mut ticks = tokio::time::interval(self.ingest.settings.watch_interval);
        let mut missing = false;
        loop {
            ticks.tick().await;
            let depths = match self.look(connection).await {
                Ok(depths) => depths,
                Err(error) if common::amqp::is_not_found(&error) => {
                    if !std::mem::replace(&mut missing, true) {
                        tracing::warn!(%error, "a queue of the topology is missing: its figures stand still, and what is sent to it is lost until it is declared again");
                    }
                    continue;
                }
                Err(error) => {
                    tracing::debug!(%error, "could not look at the queues");
                    continue;
                }
            };
            if std::mem::take(&mut missing) {
                tracing::info!("every queue of the topology is there again");
            }
            let at = Instant::now();
            let mut figures = Vec::with_capacity(self.flows.len());
            let (flows, ingest) = (self.flows, self.ingest);
            let looked = flows.iter().zip(&mut self.scalers).zip(&mut self.previous);
            for ((flow, scaler), last) in looked {
                let depth = depths
                    .iter()
                    .find(|(queue, _)| queue == flow.queue())
                    .map(|(_, depth)| *depth);
                let Some(depth) = depth else { continue };
                let now = Previous {
                    at,
                    drained: flow.drained(),
                    backlog: depth.ready + flow.held(),
                };
                let (drain, inflow) = last.map_or((0.0, 0.0), |last| rates(last, now));
                ingest.export(flow.queue(), depth, flow.held(), drain, inflow);
                if last.is_some() {
                    // The first look has no rate yet: decide from the second on.
                    let decision = scaler.decide(Observation {
                        at,
                        backlog: now.backlog,
                        drain_per_second: drain,
                        database_up: ingest.status.database(),
                    });
                    ingest.apply(flow, decision, now.backlog, drain);
                }
                *last = Some(now);
                figures.push(QueueFigures {
                    queue: flow.queue().to_owned(),
                    ready: depth.ready,
                    unacknowledged: flow.held(),
                    consumers: depth.consumers,
                    writers: flow.writers(),
                    drain_per_second: drain,
                    inflow_per_second: inflow,
                });
            }
            let dead_queue = ingest.settings.topology.dead_letter_queue();
            let dead = depths
                .iter()
                .find(|(queue, _)| queue == dead_queue)
                .map(|(_, depth)| depth.ready);
            if let Some(dead) = dead {
                ingest
                    .metrics
                    .dead_letter_messages
                    .with_label_values(&[dead_queue])
                    .set(dead as i64);
                ingest
                    .metrics
                    .queue_messages
                    .with_label_values(&[dead_queue, "ready"])
                    .set(dead as i64);
            }
            ingest.board.update_queues(figures, dead);
        }
    }

    /// One passive declare per queue of the topology (the drained ones and the dead letters).
    async fn look(&self, connection: &Connection) -> lapin::Result<Vec<(String, Depth)>> {
        let channel = connection.create_channel().await?;
        let mut queues: Vec<&str> = self.flows.iter().map(QueueFlow::queue).collect();
        queues.push(self.ingest.settings.topology.dead_letter_queue());
        let mut depths = Vec::with_capacity(queues.len());
        for queue in queues {
            // A missing queue closes the channel; it is declared again by whoever finds it missing.
            let declared = common::amqp::look_at(&channel, queue).await?;
            depths.push((
                queue.to_owned(),
                Depth {
                    ready: u64::from(declared.message_count()),
                    consumers: u64::from(declared.consumer_count()),
                },
            ));
        }
        let _ = channel.close(200, "looked".into()).await;
        Ok(depths)
    }
}

/// What the watch reports, through the metrics and the monitor's board that ingestion owns.
impl Ingest {
    fn export(&self, queue: &str, depth: Depth, held: u64, drain: f64, inflow: f64) {
        let metrics = &self.metrics;
        metrics
            .queue_messages
            .with_label_values(&[queue, "ready"])
            .set(depth.ready as i64);
        metrics
            .queue_messages
            .with_label_values(&[queue, "unacknowledged"])
            .set(held as i64);
        metrics
            .queue_consumers
            .with_label_values(&[queue])
            .set(depth.consumers as i64);
        metrics.drain_rate.with_label_values(&[queue]).set(drain);
        metrics.inflow_rate.with_label_values(&[queue]).set(inflow);
    }

    /// Counts and logs a decision, and gives the queue its new writer count if it changed.
    fn apply(&self, flow: &QueueFlow, decision: Decision, backlog: u64, drain: f64) {
        let queue = flow.queue();
        let reason = decision.reason().as_str();
        self.metrics
            .scaling_decisions
            .with_label_values(&[queue, decision.direction(), reason])
            .inc();
        match decision {
            Decision::Hold { writers, .. } => {
                tracing::debug!(queue, writers, reason, backlog, drain, "writers held");
            }
            Decision::Grow { from, to, .. } | Decision::Shrink { from, to, .. } => {
                tracing::info!(
                    queue,
                    from,
                    to,
                    reason,
                    backlog,
                    drain_per_second = drain,
                    "batch writers {}",
                    if to > from { "added" } else { "removed" }
                );
                flow.set_writers(to);
                self.metrics
                    .writers
                    .with_label_values(&[queue])
                    .set(to as i64);
                self.board.record(DecisionRecord {
                    at: chrono::Utc::now(),
                    queue: queue.to_owned(),
                    from,
                    to,
                    reason,
                    backlog,
                });
            }
        }
    }
}

/// Messages drained per second, and messages arriving per second (what was drained plus what the
/// backlog grew by), between two looks. With several consumers each sees only its own drain, so its
/// inflow estimate is low by the others' drain; `publisher_messages_accepted_total` gives the exact
/// inflow.
fn rates(last: Previous, now: Previous) -> (f64, f64) {
    let seconds = now.at.saturating_duration_since(last.at).as_secs_f64();
    if seconds <= 0.0 {
        return (0.0, 0.0);
    }
    let drained = now.drained.saturating_sub(last.drained) as f64;
    let growth = now.backlog as f64 - last.backlog as f64;
    (drained / seconds, ((drained + growth) / seconds).max(0.0))
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn rates_come_from_what_was_drained_and_how_the_backlog_moved() {
        let at = Instant::now();
        let last = Previous {
            at,
            drained: 1_000,
            backlog: 5_000,
        };
        let now = Previous {
            at: at + Duration::from_secs(2),
            drained: 3_000,
            backlog: 6_000,
        };
        assert_eq!(rates(last, now), (1_000.0, 1_500.0));
        let shrinking = Previous { backlog: 0, ..now };
        assert_eq!(rates(last, shrinking), (1_000.0, 0.0));
        assert_eq!(rates(last, last), (0.0, 0.0));
    }
}
