//! Test harness for the end-to-end suite: a [`TestStack`] runs the real publisher and consumer against the
//! machine's RabbitMQ and PostgreSQL, with a database and queue names of its own so tests run in parallel,
//! and removes both when dropped (even when the test panics).

pub mod broker_users;
pub mod process;
pub mod proxy;
pub mod raw_http;
pub mod tls;

use std::{future::Future, time::Duration};

use common::config::{ConsumerConfig, PublisherConfig};
use lapin::{
    options::{
        BasicGetOptions, BasicPublishOptions, ExchangeDeleteOptions, QueueDeclareOptions,
        QueueDeleteOptions,
    },
    types::FieldTable,
    BasicProperties, Connection, ConnectionProperties,
};
use sqlx::{postgres::PgPoolOptions, PgPool};
use tokio::{sync::oneshot, task::JoinHandle};
use uuid::Uuid;

/// The broker tests use, overridable with `TEST_AMQP_URL`.
pub fn amqp_url() -> String {
    std::env::var("TEST_AMQP_URL")
        .unwrap_or_else(|_| "amqp://guest:guest@127.0.0.1:5672/%2f".into())
}

/// The PostgreSQL server tests use (any database on it), overridable with `TEST_DATABASE_URL`.
pub fn server_url() -> String {
    std::env::var("TEST_DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into())
}

/// The URL of database `name` on the test server.
pub fn database_url(name: &str) -> String {
    let server = server_url();
    let base = server
        .rsplit_once('/')
        .map_or(server.as_str(), |(base, _)| base);
    format!("{base}/{name}")
}

/// The URL of database `name` on the test server, reached through `address` (a proxy) instead.
pub fn database_url_via(address: std::net::SocketAddr, name: &str) -> String {
    let url = database_url(name);
    let (scheme_and_user, rest) = url.split_once('@').expect("a URL with a user");
    let (_, path) = rest.split_once('/').expect("a URL with a database");
    format!("{scheme_and_user}@{address}/{path}")
}

/// The host and port of a URL such as `amqp://user:password@host:port/vhost`.
pub fn url_address(url: &str) -> std::net::SocketAddr {
    let after_scheme = url.split_once("://").map_or(url, |(_, rest)| rest);
    let authority = after_scheme
        .rsplit_once('@')
        .map_or(after_scheme, |(_, host)| host);
    let authority = authority.split('/').next().expect("an authority");
    std::net::ToSocketAddrs::to_socket_addrs(authority)
        .expect("a resolvable address")
        .next()
        .expect("an address")
}

/// The `/metrics` text of the service at `base_url`.
pub async fn metrics_text(http: &reqwest::Client, base_url: &str) -> String {
    http.get(format!("{base_url}/metrics"))
        .send()
        .await
        .expect("metrics reachable")
        .text()
        .await
        .expect("metrics text")
}

/// Status of `GET url/readyz`, or 0 when the service did not answer within 2 s.
pub async fn readiness(http: &reqwest::Client, url: &str) -> u16 {
    match http
        .get(format!("{url}/readyz"))
        .timeout(Duration::from_secs(2))
        .send()
        .await
    {
        Ok(response) => response.status().as_u16(),
        Err(_) => 0,
    }
}

/// Polls `probe` every 25 ms until it returns `Some`, failing the test with `what` after `deadline`.
pub async fn eventually<T, F, Fut>(deadline: Duration, what: &str, mut probe: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let give_up = tokio::time::Instant::now() + deadline;
    loop {
        if let Some(value) = probe().await {
            return value;
        }
        assert!(
            tokio::time::Instant::now() < give_up,
            "timed out after {deadline:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

/// A service running in this process until stopped or dropped.
pub struct RunningService {
    pub url: String,
    stop: Option<oneshot::Sender<()>>,
    task: JoinHandle<anyhow::Result<()>>,
}

impl RunningService {
    /// Graceful stop, as on SIGTERM; returns the service's own result.
    pub async fn stop(mut self) -> anyhow::Result<()> {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        (&mut self.task).await?
    }
}

impl RunningService {
    /// Waits for the service to stop by itself, without asking it to; returns its own result.
    pub async fn finished(mut self) -> anyhow::Result<()> {
        (&mut self.task).await?
    }
}

impl Drop for RunningService {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

/// Configuration for one test's publisher and consumer, pointed at its own database and queue.
pub struct StackConfig {
    pub queue: String,
    pub database: String,
    pub publisher: PublisherConfig,
    pub consumer: ConsumerConfig,
}

impl StackConfig {
    /// Fresh, unique names; every other setting is the services' default (port 0, one HTTP worker).
    pub fn unique() -> Self {
        let suffix = Uuid::new_v4().simple().to_string();
        let queue = format!("test.{suffix}");
        let database = format!("test_{suffix}");
        let env = || {
            vec![
                ("AMQP_URL".to_owned(), amqp_url()),
                ("QUEUE_NAME".to_owned(), queue.clone()),
                ("DATABASE_URL".to_owned(), database_url(&database)),
                ("HTTP_HOST".to_owned(), "127.0.0.1".to_owned()),
                ("HTTP_PORT".to_owned(), "0".to_owned()),
                ("HTTP_WORKERS".to_owned(), "1".to_owned()),
                ("SHUTDOWN_TIMEOUT_SECS".to_owned(), "5".to_owned()),
            ]
        };
        Self {
            publisher: PublisherConfig::from_vars(env()).expect("valid publisher config"),
            consumer: ConsumerConfig::from_vars(env()).expect("valid consumer config"),
            queue,
            database,
        }
    }
}

impl StackConfig {
    /// Points both services at the broker node(s) of `amqp_url` (one URL, or several separated by commas).
    pub fn with_broker(mut self, amqp_url: &str) -> Self {
        self.publisher.service.amqp_url = amqp_url.to_owned();
        self.consumer.service.amqp_url = amqp_url.to_owned();
        self
    }
}

/// One test's publisher, consumer, database and queues.
pub struct TestStack {
    pub queue: String,
    pub database: String,
    pub database_url: String,
    pub consumer_config: ConsumerConfig,
    pub publisher: Option<RunningService>,
    pub consumer: Option<RunningService>,
    pub http: reqwest::Client,
    pub db: PgPool,
    amqp: Connection,
}

impl TestStack {
    /// Starts both services with default settings and waits until both are ready.
    pub async fn start() -> Self {
        Self::start_with(StackConfig::unique()).await
    }

    /// Starts both services with `config` and waits until both are ready.
    pub async fn start_with(config: StackConfig) -> Self {
        let consumer = spawn_consumer(&config.consumer);
        let mut stack = Self::start_publisher_only(config).await;
        stack.consumer = Some(consumer);
        stack.wait_ready(stack.consumer_url()).await;
        stack
    }

    /// Starts only the publisher, for tests that run the consumer as a process of its own.
    pub async fn start_publisher_only(config: StackConfig) -> Self {
        let publisher = spawn_publisher(&config.publisher);
        let database_url = database_url(&config.database);
        let http = reqwest::Client::new();
        let stack = Self {
            db: PgPoolOptions::new()
                .max_connections(4)
                .connect_lazy(&database_url)
                .expect("valid url"),
            amqp: Connection::connect(&amqp_url(), ConnectionProperties::default())
                .await
                .expect("broker reachable"),
            queue: config.queue,
            database: config.database,
            database_url,
            consumer_config: config.consumer,
            publisher: Some(publisher),
            consumer: None,
            http,
        };
        stack.wait_ready(stack.publisher_url()).await;
        stack
    }

    pub fn publisher_url(&self) -> &str {
        &self.publisher.as_ref().expect("publisher running").url
    }

    pub fn consumer_url(&self) -> &str {
        &self.consumer.as_ref().expect("consumer running").url
    }

    /// Waits until `base_url/readyz` answers 200.
    pub async fn wait_ready(&self, base_url: &str) {
        let url = format!("{base_url}/readyz");
        eventually(Duration::from_secs(30), &url, || async {
            let response = self.http.get(&url).send().await.ok()?;
            response.status().is_success().then_some(())
        })
        .await;
    }

    /// `POST /message/publish` with a JSON body.
    pub async fn publish(&self, body: &serde_json::Value) -> reqwest::Response {
        self.http
            .post(format!("{}/message/publish", self.publisher_url()))
            .json(body)
            .send()
            .await
            .expect("publisher reachable")
    }

    /// `POST /message/publish/batch`, expecting 202; returns the ids in input order.
    pub async fn publish_batch_ok(&self, batch: &[serde_json::Value]) -> Vec<Uuid> {
        let response = self
            .http
            .post(format!("{}/message/publish/batch", self.publisher_url()))
            .json(batch)
            .send()
            .await
            .expect("publisher reachable");
        assert_eq!(response.status(), 202, "{:?}", response.text().await);
        let body: serde_json::Value = response.json().await.expect("JSON answer");
        body["ids"]
            .as_array()
            .expect("ids")
            .iter()
            .map(|id| id.as_str().expect("a string").parse().expect("a UUID"))
            .collect()
    }

    /// Publishes `body` and returns the id of the accepted message.
    pub async fn publish_ok(&self, body: &serde_json::Value) -> Uuid {
        let response = self.publish(body).await;
        assert_eq!(response.status(), 202, "{:?}", response.text().await);
        let body: serde_json::Value = response.json().await.expect("JSON answer");
        body["id"].as_str().expect("an id").parse().expect("a UUID")
    }

    /// `GET` on the consumer.
    pub async fn get(&self, path_and_query: &str) -> reqwest::Response {
        self.http
            .get(format!("{}{path_and_query}", self.consumer_url()))
            .send()
            .await
            .expect("consumer reachable")
    }

    /// Waits until the message `id` is stored, and returns it as the API serves it.
    pub async fn wait_stored(&self, id: Uuid) -> serde_json::Value {
        eventually(
            Duration::from_secs(30),
            &format!("message {id} to be stored"),
            || async {
                let response = self.get(&format!("/message/{id}")).await;
                if response.status() == 200 {
                    response.json().await.ok()
                } else {
                    None
                }
            },
        )
        .await
    }

    /// Rows in this test's `messages` table.
    pub async fn row_count(&self) -> i64 {
        sqlx::query_scalar("SELECT count(*) FROM messages")
            .fetch_one(&self.db)
            .await
            .expect("count rows")
    }

    /// Rows per id among `ids`: `(distinct ids found, rows found)`.
    pub async fn rows_for(&self, ids: &[Uuid]) -> (i64, i64) {
        sqlx::query_as("SELECT count(DISTINCT id), count(*) FROM messages WHERE id = ANY($1)")
            .bind(ids)
            .fetch_one(&self.db)
            .await
            .expect("count ids")
    }

    /// Publishes raw bytes straight to the queue's exchange, bypassing the publisher.
    pub async fn publish_raw(&self, payload: &[u8]) {
        publish_raw_on(&self.amqp, &self.queue, payload).await;
    }

    /// Takes every message off the main queue, in delivery order, and returns their priorities.
    pub async fn drain_priorities(&self) -> Vec<u8> {
        let channel = self.amqp.create_channel().await.expect("channel");
        let mut priorities = Vec::new();
        while let Some(message) = channel
            .basic_get(self.queue.as_str().into(), BasicGetOptions { no_ack: true })
            .await
            .expect("basic.get")
        {
            let queued = common::QueuedMessage::from_payload(&message.delivery.data)
                .expect("a queued message");
            priorities.push(queued.message.priority().value());
        }
        let _ = channel.close(200, "done".into()).await;
        priorities
    }

    /// Takes every message off the dead-letter queue and returns the reason header of each.
    pub async fn drain_dead_letter_reasons(&self) -> Vec<String> {
        let channel = self.amqp.create_channel().await.expect("channel");
        let mut reasons = Vec::new();
        while let Some(message) = channel
            .basic_get(
                format!("{}.dead", self.queue).as_str().into(),
                BasicGetOptions { no_ack: true },
            )
            .await
            .expect("basic.get")
        {
            let reason = message
                .delivery
                .properties
                .headers()
                .as_ref()
                .and_then(|headers| {
                    headers
                        .inner()
                        .get(consumer::ingest::dead_letter::REASON_HEADER)
                        .cloned()
                })
                .map(|value| match value {
                    lapin::types::AMQPValue::LongString(text) => text.to_string(),
                    other => format!("{other:?}"),
                })
                .unwrap_or_default();
            reasons.push(reason);
        }
        let _ = channel.close(200, "done".into()).await;
        reasons
    }

    /// Messages waiting in a queue of this test (`""` for the main queue, `".dead"` for dead letters).
    pub async fn queue_depth(&self, suffix: &str) -> u32 {
        let channel = self.amqp.create_channel().await.expect("channel");
        let queue = channel
            .queue_declare(
                format!("{}{suffix}", self.queue).as_str().into(),
                QueueDeclareOptions {
                    passive: true,
                    ..Default::default()
                },
                FieldTable::default(),
            )
            .await
            .expect("queue exists");
        let _ = channel.close(200, "done".into()).await;
        queue.message_count()
    }

    /// Deletes a queue of this test (`""` for the main queue), with whatever it holds.
    pub async fn delete_queue(&self, suffix: &str) {
        let channel = self.amqp.create_channel().await.expect("channel");
        channel
            .queue_delete(
                format!("{}{suffix}", self.queue).as_str().into(),
                QueueDeleteOptions::default(),
            )
            .await
            .expect("queue deleted");
        let _ = channel.close(200, "done".into()).await;
    }

    /// Puts `count` valid messages straight on the queue's exchange, as the publisher would (1,000
    /// confirms in flight), and returns their ids: a backlog made faster than any HTTP client could.
    pub async fn fill_queue(&self, count: usize) -> Vec<Uuid> {
        let channel = self.amqp.create_channel().await.expect("channel");
        channel
            .confirm_select(Default::default())
            .await
            .expect("confirm mode");
        let exchange = format!("{}.exchange", self.queue);
        let mut ids = Vec::with_capacity(count);
        for window in (0..count).collect::<Vec<_>>().chunks(1_000) {
            let mut confirms = Vec::with_capacity(window.len());
            for index in window {
                let queued = common::QueuedMessage {
                    id: Uuid::now_v7(),
                    received_at: chrono::Utc::now(),
                    message: serde_json::from_value(serde_json::json!({
                        "ts": "19941114",
                        "sender": format!("backlog-{}", index % 10),
                        "messageAttributes": {"index": index}
                    }))
                    .expect("a valid message"),
                    fingerprint: None,
                };
                ids.push(queued.id);
                let properties = BasicProperties::default()
                    .with_delivery_mode(2)
                    .with_message_id(queued.id.to_string().into());
                confirms.push(
                    channel
                        .basic_publish(
                            exchange.as_str().into(),
                            self.queue.as_str().into(),
                            BasicPublishOptions {
                                mandatory: true,
                                ..Default::default()
                            },
                            &queued.to_payload(),
                            properties,
                        )
                        .await
                        .expect("publish"),
                );
            }
            for confirm in confirms {
                assert!(confirm.await.expect("confirm").is_ack(), "broker confirmed");
            }
        }
        let _ = channel.close(200, "filled".into()).await;
        ids
    }

    /// The value of an unlabelled metric in a service's `/metrics`, or 0 if it is absent.
    pub async fn metric(&self, base_url: &str, name: &str) -> f64 {
        let text = metrics_text(&self.http, base_url).await;
        text.lines()
            .find_map(|line| line.strip_prefix(name)?.strip_prefix(' '))
            .map_or(0.0, |value| value.trim().parse().expect("a number"))
    }

    /// Starts another consumer on this test's database and queue (after a stop or a kill).
    pub fn restart_consumer(&mut self) {
        self.consumer = Some(spawn_consumer(&self.consumer_config));
    }
}

impl Drop for TestStack {
    /// Stops the services and removes the database and queues, from a thread of its own so that it also
    /// runs while a failed test unwinds.
    fn drop(&mut self) {
        self.publisher.take();
        self.consumer.take();
        remove_resources_blocking(&self.queue, &self.database);
    }
}

/// Publishes raw bytes to `queue`'s exchange on `connection`, bypassing the publisher, and asserts the
/// broker confirmed and routed them.
pub async fn publish_raw_on(connection: &Connection, queue: &str, payload: &[u8]) {
    let channel = connection.create_channel().await.expect("channel");
    channel
        .confirm_select(Default::default())
        .await
        .expect("confirm mode");
    let confirm = channel
        .basic_publish(
            format!("{}.exchange", queue).as_str().into(),
            queue.into(),
            BasicPublishOptions {
                mandatory: true,
                ..Default::default()
            },
            payload,
            BasicProperties::default().with_delivery_mode(2),
        )
        .await
        .expect("publish")
        .await
        .expect("confirm");
    assert_eq!(
        confirm,
        lapin::Confirmation::Ack(None),
        "raw publish confirmed and routed"
    );
    let _ = channel.close(200, "done".into()).await;
}

/// [`remove_resources`] from synchronous code such as `Drop`: on a thread of its own with its own
/// runtime, so that it works inside or outside a runtime and while a failed test unwinds.
pub fn remove_resources_blocking(queue: &str, database: &str) {
    remove_resources_blocking_on(&amqp_url(), queue, database);
}

/// [`remove_resources_on`] from synchronous code (a `Drop`).
pub fn remove_resources_blocking_on(amqp_url: &str, queue: &str, database: &str) {
    let (amqp_url, queue, database) = (amqp_url.to_owned(), queue.to_owned(), database.to_owned());
    let cleanup = std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        runtime.block_on(remove_resources_on(&amqp_url, &queue, &database));
    });
    let _ = cleanup.join();
}

/// Drops a test's database and deletes its queues and exchanges on the default broker.
pub async fn remove_resources(queue: &str, database: &str) {
    remove_resources_on(&amqp_url(), queue, database).await;
}

/// Most shards a test declares; their queues are deleted whether or not they were.
const MAX_TEST_SHARDS: u16 = 16;

/// Drops a test's database and deletes its queues (shards included) and exchanges on the broker of
/// `amqp_url` (one node, or a cluster's list). Deleting what does not exist is harmless.
pub async fn remove_resources_on(amqp_url: &str, queue: &str, database: &str) {
    if let Ok(admin) = PgPoolOptions::new()
        .max_connections(1)
        .connect(&server_url())
        .await
    {
        let _ = sqlx::query(&format!(
            "DROP DATABASE IF EXISTS \"{database}\" WITH (FORCE)"
        ))
        .execute(&admin)
        .await;
        admin.close().await;
    }
    if let Ok(connection) = common::amqp::BrokerAddress::new(amqp_url)
        .connect(ConnectionProperties::default())
        .await
    {
        if let Ok(channel) = connection.create_channel().await {
            let shards = (0..MAX_TEST_SHARDS).map(|i| format!("{queue}.{i}"));
            let queues = [
                queue.to_owned(),
                format!("{queue}.dead"),
                format!("{queue}.unrouted"),
            ];
            for name in queues.into_iter().chain(shards) {
                let _ = channel
                    .queue_delete(name.as_str().into(), QueueDeleteOptions::default())
                    .await;
            }
            for name in [
                format!("{queue}.exchange"),
                format!("{queue}.dlx"),
                format!("{queue}.shards"),
            ] {
                let _ = channel
                    .exchange_delete(name.as_str().into(), ExchangeDeleteOptions::default())
                    .await;
            }
        }
        let _ = connection.close(200, "done".into()).await;
    }
}

/// Starts a publisher in this process.
pub fn spawn_publisher(config: &PublisherConfig) -> RunningService {
    let app = publisher::startup::Application::build(config).expect("publisher builds");
    spawn_service(app.port(), |shutdown| app.run_until_stopped(shutdown))
}

/// Starts a consumer in this process.
pub fn spawn_consumer(config: &ConsumerConfig) -> RunningService {
    let app = consumer::startup::Application::build(config).expect("consumer builds");
    spawn_service(app.port(), |shutdown| app.run_until_stopped(shutdown))
}

fn spawn_service<F, Fut>(port: u16, run: F) -> RunningService
where
    F: FnOnce(futures::future::BoxFuture<'static, ()>) -> Fut,
    Fut: Future<Output = anyhow::Result<()>> + Send + 'static,
{
    let (stop, stopped) = oneshot::channel::<()>();
    let task = tokio::spawn(run(Box::pin(async {
        let _ = stopped.await;
    })));
    RunningService {
        url: format!("http://127.0.0.1:{port}"),
        stop: Some(stop),
        task,
    }
}
