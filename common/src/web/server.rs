//! HTTP pieces both services configure the same way.

use std::{fmt, future::Future, net::TcpListener, time::Duration};

use actix_http::{Request, Response};
use actix_service::IntoServiceFactory;
use actix_web::{
    body::{BoxBody, MessageBody},
    dev::{
        AppConfig, HttpServiceFactory, Server, Service, ServiceFactory, ServiceRequest,
        ServiceResponse,
    },
    http::StatusCode,
    middleware::Next,
    App, Error, HttpResponse, HttpServer,
};
use anyhow::Context;

use super::{
    auth::{Access, Tokens},
    metrics::HttpMetrics,
    problem::{kinds, Problem},
};

/// Binds `host:port` (port 0 picks a free one) and returns the listener with the port it got.
pub fn bind(host: &str, port: u16) -> anyhow::Result<(TcpListener, u16)> {
    let listener =
        TcpListener::bind((host, port)).with_context(|| format!("Failed to bind {host}:{port}"))?;
    let port = listener
        .local_addr()
        .context("Failed to read the bound port")?
        .port();
    Ok((listener, port))
}

/// Open connections one worker accepts before it stops accepting more (idle clients cannot exhaust it).
const MAX_CONNECTIONS_PER_WORKER: usize = 10_000;
/// Longest a client may take to send its request line and headers before the connection is closed.
const HEADER_TIMEOUT: Duration = Duration::from_secs(5);

/// Builds the HTTP server both services run: `workers` threads on `listener`, signals left to the caller
/// (so tests can drive shutdown), a short keep-alive so idle connections do not hold a graceful stop
/// open, bounded connections and header time, responses that must be taken within `write_timeout`, and
/// at most `shutdown_timeout_secs` to answer the requests in flight once stopped.
pub fn server<F, I, S, B>(
    app: F,
    listener: TcpListener,
    workers: usize,
    write_timeout: Duration,
    shutdown_timeout_secs: u64,
) -> anyhow::Result<Server>
where
    F: Fn() -> I + Send + Clone + 'static,
    I: IntoServiceFactory<S, Request>,
    S: ServiceFactory<Request, Config = AppConfig> + 'static,
    S::Error: Into<Error> + 'static,
    S::InitError: fmt::Debug,
    S::Response: Into<Response<B>> + 'static,
    <S::Service as Service<Request>>::Future: 'static,
    S::Service: 'static,
    B: MessageBody + 'static,
{
    // `listen` takes the connection hook set so far: set it first.
    Ok(HttpServer::new(app)
        .on_connect(move |connection, _| bound_write_time(connection, write_timeout))
        .workers(self::workers(workers))
        .listen(listener)
        .context("Failed to listen")?
        .disable_signals()
        .keep_alive(Duration::from_secs(5))
        .max_connections(MAX_CONNECTIONS_PER_WORKER)
        .client_request_timeout(HEADER_TIMEOUT)
        .shutdown_timeout(shutdown_timeout_secs)
        .run())
}

/// Closes a connection whose client leaves what the service sent unread (or unacknowledged) for
/// `timeout`, so that a client that never reads cannot hold a response's memory, nor its connection,
/// for longer. actix-web has no write timeout of its own, and stops polling a response whose client does
/// not read, so the kernel keeps the time: Linux's `TCP_USER_TIMEOUT` covers data that waits for an
/// acknowledgement and data held back by a zero receive window alike. Elsewhere this does nothing.
fn bound_write_time(connection: &dyn std::any::Any, timeout: Duration) {
    #[cfg(target_os = "linux")]
    if let Some(stream) = connection.downcast_ref::<actix_web::rt::net::TcpStream>() {
        if let Err(error) = socket2::SockRef::from(stream).set_tcp_user_timeout(Some(timeout)) {
            tracing::warn!(%error, "could not bound the time a client may leave a response unread");
        }
    }
    #[cfg(not(target_os = "linux"))]
    let _ = (connection, timeout);
}

/// An `App` with what both services put in front of every route: the request metrics of `requests`
/// (outermost, so refusals are counted too). Who may use each route is decided by the route itself, after
/// routing (see [`Doors`]).
pub fn app(
    requests: HttpMetrics,
) -> App<
    impl ServiceFactory<
        ServiceRequest,
        Config = (),
        Response = ServiceResponse<impl MessageBody>,
        Error = Error,
        InitError = (),
    >,
