//! Builds the consumer: binds the HTTP listener, prepares the pool, and runs the HTTP API and the
//! ingestion loop until a shutdown future resolves.

use std::{future::Future, sync::Arc, time::Duration};

use actix_web::dev::Server;
use common::web::{self, Scope};
use tokio_util::sync::CancellationToken;

use crate::{
    config::{Config, DatabaseConfig},
    database,
    ingest::{Ingest, Outlets},
    metrics::Metrics,
    migrations::MigrationSettings,
    monitor::Board,
    retention::Maintenance,
    routes,
    state::AppState,
    status::PeerStatus,
    store::MessageStore,
};

/// A built consumer, bound to its port but not yet serving or consuming.
pub struct Application {
    port: u16,
    server: Server,
    ingest: Ingest,
    store: MessageStore,
    status: Arc<PeerStatus>,
    database: DatabaseConfig,
    shutdown_timeout: Duration,
    /// Cancelled at the shutdown signal, to end the feed's streams and long polls.
    feed_closing: CancellationToken,
    maintenance: Maintenance,
}

impl Application {
    /// Binds `HTTP_HOST:HTTP_PORT` (port 0 picks a free one) and prepares everything; connects to nothing yet.
    pub fn build(config: &Config) -> anyhow::Result<Self> {
        config
            .http
            .require_tokens_for(&[Scope::Read, Scope::Admin])?;
        let (listener, port) = config.http.bind()?;
        let store = MessageStore::new(
            config.database.write_pool()?,
            Duration::from_millis(config.database.db_write_timeout_ms),
        )
        .with_read_pool(config.database.read_pool()?);
        let metrics = Arc::new(Metrics::new());
        let requests = metrics.http.clone();
        let status = Arc::new(PeerStatus::new(
            metrics.broker_connected.clone(),
            metrics.database_up.clone(),
        ));
        let board = Arc::new(Board::default());
        let feed = crate::feed::Feed::new(&config.feed, metrics.clone());
        let maintenance = Maintenance::new(
            &config.database.database_url,
            MigrationSettings::of(&config.database),
            &config.retention,
            metrics.clone(),
        )?;
        let feed_closing = feed.closing.clone();
        let broker = crate::broker::address(&config.broker)?;
        let ingest = Ingest::new(
            broker.clone(),
            config.broker.topology(),
            &config.ingest,
            &config.scaling,
            Outlets {
                store: store.clone(),
                status: status.clone(),
                metrics: metrics.clone(),
                board: board.clone(),
            },
        );
        let state = actix_web::web::Data::new(AppState {
            store: store.clone(),
            status: status.clone(),
            metrics,
            board,
            dead_letters: crate::dead_letters::DeadLetterQueue::new(
                broker,
                config.broker.topology(),
            ),
            stuck_write: Duration::from_millis(config.database.db_stuck_write_ms),
            reads: config.reads.clone(),
            feed,
        });
        let server = config.http.serve(listener, state, requests, &routes::API)?;
        Ok(Self {
            port,
            server,
            ingest,
            store,
            status,
            database: config.database.clone(),
            shutdown_timeout: config.http.shutdown_timeout(),
            feed_closing,
            maintenance,
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
            let (ingest, store, status, database) =
                (self.ingest, self.store.clone(), self.status, self.database);
            let maintenance = self.maintenance;
            async move {
                match database::prepare(&database, store.pool(), &cancel).await {
                    Ok(true) => {
                        status.set_database(true);
                        let maintaining = tokio::spawn(maintenance.run(cancel.clone()));
                        ingest.run(cancel).await;
                        maintaining.abort();
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
        let served = web::serve_until(self.server, shutdown, {
            let (cancel, signal_at) = (cancel.clone(), signal_at.clone());
            let feed_closing = self.feed_closing.clone();
            move || {
                let _ = signal_at.set(tokio::time::Instant::now());
                cancel.cancel();
                feed_closing.cancel();
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
