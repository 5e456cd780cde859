//! One test's publisher, consumer, database and queue names, and what the test does through them over
//! HTTP and SQL.

use common::settings::Settings as _;
use std::time::Duration;

use consumer::config::Config as ConsumerConfig;
use lapin::{Connection, ConnectionProperties};
use publisher::config::Config as PublisherConfig;
use sqlx::{postgres::PgPoolOptions, PgPool};
use uuid::Uuid;

use crate::{
    amqp_url, database_url, eventually, metrics_text, remove_resources_blocking, spawn_consumer,
    spawn_publisher, RunningService,
};

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
        self.publisher.broker.amqp_url = amqp_url.to_owned();
        self.consumer.broker.amqp_url = amqp_url.to_owned();
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
    pub(crate) amqp: Connection,
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

    /// The value of an unlabelled metric in a service's `/metrics`, or 0 if it is absent.
    pub async fn metric(&self, base_url: &str, name: &str) -> f64 {
        crate::metric_value(&metrics_text(&self.http, base_url).await, name)
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
