//! The consumer service: drains RabbitMQ into PostgreSQL and serves the stored messages over HTTP.
//!
//! `startup` wires everything; `ingest` is the queue-to-table loop; `scaling` decides how many batch
//! writers each queue gets; `store` owns the SQL; `routes` holds the endpoints; `monitor` is the worker
//! monitor page; `error` maps every failure to a status.

pub mod broker;
pub mod config;
pub mod database;
pub mod dead_letters;
pub mod error;
pub mod ingest;
pub mod metrics;
pub mod migrations;
pub mod monitor;
pub mod routes;
pub mod scaling;
pub mod setup;
pub mod startup;
pub mod state;
pub mod status;
pub mod store;

use common::settings::Settings as _;
use common::{shutdown, telemetry};

/// The whole process: configuration from the environment, logging, and the service until SIGTERM;
/// or, as `consumer declare-topology`, the setup step that declares the broker's topology and exits.
pub async fn run() -> anyhow::Result<()> {
    let config = config::Config::from_env()?;
    telemetry::init(&config.telemetry);
    match std::env::args().nth(1).as_deref() {
        None => {}
        Some("declare-topology") => return setup::declare_topology(&config).await,
        Some("permissions") => {
            let service = std::env::args().nth(2).unwrap_or_default();
            println!("{}", setup::permissions(&config, &service)?);
            return Ok(());
        }
        Some("dead-letter-policy") => {
            // Nothing on standard output when there is no policy to apply; why goes to the error stream.
            match setup::dead_letter_policy(&config) {
                Some(policy) => println!("{policy}"),
                None => eprintln!("{}", setup::CLASSIC_UNLIMITED),
            }
            return Ok(());
        }
        Some(other) => anyhow::bail!(
            "unknown command {other:?}: run `consumer` for the service, or one of the setup steps \
             `consumer declare-topology`, `consumer permissions publisher|consumer`, \
             `consumer dead-letter-policy`"
        ),
    }
    let app = startup::Application::build(&config)?;
    common::amqp::warn_about_plaintext_amqp(&config.broker.amqp_url);
    database::warn_about_plaintext(&config.database.database_url);
    tracing::info!(port = app.port(), queue = %config.broker.queue_name, "consumer listening");
    app.run_until_stopped(shutdown::signal()).await
}
