//! A scratch queue and database for one measurement, removed afterwards, and the messages measured.

use anyhow::Context;
use chrono::Utc;
use common::{
    amqp::{BrokerError, QueueType, Topology},
    Message, QueuedMessage,
};
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

/// A queue (with the services' topology, sharded or not) on a broker, and a database, both new.
pub struct Scratch {
    pub queue: String,
    pub database: String,
    pub topology: Topology,
    /// The broker: one node, or a cluster's nodes separated by commas.
    pub amqp_url: String,
    pub shards: u16,
}

impl Scratch {
    /// One queue on the machine's broker.
    pub async fn new() -> anyhow::Result<Self> {
        Self::on(AMQP_URL, 1).await
    }

    /// `shards` queues on the broker of `amqp_url`.
    pub async fn on(amqp_url: &str, shards: u16) -> anyhow::Result<Self> {
        let suffix = Uuid::new_v4().simple().to_string();
        let scratch = Self {
            queue: format!("bench.{suffix}"),
            database: format!("bench_{suffix}"),
            topology: Topology::new(format!("bench.{suffix}"), QueueType::Quorum, 20, shards),
            amqp_url: amqp_url.to_owned(),
            shards,
        };
        let connection = scratch.connect().await?;
        scratch
            .topology
            .declare(&connection.create_channel().await?)
            .await
            .context(
                "declaring the benchmark's queues (with shards, the broker needs the \
                 rabbitmq_consistent_hash_exchange plugin: `bash scripts/start` enables it)",
            )?;
        let _ = connection.close(200, "done".into()).await;
        Ok(scratch)
    }

    /// A connection to a node of the broker, a different one each time when there are several.
    pub async fn connect(&self) -> Result<Connection, BrokerError> {
        common::amqp::BrokerAddress::new(self.amqp_url.clone())
            .connect(ConnectionProperties::default())
            .await
    }

    /// How many broker nodes `amqp_url` names.
    pub fn nodes(&self) -> usize {
        common::amqp::node_urls(&self.amqp_url).count()
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

    /// Ready messages in every queue messages are routed to, together.
    pub async fn queue_depth(&self) -> anyhow::Result<u32> {
        Ok(self.shard_depths().await?.iter().sum())
    }

    /// Ready messages in each shard (the one queue when unsharded).
    pub async fn shard_depths(&self) -> anyhow::Result<Vec<u32>> {
        let connection = self.connect().await?;
        let channel = connection.create_channel().await?;
        let passive = QueueDeclareOptions {
            passive: true,
            ..Default::default()
        };
        let mut depths = Vec::new();
        for shard in self.topology.shards() {
            let queue = channel
                .queue_declare(shard.as_str().into(), passive, FieldTable::default())
                .await?;
            depths.push(queue.message_count());
        }
        let _ = connection.close(200, "done".into()).await;
        Ok(depths)
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
        let connection = self.connect().await?;
        let channel = connection.create_channel().await?;
        let mut queues = self.topology.drained_queues();
        queues.push(self.topology.queue());
        queues.push(self.topology.dead_letter_queue());
        for queue in queues {
            channel
                .queue_delete(queue.into(), QueueDeleteOptions::default())
                .await?;
        }
        let shard_exchange = format!("{}.shards", self.queue);
        for exchange in [
            self.topology.exchange(),
            self.topology.dead_letter_exchange(),
            &shard_exchange,
        ] {
            channel
                .exchange_delete(exchange.into(), ExchangeDeleteOptions::default())
                .await?;
        }
        let _ = connection.close(200, "done".into()).await;
        Ok(())
    }
}
