//! Builds the publisher: binds the HTTP listener, wires routes to shared state, and runs the server and
//! the broker links' upkeep until a shutdown future resolves.

use std::{future::Future, sync::Arc};

use actix_web::dev::Server;
use common::web::{self, Scope};

use crate::{
    body::InflightBytes, broker::Broker, config::Config, metrics::Metrics, routes, state::AppState,
};

/// A built publisher, bound to its port but not yet serving.
pub struct Application {
    port: u16,
    server: Server,
    broker: Arc<Broker>,
}

impl Application {
    /// Binds `HTTP_HOST:HTTP_PORT` (port 0 picks a free one) and prepares the server.
    pub fn build(config: &Config) -> anyhow::Result<Self> {
        config.http.require_tokens_for(&[Scope::Publish])?;
        let (listener, port) = config.http.bind()?;
        let metrics = Arc::new(Metrics::new());
        let requests = metrics.http.clone();
        let broker = Arc::new(Broker::new(
            config.broker.address()?,
            config.broker.topology(),
            &config.links,
            metrics.clone(),
        ));
        let state = actix_web::web::Data::new(AppState {
            broker: broker.clone(),
            metrics,
            body: config.body.clone(),
            inflight: InflightBytes::new(config.body.max_inflight_bytes),
        });
        Ok(Self {
            port,
            server: config.http.serve(listener, state, requests, &routes::API)?,
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
        let served = web::serve_until(self.server, shutdown, || {}).await;
        let _ = stop_broker.send(());
        let _ = supervisor.await;
        served
    }
}
