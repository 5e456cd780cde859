//! Builds the consumer: binds the HTTP listener, prepares the pool, and runs the HTTP API and the
//! ingestion loop until a shutdown future resolves.

use std::{future::Future, sync::Arc, time::Duration};

use actix_web::{dev::Server, web, App};
use common::{config::ConsumerConfig, http, openapi::OpenApiDocument};
use tokio_util::sync::CancellationToken;

use crate::{
    database,
    ingest::{Ingest, IngestSettings},
    metrics::Metrics,
    routes,
    status::PeerStatus,
    store::MessageStore,
};

/// The service's OpenAPI document, the one source of truth for its API.
pub const OPENAPI_YAML: &str = include_str!("../openapi.yaml");

/// What every request handler can reach.
pub struct AppState {
    pub store: MessageStore,
    pub status: Arc<PeerStatus>,
    pub metrics: Arc<Metrics>,
}

/// A built consumer, bound to its port but not yet serving or consuming.
pub struct Application {
    port: u16,
    server: Server,
    ingest: Ingest,
    store: MessageStore,
    status: Arc<PeerStatus>,
    database_url: String,
}

impl Application {
    /// Binds `HTTP_HOST:HTTP_PORT` (port 0 picks a free one) and prepares everything; connects to nothing yet.
    pub fn build(config: &ConsumerConfig) -> anyhow::Result<Self> {
        let (listener, port) = http::bind(&config.http_host, config.http_port)?;
        let store = MessageStore::new(database::lazy_pool(
            &config.database_url,
            config.db_pool_size,
        )?);
        let metrics = Arc::new(Metrics::new());
        let status = Arc::new(PeerStatus::new(
            metrics.broker_connected.clone(),
            metrics.database_up.clone(),
        ));
        let ingest = Ingest::new(
            IngestSettings {
                amqp_url: config.amqp_url.clone(),
                topology: config.topology(),
                batch_size: config.batch_size,
                batch_linger: Duration::from_millis(config.batch_linger_ms),
                prefetch: config.prefetch,
            },
            store.clone(),
            status.clone(),
            metrics.clone(),
        );
        let state = web::Data::new(AppState {
            store: store.clone(),
            status: status.clone(),
            metrics,
        });
        let openapi = OpenApiDocument::from_yaml(OPENAPI_YAML)?;
        let app = move || {
            use routes::{health, messages};
            App::new()
                .app_data(state.clone())
                .service(http::get("/message", messages::list))
                .service(http::get("/message/{id}", messages::get))
                .service(http::get("/healthz", http::healthz))
                .service(http::get("/readyz", health::readyz))
                .service(http::get("/metrics", health::metrics))
                .service(http::resource("/openapi.json", "GET", openapi.route()))
                .default_service(web::to(http::not_found))
        };
        let server = http::server(
            app,
            listener,
            config.http_workers,
            config.shutdown_timeout_secs,
        )?;
        Ok(Self {
            port,
            server,
            ingest,
            store,
            status,
            database_url: config.database_url.clone(),
        })
    }

    /// The port the server is bound to.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Serves and consumes until `shutdown` resolves, then stores and acknowledges the batch in hand,
    /// finishes the requests in flight and closes every connection.
    pub async fn run_until_stopped(self, shutdown: impl Future<Output = ()>) -> anyhow::Result<()> {
        let cancel = CancellationToken::new();
        let ingest = tokio::spawn({
            let cancel = cancel.clone();
            let (ingest, store, status, url) = (
                self.ingest,
                self.store.clone(),
                self.status,
                self.database_url,
            );
            async move {
                if database::prepare(&url, store.pool(), &cancel).await {
                    status.set_database(true);
                    ingest.run(cancel).await;
                }
            }
        });
        let served = http::serve_until(self.server, shutdown, || cancel.cancel()).await;
        cancel.cancel();
        let _ = ingest.await;
        self.store.pool().close().await;
        served
    }
}
