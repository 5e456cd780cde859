//! `consumer declare-topology`: the setup step that declares the exchanges, queues and bindings with an
//! administrator's credentials, so that both services can run as broker users that may not configure
//! anything (`DECLARE_TOPOLOGY=false`). Run once before the services, and again after a change of
//! `QUEUE_NAME`, `QUEUE_TYPE` or `QUEUE_SHARDS`; it is idempotent. After a lower `QUEUE_SHARDS` it
//! unbinds the shard queues beyond it, which the consumers keep draining.
//!
//! `consumer permissions publisher|consumer` and `consumer dead-letter-policy` print, tab-separated,
//! what `rabbitmqctl set_permissions` and `set_policy` take, so that scripts apply exactly what
//! [`common::amqp::Topology`] says each service needs.

use std::time::Duration;

use common::{amqp::BrokerError, backoff::retry};

use crate::config::Config;

/// How long the setup step keeps trying to reach a broker that is still starting.
const SETUP_DEADLINE: Duration = Duration::from_secs(300);

/// Declares the configured topology, retrying with backoff while the broker is unreachable, and fails
/// after `SETUP_DEADLINE` or at once when the broker refuses (wrong credentials, missing plugin,
/// a queue of another type).
pub async fn declare_topology(config: &Config) -> anyhow::Result<()> {
    let broker = config.broker.address()?;
    // `declare`, not `ensure`: the setup step declares whatever DECLARE_TOPOLOGY says.
    let topology = config.broker.topology();
    let attempt = || async {
        let connection = broker.connect_as("message-queue-setup").await?;
        let declared = topology.declare_and_retire(&connection).await;
        common::amqp::close(&connection, "declared").await;
        Ok::<_, BrokerError>(declared?)
    };
    let outcome = retry(
        "could not reach the broker to declare the topology",
        tokio::time::sleep(SETUP_DEADLINE),
        attempt,
        |error: &BrokerError| !error.is_unreachable(),
    )
    .await;
    match outcome {
        Some(Ok(drained)) => {
            if dead_letter_limit(config).is_none() {
                tracing::warn!("{CLASSIC_UNLIMITED}");
            }
            tracing::info!(
                queue = %topology.queue(),
                queues = drained.len() + 1,
                "topology declared"
            );
            Ok(())
        }
        Some(Err(error)) => Err(anyhow::anyhow!("declaring the topology failed: {error}")),
        None => Err(anyhow::anyhow!(
            "no broker answered within {SETUP_DEADLINE:?}"
        )),
    }
}

/// `configure<TAB>write<TAB>read` of `service`'s broker user (`publisher` or `consumer`).
pub(crate) fn permissions(config: &Config, service: &str) -> anyhow::Result<String> {
    let topology = config.broker.topology();
    let permissions = match service {
        "publisher" => topology.publisher_permissions(),
        "consumer" => topology.consumer_permissions(),
        other => anyhow::bail!("permissions of what? {other:?}: name `publisher` or `consumer`"),
    };
    Ok(format!(
        "{}\t{}\t{}",
        permissions.configure, permissions.write, permissions.read
    ))
}

/// Why no length limit is applied to `.dead` with classic queues.
pub(crate) const CLASSIC_UNLIMITED: &str = "QUEUE_TYPE=classic: DEAD_LETTER_LIMIT is not applied and \
<QUEUE_NAME>.dead has no length limit, because a classic queue dead-letters at most once and would drop \
every dead letter refused at the limit; watch consumer_dead_letter_messages instead";

/// The policy that limits `<QUEUE_NAME>.dead` to `DEAD_LETTER_LIMIT` messages, or `None` with classic
/// queues, where a limit would drop the dead letters it refuses: an unbounded `.dead` loses nothing.
pub fn dead_letter_limit(config: &Config) -> Option<common::amqp::Policy> {
    let topology = config.broker.topology();
    topology
        .dead_letter_limit_keeps_refused()
        .then(|| topology.dead_letter_policy(config.dead_letters.dead_letter_limit))
}

/// `name<TAB>pattern<TAB>definition` of [`dead_letter_limit`], or `None` (nothing to apply).
pub(crate) fn dead_letter_policy(config: &Config) -> Option<String> {
    dead_letter_limit(config)
        .map(|policy| format!("{}\t{}\t{}", policy.name, policy.pattern, policy.definition))
}