> {
    App::new().wrap(actix_web::middleware::from_fn(
        move |request: ServiceRequest, next: Next<BoxBody>| {
            super::metrics::track(requests.clone(), request, next)
        },
    ))
}

/// Builds every route of a service, each with its [`Access`] decided where it is built: a route cannot
/// be made without one. The check runs in the route's own middleware, after routing, so it applies to
/// whatever spelling of the path reached the route; checking the raw path before routing would let
/// `/%6Dessage` past a rule written for `/message`.
#[derive(Clone)]
pub struct Doors {
    tokens: Tokens,
}

impl Doors {
    pub fn new(tokens: Tokens) -> Self {
        Self { tokens }
    }

    /// `GET path` served by `handler` for those `access` lets in; any other method answers 405 with
    /// `Allow: GET`.
    pub fn get<F, Args>(
        &self,
        path: &'static str,
        access: Access,
        handler: F,
    ) -> impl HttpServiceFactory
    where
        F: actix_web::Handler<Args>,
        Args: actix_web::FromRequest + 'static,
        F::Output: actix_web::Responder + 'static,
    {
        self.route(path, access, "GET", actix_web::web::get().to(handler))
    }

    /// `POST path` served by `handler` for those `access` lets in; any other method answers 405 with
    /// `Allow: POST`.
    pub fn post<F, Args>(
        &self,
        path: &'static str,
        access: Access,
        handler: F,
    ) -> impl HttpServiceFactory
    where
        F: actix_web::Handler<Args>,
        Args: actix_web::FromRequest + 'static,
        F::Output: actix_web::Responder + 'static,
    {
        self.route(path, access, "POST", actix_web::web::post().to(handler))
    }

    /// A path served by one route for those `access` lets in, answering any other method with 405 and
    /// `Allow: <allow>` (to them only).
    pub fn route(
        &self,
        path: &'static str,
        access: Access,
        allow: &'static str,
        route: actix_web::Route,
    ) -> impl HttpServiceFactory {
        let tokens = self.tokens.clone();
        actix_web::web::resource(path)
            .route(route)
            .default_service(method_not_allowed(allow))
            .wrap(actix_web::middleware::from_fn(
                move |request: ServiceRequest, next: Next<BoxBody>| {
                    super::auth::admit(tokens.clone(), access, path, request, next)
                },
            ))
    }
}

/// Serves until the server fails or `shutdown` resolves. On shutdown, `on_stop` runs first (so the
/// caller's background work winds down at the same moment), then the server stops gracefully: it takes
/// no new connections and answers the requests in flight, within its shutdown timeout.
pub async fn serve_until(
    server: Server,
    shutdown: impl Future<Output = ()>,
    on_stop: impl FnOnce(),
) -> anyhow::Result<()> {
    let handle = server.handle();
    let mut serving = tokio::spawn(server);
    let served = tokio::select! {
        result = &mut serving => result,
        () = shutdown => {
            tracing::info!("stopping: finishing the work in flight");
            on_stop();
            handle.stop(true).await;
            serving.await
        }
    };
    served
        .context("The HTTP server task failed")?
        .context("The HTTP server failed")
}

/// Worker threads for a configured `HTTP_WORKERS`: 0 means one per CPU core.
fn workers(configured: usize) -> usize {
    if configured == 0 {
        std::thread::available_parallelism().map_or(1, |n| n.get())
    } else {
        configured
    }
}

/// `GET /healthz`: 200 while the process can answer at all; the same for both services.
pub async fn healthz() -> HttpResponse {
    HttpResponse::Ok().json(serde_json::json!({ "status": "ok" }))
}

/// The answer to a known path asked with a method it does not serve: a 405 problem naming the methods
/// it does serve, in the `Allow` header too.
fn method_not_allowed(allow: &'static str) -> actix_web::Route {
    actix_web::web::to(move || async move {
        let mut response = Problem::new(
            StatusCode::METHOD_NOT_ALLOWED,
            kinds::METHOD_NOT_ALLOWED,
            format!("this route answers {allow} only"),
        )
        .to_response();
        response.headers_mut().insert(
            actix_web::http::header::ALLOW,
            actix_web::http::header::HeaderValue::from_static(allow),
        );
        response
    })
}

/// The answer to a path no route matches: a 404 problem, like every other error.
pub async fn not_found() -> HttpResponse {
    Problem::new(StatusCode::NOT_FOUND, kinds::NOT_FOUND, "no such route").to_response()
}
