//! Builds the publisher: binds the HTTP listener, wires routes to shared state, and runs the server and
//! the broker links' upkeep until a shutdown future resolves.

use std::{future::Future, sync::Arc, time::Duration};

use actix_web::{dev::Server, web};
use common::{
    auth::{Access, Scope},
    config::PublisherConfig,
    http,
    openapi::OpenApiDocument,
};

use crate::{body::InflightBytes, broker::Broker, metrics::Metrics, routes, state::AppState};

/// The service's OpenAPI document, the one source of truth for its API.
pub const OPENAPI_YAML: &str = include_str!("../openapi.yaml");

/// A built publisher, bound to its port but not yet serving.
pub struct Application {
    port: u16,
    server: Server,
    broker: Arc<Broker>,
}

impl Application {
    /// Binds `HTTP_HOST:HTTP_PORT` (port 0 picks a free one) and prepares the server.
    pub fn build(config: &PublisherConfig) -> anyhow::Result<Self> {
        config
            .service
            .require_tokens_for(&[common::auth::Scope::Publish])?;
        let (listener, port) = http::bind(&config.service.http_host, config.http_port)?;
        let metrics = Arc::new(Metrics::new());
        let broker = Arc::new(Broker::new(
            config.service.broker()?,
            config.service.topology(),
            config.amqp_connections,
            config.publish_channels,
            Duration::from_millis(config.confirm_timeout_ms),
            metrics.clone(),
        ));
        let state = web::Data::new(AppState {
            broker: broker.clone(),
            metrics,
            max_message_bytes: config.service.max_message_bytes,
            max_batch_messages: config.max_batch_messages,
            max_batch_bytes: config.max_batch_bytes,
            body_timeout: Duration::from_millis(config.body_timeout_ms),
            max_json_depth: config.max_json_depth,
            inflight: InflightBytes::new(config.max_inflight_bytes),
        });
        let openapi = OpenApiDocument::from_yaml(OPENAPI_YAML)?;
        // Publishing needs a publish token when tokens are configured; health, readiness, metrics and
        // the OpenAPI document stay open for probes and scrapers.
        let doors = http::Doors::new(config.service.tokens.clone());
        let app = move || {
            use routes::{health, publish};
            const PUBLISH: Access = Access::Needs(Scope::Publish);
            http::app(state.metrics.http.clone())
                .app_data(state.clone())
                .service(doors.post("/message/publish", PUBLISH, publish::publish_one))
                .service(doors.post("/message/publish/batch", PUBLISH, publish::publish_batch))
                .service(doors.get("/healthz", Access::Open, http::healthz))
                .service(doors.get("/readyz", Access::Open, health::readyz))
                .service(doors.get("/metrics", Access::Open, health::metrics))
                .service(doors.route("/openapi.json", Access::Open, "GET", openapi.route()))
                .default_service(web::to(http::not_found))
        };
        let server = http::server(
            app,
            listener,
            config.service.http_workers,
            Duration::from_secs(config.service.http_write_timeout_secs),
            config.service.shutdown_timeout_secs,
        )?;
        Ok(Self {
            port,
            server,
            broker,
        })
    }

    /// The port the server is bound to.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Serves until `shutdown` resolves, then stops taking connections, answers the requests in flight
    /// (each waits at most for its confirm timeout) and closes the broker connection.
    pub async fn run_until_stopped(self, shutdown: impl Future<Output = ()>) -> anyhow::Result<()> {
        let (stop_broker, broker_stopped) = tokio::sync::oneshot::channel::<()>();
        let supervisor = tokio::spawn(self.broker.clone().tend(async {
            let _ = broker_stopped.await;
        }));
        let served = http::serve_until(self.server, shutdown, || {}).await;
        let _ = stop_broker.send(());
        let _ = supervisor.await;
        served
    }
}
