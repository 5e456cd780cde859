//! The publisher's side of RabbitMQ: `publish`, which returns only once the broker has confirmed every
//! message, over the links of a pool (see [`crate::links`]).
//!
//! Requests never wait for a connection: while the broker is down `publish` fails at once with
//! [`PublishFailure::Unavailable`] and the HTTP layer answers 503 with `Retry-After`.

use std::{
    sync::Arc,
    time::{Duration, Instant},
};

use common::{
    amqp::{BrokerAddress, Confirmed, Topology},
    backoff::Backoff,
    model::{TraceContext, TRACEPARENT},
    telemetry, QueuedMessage,
};
use futures::future::join_all;
use lapin::{
    types::{AMQPValue, FieldTable},
    BasicProperties,
};
use tracing::Instrument;

use crate::{
    body::InflightPermit,
    config::LinkConfig,
    links::{self, Link, LinkManager, LinkPool, Readiness, Unready},
    metrics::Metrics,
};

/// Why the broker did not take a publish. Knows nothing of HTTP: the `error` module gives each its status.
#[derive(Debug, thiserror::Error)]
pub(crate) enum PublishFailure {
    /// The broker did not confirm every message before the deadline, though some may have been
    /// queued; the ids were assigned, and a retry with the same `Idempotency-Key` gets them again.
    #[error("the message broker did not confirm every message within {deadline_ms} ms ({reason}); the outcome of the ids listed is unknown: retry with the same Idempotency-Key to avoid a duplicate")]
    InDoubt {
        ids: Vec<uuid::Uuid>,
        deadline_ms: u128,
        reason: &'static str,
    },
    /// No connection to the broker right now.
    #[error("the message broker is unavailable; retry shortly")]
    Unavailable,
    /// The broker blocks publishing because of a resource alarm (memory or disk).
    #[error("the message broker is refusing new messages for now ({0}); retry shortly")]
    Blocked(String),
    /// The broker refused the message (for example a full queue or a resource alarm).
    #[error("the message broker refused the message; retry shortly")]
    Refused,
    /// The broker returned the message as unroutable; the link and topology are set up again.
    #[error("the message broker could not route the message; retry shortly")]
    Unroutable,
    /// The channel was not in confirm mode, so delivery could not be guaranteed.
    #[error("the message broker did not confirm the message; retry shortly")]
    Unconfirmed,
    /// The AMQP connection or channel failed while publishing.
    #[error("the message broker connection failed; retry shortly (with the same Idempotency-Key to avoid a duplicate)")]
    Amqp(#[source] lapin::Error),
}

impl PublishFailure {
    /// Every label [`Self::kind`] gives. The metric starts each at 0, so that its series exists before
    /// the first failure of a kind: a rate over a series that appears with its first failure misses
    /// that failure, and a dashboard shows nothing instead of 0.
    pub(crate) const KINDS: [&'static str; 7] = [
        "in_doubt",
        "broker_unavailable",
        "broker_blocked",
        "refused",
        "unroutable",
        "unconfirmed",
        "amqp",
    ];

    /// A short label for metrics and logs.
    pub(crate) fn kind(&self) -> &'static str {
        match self {
            Self::InDoubt { .. } => "in_doubt",
            Self::Unavailable => "broker_unavailable",
            Self::Blocked(_) => "broker_blocked",
            Self::Refused => "refused",
            Self::Unroutable => "unroutable",
            Self::Unconfirmed => "unconfirmed",
            Self::Amqp(_) => "amqp",
        }
    }

    /// Whether the supervisor should replace the connection rather than wait for its next check.
    pub(crate) fn means_link_is_broken(&self) -> bool {
        matches!(self, Self::Amqp(_) | Self::Unroutable | Self::Unconfirmed)
    }
}

/// The first pause before publishing again what the broker refused or lost; it doubles (with jitter)
/// up to two seconds, so a broker that refuses every publish is not asked again in a tight loop.
const REPUBLISH_FIRST_DELAY: Duration = Duration::from_millis(20);

/// Publishes messages to the exchange of a [`Topology`], with publisher confirms.
pub(crate) struct Broker {
    topology: Topology,
    confirm_timeout: Duration,
    pool: LinkPool,
    readiness: Readiness,
    metrics: Arc<Metrics>,
}

impl Broker {
    /// A broker client with a pool of `connections` links of `channel_count` channels each, on the
    /// nodes of `address`. Nothing connects until [`Broker::tend`] runs.
    pub(crate) fn new(
        address: BrokerAddress,
        topology: Topology,
        links: &LinkConfig,
        metrics: Arc<Metrics>,
    ) -> Self {
        let manager = LinkManager::new(
            address,
            topology.clone(),
            links.publish_channels,
            metrics.clone(),
        );
        Self {
            topology,
            confirm_timeout: Duration::from_millis(links.confirm_timeout_ms),
            pool: links::pool(manager, links.amqp_connections),
            readiness: Readiness::new(),
            metrics,
        }
    }

