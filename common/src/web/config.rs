//! The HTTP settings both services read alike; only the default port differs ([`DefaultPort`]).

use std::{fmt, marker::PhantomData, net::TcpListener, time::Duration};

use actix_web::{
    dev::Server,
    web::{get, to, Data, ServiceConfig},
    Route,
};
use serde::{Deserialize, Serialize};

use super::{auth::Scope, metrics::HttpMetrics, server, Access, Doors, OpenApiDocument, Tokens};
use crate::settings::{Group, Vars};

/// What a service serves: its OpenAPI document (YAML), its own routes with who may use each, and its
/// probes' handlers (`GET /readyz`, `GET /metrics`), which are open like `/healthz`.
pub struct Api {
    pub openapi: &'static str,
    pub routes: fn(&mut ServiceConfig, &Doors),
    pub probes: fn() -> [Route; 2],
}

/// The port a service listens on unless `HTTP_PORT` says otherwise (serde cannot derive for a const
/// generic, so each service names its port with a type).
pub trait DefaultPort: Clone + fmt::Debug + Send + Sync + 'static {
    const PORT: u16;
}

/// Where the HTTP server listens, how it treats slow clients and shutdown, and who may use it.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(default, bound = "")]
pub struct HttpConfig<P: DefaultPort> {
    /// `HTTP_HOST`: address the HTTP server binds.
    pub http_host: String,
    /// `HTTP_PORT`: port the HTTP server binds; 0 picks a free one.
    pub http_port: u16,
    /// `HTTP_WORKERS`: HTTP worker threads; 0 means one per CPU core.
    pub http_workers: usize,
    /// `HTTP_WRITE_TIMEOUT_SECS`: a connection whose client leaves the response unread this long is closed.
    pub http_write_timeout_secs: u64,
    /// `SHUTDOWN_TIMEOUT_SECS`: longest wait for in-flight work after SIGTERM.
    pub shutdown_timeout_secs: u64,
    /// `REQUIRE_TOKENS`: refuse to start unless every scope this service guards has a token, so that a
    /// missing Secret in production stops the rollout instead of opening the API.
    pub require_tokens: bool,
    /// `PUBLISH_TOKENS`, `READ_TOKENS`, `ADMIN_TOKENS` (or their `_FILE`s): none means every route is
    /// open (unless `REQUIRE_TOKENS` is set). Read by [`Tokens::from_vars`], not by envy, and never
    /// written back as variables.
    #[serde(skip)]
    pub tokens: Tokens,
    #[serde(skip)]
    port: PhantomData<P>,
}

impl<P: DefaultPort> Default for HttpConfig<P> {
    fn default() -> Self {
        Self {
            http_host: "0.0.0.0".into(),
            http_port: P::PORT,
            http_workers: 0,
            http_write_timeout_secs: 30,
            shutdown_timeout_secs: 20,
            require_tokens: false,
            tokens: Tokens::default(),
            port: PhantomData,
        }
    }
}

impl<P: DefaultPort> Group for HttpConfig<P> {
    fn complete(mut self, vars: &Vars) -> anyhow::Result<Self> {
        self.tokens = Tokens::from_vars(vars.pairs())?;
        Ok(self)
    }
}

impl<P: DefaultPort> HttpConfig<P> {
    /// Binds `HTTP_HOST:HTTP_PORT` (port 0 picks a free one), returning the listener and its port.
    pub fn bind(&self) -> anyhow::Result<(TcpListener, u16)> {
        server::bind(&self.http_host, self.http_port)
    }

    /// With `REQUIRE_TOKENS`, fails naming the first of `scopes` that has no token. Called where a
    /// service builds the HTTP server that guards those scopes, not when the configuration is read: a
    /// setup step (`consumer declare-topology`) shares the service's settings but serves nothing.
    pub fn require_tokens_for(&self, scopes: &[Scope]) -> anyhow::Result<()> {
        if !self.require_tokens {
            return Ok(());
        }
        match scopes.iter().find(|scope| !self.tokens.has(**scope)) {
            Some(scope) => {
                let variable = scope.variable();
                anyhow::bail!(
                    "invalid configuration: REQUIRE_TOKENS is set but {variable} (or {variable}_FILE) \
                     gives no token: without it the routes it guards would be open"
                )
            }
            None => Ok(()),
        }
    }

    /// The server of a service, bound to `listener`, with this group's workers and timeouts: the
    /// service's `state` for its handlers and its [`Api`], then what every service serves alike —
    /// `GET /healthz`, `GET /openapi.json` and 404 for any other path — all behind the request metrics
    /// of `requests`.
    pub fn serve<S: Send + Sync + 'static>(
        &self,
        listener: TcpListener,
        state: Data<S>,
        requests: HttpMetrics,
        api: &Api,
    ) -> anyhow::Result<Server> {
        let openapi = OpenApiDocument::from_yaml(api.openapi)?;
        let doors = Doors::new(self.tokens.clone());
        let (routes, probes) = (api.routes, api.probes);
        let app = move || {
            let open = |path, route| doors.route(path, Access::Open, "GET", route);
            let [readyz, metrics] = probes();
            server::app(requests.clone())
                .app_data(state.clone())
                .configure(|config| routes(config, &doors))
                .service(open("/readyz", readyz))
                .service(open("/metrics", metrics))
                .service(open("/healthz", get().to(server::healthz)))
                .service(open("/openapi.json", openapi.route()))
                .default_service(to(server::not_found))
        };
        server::server(
            app,
            listener,
            self.http_workers,
            Duration::from_secs(self.http_write_timeout_secs),
            self.shutdown_timeout_secs,
        )
    }

    /// `SHUTDOWN_TIMEOUT_SECS` as a duration.
    pub fn shutdown_timeout(&self) -> Duration {
        Duration::from_secs(self.shutdown_timeout_secs)
    }
}

/// The variables tokens are read from (each scope's list and its file), which envy does not read.
pub fn token_variables() -> Vec<String> {
    Scope::ALL
        .iter()
        .flat_map(|scope| {
            [
                scope.variable().to_owned(),
                format!("{}_FILE", scope.variable()),
            ]
        })
        .collect()
}
