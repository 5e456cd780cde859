//! Removing a test's database, queues and exchanges, from async code or from a `Drop`.

use lapin::{
    options::{ExchangeDeleteOptions, QueueDeleteOptions},
    ConnectionProperties,
};
use sqlx::postgres::PgPoolOptions;

use crate::{amqp_url, server_url};

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