    /// Whether publishes can be accepted now; drives `/readyz`.
    pub(crate) fn readiness(&self) -> Result<(), Unready> {
        self.readiness.get()
    }

    /// A link to publish on now, or why there is none, within the pool's wait for a free slot; never
    /// after a connection attempt (see [`links::take`]).
    async fn usable_link(&self) -> Result<Arc<Link>, Unready> {
        let Some(link) = links::take(&self.pool).await else {
            return Err(Unready::Disconnected);
        };
        match link.blocked() {
            Some(reason) => Err(Unready::Blocked(reason)),
            None => Ok(link),
        }
    }

    /// Keeps the pool's links up until `shutdown` resolves, then closes them.
    pub(crate) async fn tend(self: Arc<Self>, shutdown: impl std::future::Future<Output = ()>) {
        links::tend(&self.pool, &self.readiness, &self.metrics, shutdown).await;
    }

    /// Publishes every message as persistent and mandatory, and returns once the broker has confirmed
    /// them all. Messages are spread over the channels and all confirms are awaited concurrently.
    ///
    /// A message whose publish fails once it may have reached the broker (the connection dropped with
    /// its confirm outstanding, a nack, a return) is in doubt. It is published again, with the same id
    /// and time, on the next link, until every message is confirmed or the confirm timeout since the
    /// first attempt passes. The consumer stores an id once, so a second copy is harmless. Only then does
    /// the request fail, as [`PublishFailure::InDoubt`] listing the ids. A request that finds no link at
    /// all fails at once, since nothing of it was sent. Every failure is counted in
    /// `publisher_broker_errors_total` under its kind.
    ///
    /// The messages carry this span's context on (or `trace` without an export), so their storing
    /// continues the trace.
    #[tracing::instrument(name = "publish", skip_all, fields(count = messages.len(), otel.kind = "producer"))]
    pub(crate) async fn publish(
        &self,
        messages: &[QueuedMessage],
        trace: &TraceContext,
        reserved: InflightPermit,
    ) -> Result<(), PublishFailure> {
        let carried = telemetry::context_of(&tracing::Span::current()).unwrap_or(*trace);
        let mut headers = FieldTable::default();
        headers.insert(
            TRACEPARENT.into(),
            AMQPValue::LongString(carried.to_string().into()),
        );
        let result = self
            .publish_until_confirmed(messages, &headers, &Arc::new(reserved))
            .await;
        if let Err(error) = &result {
            self.metrics
                .broker_errors
                .with_label_values(&[error.kind()])
                .inc();
        }
        result
    }

