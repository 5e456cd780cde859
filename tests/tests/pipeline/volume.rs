use std::{
    sync::{
        atomic::{AtomicUsize, Ordering},
        Arc,
    },
    time::{Duration, Instant},
};

use end_to_end::{eventually, StackConfig, TestStack};
use futures::{stream, StreamExt};
use uuid::Uuid;

use crate::process::ConsumerProcess;

async fn publish_many(
    http: reqwest::Client,
    url: String,
    count: usize,
    concurrency: usize,
    accepted: Arc<AtomicUsize>,
) -> Vec<Uuid> {
    stream::iter(0..count)
        .map(|i| {
            let (http, url, accepted) = (http.clone(), url.clone(), accepted.clone());
            async move {
                let response = http
                    .post(&url)
                    .json(&serde_json::json!({ "sender": format!("load-{i}") }))
                    .send()
                    .await
                    .unwrap();
                assert_eq!(response.status(), 202);
                let body: serde_json::Value = response.json().await.unwrap();
                accepted.fetch_add(1, Ordering::Relaxed);
                body["id"].as_str().unwrap().parse::<Uuid>().unwrap()
            }
        })
        .buffer_unordered(concurrency)
        .collect()
        .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_thousand_concurrent_messages_are_stored_exactly_once_across_a_consumer_kill() {
    // Arrange
    const COUNT: usize = 10_000;
    let mut config = StackConfig::unique();
    config.publisher.http.http_workers = 2;
    let stack = TestStack::start_publisher_only(config).await;
    let mut consumer = ConsumerProcess::spawn(&stack.consumer_config);
    stack.wait_ready(&consumer.url).await;

    // Act: publish from 64 concurrent clients; SIGKILL the consumer once a third is accepted (a moment
    // unrelated to its own batch cycle, so the kill lands anywhere in it), then restart it.
    let started = Instant::now();
    let accepted = Arc::new(AtomicUsize::new(0));
    let publishing = tokio::spawn(publish_many(
        stack.http.clone(),
        format!("{}/message/publish", stack.publisher_url()),
        COUNT,
        64,
        accepted.clone(),
    ));
    eventually(
        Duration::from_secs(120),
        "a third of the messages to be accepted",
        || async { (accepted.load(Ordering::Relaxed) >= COUNT / 3).then_some(()) },
    )
    .await;
    consumer.kill();
    let rows_at_kill = stack.row_count().await;
    let consumer = ConsumerProcess::spawn(&stack.consumer_config);
    let ids = publishing.await.unwrap();
    let published_in = started.elapsed();
    eventually(
        Duration::from_secs(60),
        "every message to be stored",
        || async { (stack.row_count().await >= COUNT as i64).then_some(()) },
    )
    .await;
    let stored_in = started.elapsed();

    // Assert
    assert!(
        rows_at_kill < COUNT as i64,
        "the kill came after everything was stored"
    );
    assert_eq!(ids.len(), COUNT);
    assert_eq!(stack.rows_for(&ids).await, (COUNT as i64, COUNT as i64));
    assert_eq!(stack.row_count().await, COUNT as i64);
    println!(
        "{COUNT} messages: accepted in {published_in:.2?} ({:.0} msg/s), all stored in {stored_in:.2?} ({:.0} msg/s \
         end to end); consumer killed with {rows_at_kill} rows stored",
        COUNT as f64 / published_in.as_secs_f64(),
        COUNT as f64 / stored_in.as_secs_f64(),
    );
    drop(consumer);
}
