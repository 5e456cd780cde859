//! The broker settings both services read alike: where the broker is, and the topology they must agree on.

use std::fmt;

use serde::{Deserialize, Serialize};

use super::{node_urls, BrokerAddress, QueueType, Topology, MAX_SHARDS};
use crate::settings::{ensure, Group, Vars};

/// Where the broker is and which queues carry the messages.
#[derive(Clone, Deserialize, Serialize)]
#[serde(default)]
pub struct BrokerConfig {
    /// `AMQP_URL`: the broker, with credentials and the URL-encoded virtual host; several URLs separated
    /// by commas name the nodes of one cluster.
    pub amqp_url: String,
    /// `AMQP_CA_FILE`: PEM certificates trusted for `amqps://` nodes besides the system's roots, such as
    /// a private certificate authority's, mounted from a Secret.
    pub amqp_ca_file: Option<String>,
    /// `QUEUE_NAME`: the queue messages go to and are drained from; exchanges and the dead-letter queue
    /// derive their names from it.
    pub queue_name: String,
    /// `QUEUE_TYPE`: `quorum` (safe, fast, no priority before RabbitMQ 4.0) or `classic` (priority); both
    /// services must agree.
    pub queue_type: QueueType,
    /// `DELIVERY_LIMIT`: deliveries of one message before a quorum queue dead-letters it; both services
    /// must agree.
    pub delivery_limit: u32,
    /// `QUEUE_SHARDS`: queues messages are spread over by the hash of their id (1: the one queue
    /// `QUEUE_NAME`); both services must agree.
    pub queue_shards: u16,
    /// `DECLARE_TOPOLOGY`: whether the service declares its exchanges and queues (`true`), or only checks
    /// that they exist (`false`), for a broker user without configure permission while a setup step
    /// (`consumer declare-topology`) declares them.
    pub declare_topology: bool,
}

impl Default for BrokerConfig {
    fn default() -> Self {
        Self {
            amqp_url: "amqp://guest:guest@127.0.0.1:5672/%2f".into(),
            amqp_ca_file: None,
            queue_name: "messages".into(),
            queue_type: QueueType::Quorum,
            delivery_limit: 20,
            queue_shards: 1,
            declare_topology: true,
        }
    }
}

impl Group for BrokerConfig {
    fn complete(self, _vars: &Vars) -> anyhow::Result<Self> {
        check_amqp_url(&self.amqp_url)?;
        ensure(
            (1..=MAX_SHARDS).contains(&self.queue_shards),
            "QUEUE_SHARDS must be between 1 and 256",
        )?;
        Ok(self)
    }
}

impl BrokerConfig {
    /// The broker of `AMQP_URL`, trusting the certificates of `AMQP_CA_FILE` when it is set; fails,
    /// naming the variable, when that file cannot be read or holds no certificate.
    pub fn address(&self) -> anyhow::Result<BrokerAddress> {
        let broker = BrokerAddress::new(self.amqp_url.clone());
        let Some(path) = &self.amqp_ca_file else {
            return Ok(broker);
        };
        let pem = std::fs::read_to_string(path).map_err(|e| {
            anyhow::anyhow!("invalid configuration: AMQP_CA_FILE {path:?} cannot be read: {e}")
        })?;
        broker
            .trusting(&pem)
            .map_err(|e| anyhow::anyhow!("invalid configuration: AMQP_CA_FILE {path:?} {e}"))
    }

    /// The exchanges and queues these settings name, declared or only verified as
    /// `DECLARE_TOPOLOGY` says.
    pub fn topology(&self) -> Topology {
        let topology = Topology::new(
            &self.queue_name,
            self.queue_type,
            self.delivery_limit,
            self.queue_shards,
        );
        if self.declare_topology {
            topology
        } else {
            topology.verified_only()
        }
    }
}

/// Shows every setting with the password of `AMQP_URL` redacted.
impl fmt::Debug for BrokerConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        crate::redact::debug_redacted("BrokerConfig", self, f)
    }
}

/// Every URL of `AMQP_URL` (one, or several separated by commas) must parse, and there must be one.
fn check_amqp_url(urls: &str) -> anyhow::Result<()> {
    ensure(node_urls(urls).next().is_some(), "AMQP_URL names no broker")?;
    for url in node_urls(urls) {
        url.parse::<lapin::uri::AMQPUri>().map_err(|e| {
            anyhow::anyhow!(
                "invalid configuration: AMQP_URL {:?} is not an AMQP URL: {e}",
                crate::redact::url(url)
            )
        })?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_amqp_url_that_does_not_parse_is_reported_with_its_variable() {
        assert!(check_amqp_url("amqp://guest:guest@127.0.0.1:5672/%2f").is_ok());
        let err = check_amqp_url("http://[oops").unwrap_err();
        assert!(err.to_string().contains("AMQP_URL"), "{err}");
        assert!(check_amqp_url("amqp://a:5672/%2f,amqp://b:5672/%2f").is_ok());
        let err = check_amqp_url("amqp://a:5672/%2f,http://[oops").unwrap_err();
        assert!(err.to_string().contains("http://[oops"), "{err}");
        assert!(check_amqp_url(" , ").is_err());
    }
}
