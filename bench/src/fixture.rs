//! A scratch queue and database for one measurement, removed afterwards, and the messages measured.

use chrono::Utc;
use common::{Message, QueueType, QueuedMessage, Topology};
use lapin::{
    options::{ExchangeDeleteOptions, QueueDeclareOptions, QueueDeleteOptions},
    types::FieldTable,
    Connection, ConnectionProperties,
};
use sqlx::{postgres::PgPoolOptions, PgPool};
use uuid::Uuid;

pub const AMQP_URL: &str = "amqp://guest:guest@127.0.0.1:5672/%2f";
pub const SERVER_URL: &str = "postgres://postgres@127.0.0.1:5432/postgres";

/// The message every measurement sends: the size of a typical request (the tutorial's example).
pub fn message() -> serde_json::Value {
    serde_json::json!({
        "ts": "19941114",
        "sender": "haimeng",
        "messageAttributes": { "pubisher": "---publisher is ready rabbitmq---", "consumer": "postgres IS READY!" },
        "sent_from_ip": "0.0.0.0",
        "priority": 1
    })
}

pub fn queued() -> QueuedMessage {
    QueuedMessage {
        id: Uuid::now_v7(),
        received_at: Utc::now(),
        message: serde_json::from_value::<Message>(message()).expect("a valid message"),
        fingerprint: None,
    }
}

/// A queue (with the services' topology) and a database, both new.
pub struct Scratch {
    pub queue: String,
    pub database: String,
    pub topology: Topology,
}

impl Scratch {
    pub async fn new() -> anyhow::Result<Self> {
        let suffix = Uuid::new_v4().simple().to_string();
        let scratch = Self {
            queue: format!("bench.{suffix}"),
            database: format!("bench_{suffix}"),
            topology: Topology::new(format!("bench.{suffix}"), QueueType::Quorum, 20, 1),
        };
        let connection = Connection::connect(AMQP_URL, ConnectionProperties::default()).await?;
        scratch
            .topology
            .declare(&connection.create_channel().await?)
            .await?;
        let _ = connection.close(200, "done".into()).await;
        Ok(scratch)
    }

    pub fn database_url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:5432/{}", self.database)
    }

    /// Creates the database and applies the migrations, as the consumer does at start-up.
    pub async fn migrated_pool(&self, connections: u32) -> anyhow::Result<PgPool> {
        let admin = PgPoolOptions::new()
            .max_connections(1)
            .connect(SERVER_URL)
            .await?;
        sqlx::query(&format!("CREATE DATABASE \"{}\"", self.database))
            .execute(&admin)
            .await?;
        admin.close().await;
        let pool = PgPoolOptions::new()
            .max_connections(connections)
            .connect(&self.database_url())
            .await?;
        sqlx::migrate!("../migrations").run(&pool).await?;
        Ok(pool)
    }

    /// A pool on the database a service has created.
    pub async fn pool(&self) -> anyhow::Result<PgPool> {
        Ok(PgPoolOptions::new()
            .max_connections(1)
            .connect(&self.database_url())
            .await?)
    }

    pub async fn queue_depth(&self) -> anyhow::Result<u32> {
        let connection = Connection::connect(AMQP_URL, ConnectionProperties::default()).await?;
        let channel = connection.create_channel().await?;
        let passive = QueueDeclareOptions {
            passive: true,
            ..Default::default()
        };
        let queue = channel
            .queue_declare(self.queue.as_str().into(), passive, FieldTable::default())
            .await?;
        let _ = connection.close(200, "done".into()).await;
        Ok(queue.message_count())
    }

    pub async fn remove(self) -> anyhow::Result<()> {
        if let Ok(admin) = PgPoolOptions::new()
            .max_connections(1)
            .connect(SERVER_URL)
            .await
        {
            let drop = format!("DROP DATABASE IF EXISTS \"{}\" WITH (FORCE)", self.database);
            sqlx::query(&drop).execute(&admin).await?;
        }
        let connection = Connection::connect(AMQP_URL, ConnectionProperties::default()).await?;
        let channel = connection.create_channel().await?;
        for queue in [self.topology.queue(), self.topology.dead_letter_queue()] {
            channel
                .queue_delete(queue.into(), QueueDeleteOptions::default())
                .await?;
        }
        for exchange in [
            self.topology.exchange(),
            self.topology.dead_letter_exchange(),
        ] {
            channel
                .exchange_delete(exchange.into(), ExchangeDeleteOptions::default())
                .await?;
        }
        let _ = connection.close(200, "done".into()).await;
        Ok(())
    }
}
