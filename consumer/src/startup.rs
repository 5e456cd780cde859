//! Builds the consumer: binds the HTTP listener, prepares the pool, and runs the HTTP API and the
//! ingestion loop until a shutdown future resolves.

use std::{future::Future, sync::Arc, time::Duration};

use actix_web::{dev::Server, web};
use common::{
    auth::{Access, Scope},
    config::ConsumerConfig,
    http,
    openapi::OpenApiDocument,
};
use tokio_util::sync::CancellationToken;

use crate::{
    database,
    ingest::{Ingest, IngestSettings},
    metrics::Metrics,
    migrations::MigrationSettings,
    monitor::{self, Board},
    routes,
    scaling::ScalingSettings,
    state::AppState,
    status::PeerStatus,
    store::MessageStore,
};

/// The service's OpenAPI document, the one source of truth for its API.
pub const OPENAPI_YAML: &str = include_str!("../openapi.yaml");

/// A built consumer, bound to its port but not yet serving or consuming.
pub struct Application {
    port: u16,
    server: Server,
    ingest: Ingest,
    store: MessageStore,
    status: Arc<PeerStatus>,
    database_url: String,
    migrations: MigrationSettings,
    shutdown_timeout: Duration,
}

impl Application {
    /// Binds `HTTP_HOST:HTTP_PORT` (port 0 picks a free one) and prepares everything; connects to nothing yet.
    pub fn build(config: &ConsumerConfig) -> anyhow::Result<Self> {
        config
            .service
            .require_tokens_for(&[common::auth::Scope::Read, common::auth::Scope::Admin])?;
        let (listener, port) = http::bind(&config.service.http_host, config.http_port)?;
        let session = database::SessionSettings {
            statement_timeout: Duration::from_millis(config.db_statement_timeout_ms),
            tcp_keepalive_secs: config.db_tcp_keepalive_secs,
        };
        let store = MessageStore::new(
            database::lazy_pool(&config.database_url, config.db_pool_size, session)?,
            Duration::from_millis(config.db_write_timeout_ms),
        )
        .with_read_pool(database::lazy_pool(
            &config.database_url,
            config.db_read_pool_size,
            database::SessionSettings {
                statement_timeout: Duration::from_millis(config.db_read_timeout_ms),
                ..session
            },
        )?);
        let metrics = Arc::new(Metrics::new());
        let status = Arc::new(PeerStatus::new(
            metrics.broker_connected.clone(),
            metrics.database_up.clone(),
        ));
        let board = Arc::new(Board::default());
        let broker = crate::broker::address(&config.service)?;
        let ingest = Ingest::new(
            IngestSettings {
                broker: broker.clone(),
                topology: config.service.topology(),
                batch_size: config.batch_size,
                batch_bytes: config.batch_bytes,
                batch_linger: Duration::from_millis(config.batch_linger_ms),
                prefetch: config.effective_prefetch(),
                max_payload_bytes: config.max_payload_bytes(),
                scaling: ScalingSettings {
                    min: config.writers_min,
                    max: config.writers_max,
                    target_drain: Duration::from_secs(config.scale_target_drain_secs),
                    cooldown: Duration::from_secs(config.scale_cooldown_secs),
                    // Two looks between increases: one to see the step take effect, one to measure it.
                    settle: 2 * Duration::from_millis(config.queue_watch_interval_ms),
                    idle_backlog: config.batch_size as u64,
                },
                watch_interval: Duration::from_millis(config.queue_watch_interval_ms),
            },
            store.clone(),
            status.clone(),
            metrics.clone(),
            board.clone(),
        );
        let state = web::Data::new(AppState {
            store: store.clone(),
            status: status.clone(),
            metrics,
            board,
            dead_letters: crate::dead_letters::DeadLetterQueue::new(
                broker,
                config.service.topology(),
            ),
            stuck_write: Duration::from_millis(config.db_stuck_write_ms),
            max_page_bytes: config.max_page_bytes,
            public_base_url: config.public_base_url.clone(),
        });
        let openapi = OpenApiDocument::from_yaml(OPENAPI_YAML)?;
        // Reading messages and the monitor's data needs a read token when tokens are configured, and
        // dead-letter operations an admin token. The monitor page itself holds no data; probes, metrics
        // and the OpenAPI document stay open.
        let doors = http::Doors::new(config.service.tokens.clone());
        let app = move || {
            use routes::{dead_letters, health, messages};
            const READ: Access = Access::Needs(Scope::Read);
            const ADMIN: Access = Access::Needs(Scope::Admin);
            http::app(state.metrics.http.clone())
                .app_data(state.clone())
                .service(doors.get("/", Access::Open, monitor::page))
                .service(doors.get("/monitor/status", READ, monitor::status))
                .service(doors.get("/dead-letters", ADMIN, dead_letters::list))
                .service(doors.post("/dead-letters/replay", ADMIN, dead_letters::replay))
                .service(doors.get("/message", READ, messages::list))
                .service(doors.get("/message/{id}", READ, messages::get))
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
            ingest,
            store,
            status,
            database_url: config.database_url.clone(),
            migrations: MigrationSettings {
                statement_timeout: Duration::from_secs(config.db_migration_timeout_secs),
                lock_timeout: Duration::from_millis(config.db_migration_lock_timeout_ms),
                progress_every: crate::migrations::PROGRESS_EVERY,
                tcp_keepalive_secs: config.db_tcp_keepalive_secs,
            },
            shutdown_timeout: Duration::from_secs(config.service.shutdown_timeout_secs),
        })
    }

    /// The port the server is bound to.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Serves and consumes until `shutdown` resolves, then stores and acknowledges the batch in hand,
    /// finishes the requests in flight and closes every connection, all within `SHUTDOWN_TIMEOUT_SECS`
    /// of the signal: a batch that a hanging database cannot take by then is left unacknowledged, for
    /// the broker to deliver again. A database that can never be used (not UTF-8) stops the service
    /// with an error naming why.
    pub async fn run_until_stopped(self, shutdown: impl Future<Output = ()>) -> anyhow::Result<()> {
        let cancel = CancellationToken::new();
        let unusable = Arc::new(std::sync::Mutex::new(None::<database::Unusable>));
        let stopping = CancellationToken::new();
        let mut ingest = tokio::spawn({
            let cancel = cancel.clone();
            let stopping = stopping.clone();
            let unusable = unusable.clone();
            let (ingest, store, status, url, migrations) = (
                self.ingest,
                self.store.clone(),
                self.status,
                self.database_url,
                self.migrations,
            );
            async move {
                match database::prepare(&url, store.pool(), &migrations, &cancel).await {
                    Ok(true) => {
                        status.set_database(true);
                        ingest.run(cancel).await;
                    }
                    Ok(false) => {}
                    Err(error) => {
                        tracing::error!(%error, "cannot use this database; stopping");
                        *unusable.lock().expect("lock poisoned") = Some(error);
                        stopping.cancel();
                    }
                }
            }
        });
        let signal_at = Arc::new(std::sync::OnceLock::new());
        let shutdown = {
            let stopping = stopping.clone();
            async move {
                tokio::select! {
                    () = shutdown => {}
                    () = stopping.cancelled() => {}
                }
            }
        };
        let served = http::serve_until(self.server, shutdown, {
            let (cancel, signal_at) = (cancel.clone(), signal_at.clone());
            move || {
                let _ = signal_at.set(tokio::time::Instant::now());
                cancel.cancel();
            }
        })
        .await;
        cancel.cancel();
        let deadline = *signal_at.get_or_init(tokio::time::Instant::now) + self.shutdown_timeout;
        if tokio::time::timeout_at(deadline, &mut ingest)
            .await
            .is_err()
        {
            tracing::warn!("the batch in hand was not stored in time; leaving it unacknowledged");
            ingest.abort();
        }
        let _ = tokio::time::timeout_at(
            deadline.max(tokio::time::Instant::now()) + Duration::from_secs(1),
            async {
                self.store.pool().close().await;
                self.store.read_pool().close().await;
            },
        )
        .await;
        if let Some(error) = unusable.lock().expect("lock poisoned").take() {
            return Err(error.into());
        }
        served
    }
}
