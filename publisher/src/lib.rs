//! The publisher service: accepts JSON messages over HTTP and hands them to RabbitMQ, answering
//! `202 Accepted` only once the broker has confirmed them.
//!
//! `startup` wires everything; `routes` holds the endpoints; `body` and `idempotency` turn requests
//! into messages; `broker` publishes them over the connections `links` pools; `error` maps every failure to a status.

mod body;
mod broker;
pub mod config;
mod error;
mod idempotency;
mod links;
mod metrics;
mod routes;
mod startup;
mod state;

pub use body::{parse_batch, parse_message, BodyError};
pub use config::Config;
pub use idempotency::{IdempotencyKey, InvalidKey, HEADER as IDEMPOTENCY_KEY};
pub use startup::Application;

use common::settings::Settings as _;
use common::{shutdown, telemetry};

/// The whole process: configuration from the environment, logging, and the service until SIGTERM.
pub async fn run() -> anyhow::Result<()> {
    let config = config::Config::from_env()?;
    let _telemetry = telemetry::init(&config.telemetry, "publisher")?;
    let app = startup::Application::build(&config)?;
    common::amqp::warn_about_plaintext_amqp(&config.broker.amqp_url);
    tracing::info!(port = app.port(), queue = %config.broker.queue_name, "publisher listening");
    app.run_until_stopped(shutdown::signal()).await
}