    async fn publish_until_confirmed(
        &self,
        messages: &[QueuedMessage],
        headers: &FieldTable,
        reserved: &Arc<InflightPermit>,
    ) -> Result<(), PublishFailure> {
        let started = Instant::now();
        let deadline = tokio::time::Instant::now() + self.confirm_timeout;
        let in_doubt = |reason: &'static str| PublishFailure::InDoubt {
            ids: messages.iter().map(|m| m.id).collect(),
            deadline_ms: self.confirm_timeout.as_millis(),
            reason,
        };
        let first = tokio::time::timeout_at(deadline, self.usable_link()).await;
        let mut link = match first.unwrap_or(Err(Unready::Disconnected)) {
            Ok(link) => link,
            Err(Unready::Disconnected) => return Err(PublishFailure::Unavailable),
            // Publishing now would only wait for a confirm that cannot come before the alarm clears.
            Err(Unready::Blocked(reason)) => return Err(PublishFailure::Blocked(reason)),
        };
        let mut pending: Vec<&QueuedMessage> = messages.iter().collect();
        let mut backoff = Backoff::starting_at(REPUBLISH_FIRST_DELAY);
        loop {
            let round = tokio::time::timeout_at(
                deadline,
                self.publish_on(&link, &pending, headers, reserved),
            )
            .await;
            let Ok(outcomes) = round else {
                // Confirms are late, not lost: this request gives up, the link and others stay, unless
                // the link has left too many confirms unanswered.
                link.gave_up_on(pending.len());
                self.observe_confirm(started);
                return Err(in_doubt("no confirm in time"));
            };
            let mut broken = None;
            pending = pending
                .into_iter()
                .zip(outcomes)
                .filter_map(|(message, outcome)| match outcome {
                    Ok(()) => None,
                    Err(error) => {
                        broken.get_or_insert(error);
                        Some(message)
                    }
                })
                .collect();
            let Some(error) = broken else {
                self.observe_confirm(started);
                return Ok(());
            };
            tracing::warn!(%error, in_doubt = pending.len(), "publishing again");
            if error.means_link_is_broken() {
                link.mark_failed();
            }
            self.metrics.republished.inc_by(pending.len() as u64);
            link = match self.next_link(&mut backoff, deadline).await {
                Some(next) => next,
                None => {
                    self.observe_confirm(started);
                    return Err(in_doubt(error.kind()));
                }
            };
        }
    }

    fn observe_confirm(&self, started: Instant) {
        self.metrics
            .confirm_seconds
            .observe(started.elapsed().as_secs_f64());
    }

    /// Waits until `deadline` for a usable link to publish again on, pausing first by `backoff`: a
    /// link from the pool, which no longer hands out one found broken, so after a node is lost this is a
    /// link to another node.
    async fn next_link(
        &self,
        backoff: &mut Backoff,
        deadline: tokio::time::Instant,
    ) -> Option<Arc<Link>> {
        loop {
            let pause = tokio::time::Instant::now() + backoff.next_delay();
            if pause >= deadline {
                return None;
            }
            tokio::time::sleep_until(pause).await;
            if let Ok(Ok(link)) = tokio::time::timeout_at(deadline, self.usable_link()).await {
                return Some(link);
            }
        }
    }

    /// Publishes each message once on `link` and returns each one's outcome, in order.
    ///
    /// Each message is handed to lapin by a task of its own that holds `reserved`, the request's share of
    /// the in-flight byte budget, until lapin has written its frames (or failed them). A request that
    /// gives up at its deadline therefore leaves its bytes counted for as long as lapin holds them: while
    /// a broker is frozen, new requests are refused at once instead of piling up frames in memory.
    async fn publish_on(
        &self,
        link: &Link,
        messages: &[&QueuedMessage],
        headers: &FieldTable,
        reserved: &Arc<InflightPermit>,
    ) -> Vec<Result<(), PublishFailure>> {
        let sends = messages.iter().map(|message| {
            let channel = link.channel().clone();
            let exchange = self.topology.exchange().to_owned();
            let routing_key = self.topology.queue().to_owned();
            let payload = message.to_payload();
            let properties = properties(message, headers);
            let reserved = Arc::clone(reserved);
            tokio::spawn(async move {
                let sent = channel
                    .send(&exchange, &routing_key, &payload, properties)
                    .await;
                drop(reserved);
                sent
            })
        });
        // The sends run on their own; waiting for all of them before the first confirm delays none,
        // and shows the time to write apart from the time the broker takes to confirm.
        let sent = join_all(sends)
            .instrument(tracing::info_span!("send"))
            .await;
        let confirms = sent.into_iter().map(|sent| async move {
            let confirm = sent
                .map_err(|_| PublishFailure::Unconfirmed)?
                .map_err(PublishFailure::Amqp)?;
            match Confirmed::from(confirm.await.map_err(PublishFailure::Amqp)?) {
                Confirmed::Acked => Ok(()),
                Confirmed::Returned => Err(PublishFailure::Unroutable),
                Confirmed::Nacked => Err(PublishFailure::Refused),
                Confirmed::NotRequested => Err(PublishFailure::Unconfirmed),
            }
        });
        // Every confirm is awaited, not just up to the first failure, so each message's fate is known.
        join_all(confirms)
            .instrument(tracing::info_span!("confirm"))
            .await
    }
}

/// A message's properties: persistent, with its id, priority and arrival time, and the trace headers.
fn properties(message: &QueuedMessage, headers: &FieldTable) -> BasicProperties {
    BasicProperties::default()
        .with_headers(headers.clone())
        .with_delivery_mode(2)
        .with_content_type("application/json".into())
        .with_message_id(message.id.to_string().into())
        .with_priority(message.message.priority().value())
        .with_timestamp(message.received_at.timestamp().max(0) as u64)
        .with_app_id("message-publisher".into())
}

#[cfg(test)]
mod tests {
    use super::PublishFailure;

    /// Each failure's label is one the metric starts at 0, and no label is started that no failure has.
    #[test]
    fn every_kind_of_failure_is_a_label_started_at_zero() {
        let failures = [
            PublishFailure::InDoubt {
                ids: Vec::new(),
                deadline_ms: 0,
                reason: "test",
            },
            PublishFailure::Unavailable,
            PublishFailure::Blocked(String::new()),
            PublishFailure::Refused,
            PublishFailure::Unroutable,
            PublishFailure::Unconfirmed,
            PublishFailure::Amqp(lapin::ErrorKind::ChannelsLimitReached.into()),
        ];
        let mut kinds: Vec<&str> = failures.iter().map(PublishFailure::kind).collect();
        kinds.sort_unstable();
        let mut started = PublishFailure::KINDS.to_vec();
        started.sort_unstable();
        assert_eq!(kinds, started);
    }
}
