//! The consumer service: drains RabbitMQ into PostgreSQL and serves the stored messages over HTTP.
//!
//! `startup` wires everything; `ingest` is the queue-to-table loop (a pipeline per queue, and the queue
//! watch whose scaler decides how many batch writers each gets); `dead_letters` is everything about
//! `<QUEUE_NAME>.dead`; `store` owns the SQL and `database` the pools and start-up; `feed` decides when
//! the feed's followers look again and how many there may be; `routes` holds the endpoints; `monitor` is the worker monitor page; `error` maps every failure to a status.

mod broker;
pub mod config;
mod database;
mod dead_letters;
mod error;
mod feed;
mod ingest;
mod metrics;
pub mod migrations;
mod monitor;
mod retention;
mod routes;
mod setup;
mod startup;
mod state;
mod status;
mod store;

pub use config::Config;
pub use dead_letters::{
    CONNECTION_NAME as DEAD_LETTER_CONNECTION, REASON_HEADER as DEAD_LETTER_REASON_HEADER,
};
pub use ingest::{prefetch_of, KEY_REUSED};
pub use retention::Round as MaintenanceRound;
pub use routes::messages::{parse_list_query, ListQuery, MAX_LIMIT};
pub use setup::{dead_letter_limit, declare_topology};
pub use startup::Application;
pub use store::{
    feed_query, page_query, poisons_connection, Cursor, FeedCursor, MessageStore, PageRequest,
    Phase as FeedPhase,
};

use common::settings::Settings as _;
use common::{shutdown, telemetry};

/// One maintenance round of the database `config` names, as of `now`, as the service runs them every
/// `RETENTION_CHECK_SECS`: partitions made ahead, those past `RETENTION` dropped, the table converted to
/// partitions the first time `RETENTION` is set. For tests, and for operators who want a round now.
pub async fn maintenance_round(
    config: &Config,
    now: chrono::DateTime<chrono::Utc>,
) -> anyhow::Result<MaintenanceRound> {
    retention::Maintenance::new(
        &config.database.database_url,
        migrations::MigrationSettings::of(&config.database),
        &config.retention,
        std::sync::Arc::new(metrics::Metrics::new()),
    )?
    .round(now)
    .await
}

/// The whole process: configuration from the environment, logging, and the service until SIGTERM;
/// or, as `consumer declare-topology`, the setup step that declares the broker's topology and exits.
pub async fn run() -> anyhow::Result<()> {
    let config = config::Config::from_env()?;
    let _telemetry = telemetry::init(&config.telemetry, "consumer")?;
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
