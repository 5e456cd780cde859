//! The publisher's configuration: a group of settings for each of its parts, read from the environment
//! with envy, each group handed whole to the part that uses it.

use common::amqp::BrokerConfig;
use common::settings::{ensure, Group, Vars};
use common::telemetry::TelemetryConfig;
use common::web::{DefaultPort, HttpConfig};
use serde::{Deserialize, Serialize};

/// Everything the publisher reads from the environment.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Config {
    pub broker: BrokerConfig,
    pub http: HttpConfig<Port>,
    pub telemetry: TelemetryConfig,
    /// The connections and channels publishes go over.
    pub links: LinkConfig,
    /// What a request body may be.
    pub body: BodyConfig,
}

/// The publisher listens on 8080 unless `HTTP_PORT` says otherwise.
#[derive(Clone, Debug)]
pub struct Port;

impl DefaultPort for Port {
    const PORT: u16 = 8080;
}

/// The broker connections of the `links` module, and how long a publish waits for its confirm.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(default)]
pub struct LinkConfig {
    /// `AMQP_CONNECTIONS`: broker connections in the publisher's pool, each with its own I/O thread
    /// and `PUBLISH_CHANNELS` channels; with several nodes they spread over them.
    pub amqp_connections: usize,
    /// `PUBLISH_CHANNELS`: confirm-mode AMQP channels on each connection, publishes spread over them.
    pub publish_channels: usize,
    /// `CONFIRM_TIMEOUT_MS`: how long a request waits for the broker's confirm before answering 503.
    pub confirm_timeout_ms: u64,
}

impl Default for LinkConfig {
    fn default() -> Self {
        Self {
            // Measured on 2 cores with one broker (`AMQP_CONNECTIONS=N bench --publisher`): one
            // connection gave the most single-message throughput for the least CPU (22.3k msg/s at
            // 0.24 s per 10,000, against 19.1k at 0.34 s with two and 16.4k at 0.43 s with four); more
            // pay off only with cores to spare.
            amqp_connections: 1,
            publish_channels: 4,
            confirm_timeout_ms: 5_000,
        }
    }
}

impl Group for LinkConfig {
    fn complete(self, _vars: &Vars) -> anyhow::Result<Self> {
        ensure(
            self.publish_channels > 0,
            "PUBLISH_CHANNELS must be at least 1",
        )?;
        ensure(
            self.amqp_connections > 0,
            "AMQP_CONNECTIONS must be at least 1",
        )?;
        Ok(self)
    }
}

/// The limits of the `body` module: how large, how deep and how slow a request body may be.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(default)]
pub struct BodyConfig {
    /// `MAX_MESSAGE_BYTES`: the largest message, alone or as an element of a batch.
    pub max_message_bytes: usize,
    /// `MAX_BATCH_BYTES`: largest body of `/message/publish/batch`.
    pub max_batch_bytes: usize,
    /// `MAX_BATCH_MESSAGES`: most messages one `/message/publish/batch` request may carry.
    pub max_batch_messages: usize,
    /// `MAX_INFLIGHT_BYTES`: request body bytes held at once across all requests; past it, 503.
    pub max_inflight_bytes: usize,
    /// `BODY_TIMEOUT_MS`: longest a client may take to send a request body before it is answered 408.
    pub body_timeout_ms: u64,
    /// `MAX_JSON_DEPTH`: deepest nesting of arrays and objects a message may hold, counted from the
    /// message itself; deeper is refused (400), since PostgreSQL's `json` parser could not store it.
    pub max_json_depth: usize,
}

impl Default for BodyConfig {
    fn default() -> Self {
        Self {
            max_message_bytes: common::model::MAX_MESSAGE_BYTES,
            // 64 of the largest messages, or 1000 of 4 KiB: what one request may hold in memory.
            max_batch_bytes: 4 * 1024 * 1024,
            max_batch_messages: 1_000,
            // Three of the largest batches at once. With 24 MiB, 16 clients of the largest batches
            // took the publisher to 120 MiB; with this, 65-111 MiB (and a lower cap no longer lowers
            // the peak).
            max_inflight_bytes: 12 * 1024 * 1024,
            body_timeout_ms: 10_000,
            // PostgreSQL parses `json` recursively within its `max_stack_depth`: at the smallest
            // value it allows (100kB) it took 500 levels here and refused 1,000; at the default
            // (2MB), 8,000 and not 20,000.
            max_json_depth: common::model::MAX_JSON_DEPTH,
        }
    }
}

impl Group for BodyConfig {
    fn complete(self, _vars: &Vars) -> anyhow::Result<Self> {
        ensure(
            self.max_batch_messages > 0,
            "MAX_BATCH_MESSAGES must be at least 1",
        )?;
        ensure(
            self.max_json_depth >= 2,
            "MAX_JSON_DEPTH must be at least 2 (the message and its messageAttributes object)",
        )?;
        ensure(
            self.max_message_bytes <= self.max_batch_bytes
                && self.max_batch_bytes <= self.max_inflight_bytes,
            "MAX_MESSAGE_BYTES must be at most MAX_BATCH_BYTES, and MAX_BATCH_BYTES at most MAX_INFLIGHT_BYTES",
        )?;
        Ok(self)
    }
}

common::settings!(Config {
    broker,
    http,
    telemetry,
    links,
    body
});

#[cfg(test)]
mod tests {
    use common::{
        settings::{pairs, Settings},
        web::Scope,
    };

    use super::*;

    #[test]
    fn an_empty_environment_gives_the_contract_defaults() {
        let config = Config::from_vars([]).unwrap();
        assert_eq!(
            config.broker.amqp_url,
            "amqp://guest:guest@127.0.0.1:5672/%2f"
        );
        assert_eq!(config.http.http_port, 8080);
        assert_eq!(config.broker.queue_name, "messages");
        assert_eq!(config.http.http_host, "0.0.0.0");
        assert_eq!(format!("{:?}", config), format!("{:?}", Config::default()));
    }

    #[test]
    fn a_value_that_does_not_parse_is_reported_with_its_variable() {
        let err = Config::from_vars(pairs(&[("HTTP_PORT", "eighty")])).unwrap_err();
        assert!(err.to_string().contains("HTTP_PORT"), "{err}");
        let err = Config::from_vars(pairs(&[("MAX_JSON_DEPTH", "1")])).unwrap_err();
        assert!(err.to_string().contains("MAX_JSON_DEPTH"), "{err}");
    }

    #[test]
    fn required_tokens_stop_the_publisher_without_a_publish_token() {
        let check = |vars: &[(&str, &str)]| {
            Config::from_vars(pairs(vars))
                .unwrap()
                .http
                .require_tokens_for(&[Scope::Publish])
        };
        let required = ("REQUIRE_TOKENS", "true");
        let err = check(&[required]).unwrap_err();
        assert!(err.to_string().contains("PUBLISH_TOKENS"), "{err}");
        assert!(check(&[required, ("PUBLISH_TOKENS", "publish-token-secret-0001")]).is_ok());
        assert!(check(&[]).is_ok());
    }
}
