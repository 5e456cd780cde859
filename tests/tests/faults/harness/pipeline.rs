//! A publisher and a consumer as processes on a database and queue of their own, and the accounting
//! of what they stored against what was accepted.

use std::{
    collections::HashSet,
    time::{Duration, Instant},
};

use end_to_end::{amqp_url, eventually, StackConfig};
use sqlx::{postgres::PgPoolOptions, PgPool};
use uuid::Uuid;

use super::load::LoadReport;
use super::service::{wait_ready, Service};

/// A publisher and a consumer running as processes on a database and queue of their own.
pub struct Pipeline {
    pub publisher: Service,
    pub consumer: Service,
    pub db: PgPool,
    pub http: reqwest::Client,
    config: StackConfig,
    /// The broker (one node or a cluster's list) both services use.
    amqp_url: String,
    /// What both services were started with, for more of them.
    env: Vec<(String, String)>,
}

impl Pipeline {
    pub async fn start() -> Self {
        Self::start_with(&[]).await
    }

    /// Starts both services with extra environment variables for both.
    pub async fn start_with(extra: &[(&str, &str)]) -> Self {
        Self::start_on(&amqp_url(), extra).await
    }

    /// Starts both services on the broker of `amqp_url`, with extra environment variables for both.
    pub async fn start_on(amqp_url: &str, extra: &[(&str, &str)]) -> Self {
        let config = StackConfig::unique();
        let mut env = vec![
            ("AMQP_URL".to_owned(), amqp_url.to_owned()),
            ("QUEUE_NAME".to_owned(), config.queue.clone()),
            (
                "DATABASE_URL".to_owned(),
                config.consumer.database.database_url.clone(),
            ),
            ("SHUTDOWN_TIMEOUT_SECS".to_owned(), "20".to_owned()),
        ];
        env.extend(extra.iter().map(|(k, v)| (k.to_string(), v.to_string())));
        let publisher = Service::start("publisher", env.clone());
        let consumer = Service::start("consumer", env.clone());
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(30))
            .build()
            .unwrap();
        wait_ready(&http, &publisher.url, Duration::from_secs(30)).await;
        wait_ready(&http, &consumer.url, Duration::from_secs(30)).await;
        let db = PgPoolOptions::new()
            .max_connections(2)
            .connect_lazy(&config.consumer.database.database_url)
            .unwrap();
        Self {
            publisher,
            consumer,
            db,
            http,
            config,
            amqp_url: amqp_url.to_owned(),
            env,
        }
    }

    /// Another process of `name` (`publisher` or `consumer`) with this pipeline's settings, ready.
    pub async fn another(&self, name: &'static str) -> Service {
        let service = Service::start(name, self.env.clone());
        wait_ready(&self.http, &service.url, Duration::from_secs(30)).await;
        service
    }

    /// Ready messages in each of `queues`, read by passive declares.
    pub async fn queue_depths(&self, queues: &[String]) -> Vec<u32> {
        let connection = common::amqp::BrokerAddress::new(self.amqp_url.clone())
            .connect(Default::default())
            .await
            .expect("broker");
        let channel = connection.create_channel().await.expect("channel");
        let mut depths = Vec::new();
        for queue in queues {
            let declared = channel
                .queue_declare(
                    queue.as_str().into(),
                    lapin::options::QueueDeclareOptions {
                        passive: true,
                        ..Default::default()
                    },
                    Default::default(),
                )
                .await
                .expect("the queue exists");
            depths.push(declared.message_count());
        }
        let _ = connection.close(200, "counted".into()).await;
        depths
    }

    pub fn queue(&self) -> &str {
        &self.config.queue
    }

    /// Every id in the table (retrying while the database is coming back).
    pub async fn stored_ids(&self) -> Vec<Uuid> {
        eventually(
            Duration::from_secs(60),
            "the database to answer",
            || async {
                sqlx::query_scalar("SELECT id FROM messages")
                    .fetch_all(&self.db)
                    .await
                    .ok()
            },
        )
        .await
    }

    /// The delivery guarantee: every accepted id is stored exactly once, and nothing is stored that was
    /// not attempted. Waits for the consumer to catch up; returns how long that took.
    pub async fn assert_accepted_stored_once(&self, report: &LoadReport) -> Duration {
        let started = Instant::now();
        let accepted: HashSet<Uuid> = report.accepted.iter().copied().collect();
        assert_eq!(
            accepted.len(),
            report.accepted.len(),
            "an id was answered twice"
        );
        let rows = eventually(
            Duration::from_secs(120),
            "every accepted message to be stored",
            || async {
                let rows = self.stored_ids().await;
                let stored: HashSet<Uuid> = rows.iter().copied().collect();
                accepted.is_subset(&stored).then_some(rows)
            },
        )
        .await;
        let distinct: HashSet<Uuid> = rows.iter().copied().collect();
        assert_eq!(distinct.len(), rows.len(), "a message was stored twice");
        let attempted: HashSet<Uuid> = report.attempted.iter().copied().collect();
        let unknown: Vec<&Uuid> = distinct
            .iter()
            .filter(|id| !attempted.contains(id))
            .collect();
        assert!(
            unknown.is_empty(),
            "{} rows were never attempted",
            unknown.len()
        );
        started.elapsed()
    }
}

impl Drop for Pipeline {
    fn drop(&mut self) {
        // Stop the services first, or the consumer would declare the queue again after its removal.
        self.publisher.kill();
        self.consumer.kill();
        end_to_end::remove_resources_blocking_on(
            &self.amqp_url,
            &self.config.queue,
            &self.config.database,
        );
    }
}
