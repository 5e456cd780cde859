use std::time::{Duration, Instant};

use end_to_end::{
    amqp_url, database_url_via, eventually, proxy::CuttableProxy, server_url, url_address,
    StackConfig, TestStack,
};
use uuid::Uuid;

use crate::fixtures::message_from;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn while_the_broker_is_unreachable_publishing_fails_fast_with_503_and_resumes_by_itself() {
    // Arrange: both services reach the broker through a proxy the test can cut.
    let broker = url_address(&amqp_url());
    let proxy = CuttableProxy::start(broker).await;
    let config =
        StackConfig::unique().with_broker(&format!("amqp://guest:guest@{}/%2f", proxy.address()));
    let stack = TestStack::start_with(config).await;
    let before = stack.publish_ok(&message_from("before")).await;
    stack.wait_stored(before).await;

    // Act
    proxy.cut().await;

    // Assert: readiness reports the outage, and then refusals are immediate and say when to retry.
    // (A request in flight at the cut waits, up to its deadline, for a link to publish again on.)
    for url in [stack.publisher_url(), stack.consumer_url()] {
        eventually(Duration::from_secs(5), "readiness to fail", || async {
            let status = stack
                .http
                .get(format!("{url}/readyz"))
                .send()
                .await
                .ok()?
                .status();
            (status == 503).then_some(())
        })
        .await;
    }
    for _ in 0..5 {
        let started = Instant::now();
        let response = stack.publish(&message_from("during")).await;
        assert!(
            started.elapsed() < Duration::from_secs(1),
            "took {:?}",
            started.elapsed()
        );
        assert_eq!(response.status(), 503);
        assert!(response.headers().contains_key("retry-after"));
    }

    // Act
    proxy.restore().await;

    // Assert: both services are back without a restart.
    let after = eventually(
        Duration::from_secs(20),
        "the publisher to accept again",
        || async {
            let response = stack.publish(&message_from("after")).await;
            if response.status() == 202 {
                let body: serde_json::Value = response.json().await.ok()?;
                body["id"].as_str()?.parse::<Uuid>().ok()
            } else {
                None
            }
        },
    )
    .await;
    stack.wait_stored(after).await;
    assert_eq!(stack.row_count().await, 2);
}

async fn readiness(stack: &TestStack, url: &str) -> u16 {
    match stack.http.get(format!("{url}/readyz")).send().await {
        Ok(response) => response.status().as_u16(),
        Err(_) => 0,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn while_the_database_is_unreachable_the_consumer_holds_messages_unacknowledged_and_resumes()
{
    // Arrange: the consumer reaches PostgreSQL through a proxy the test can cut.
    let proxy = CuttableProxy::start(url_address(&server_url())).await;
    let mut config = StackConfig::unique();
    config.consumer.database.database_url = database_url_via(proxy.address(), &config.database);
    let stack = TestStack::start_with(config).await;
    let before = stack.publish_ok(&message_from("before")).await;
    stack.wait_stored(before).await;

    // Act
    proxy.cut().await;
    let mut during = Vec::new();
    for _ in 0..3 {
        during.push(stack.publish_ok(&message_from("during")).await);
    }

    // Assert: the consumer reports the outage, stays up, and stores nothing meanwhile.
    let consumer = stack.consumer_url().to_owned();
    eventually(
        Duration::from_secs(10),
        "consumer readiness to fail",
        || async { (readiness(&stack, &consumer).await == 503).then_some(()) },
    )
    .await;
    eventually(
        Duration::from_secs(10),
        "a failed attempt to store",
        || async {
            let metrics = stack.get("/metrics").await.text().await.ok()?;
            metrics.contains("consumer_database_up 0").then_some(())
        },
    )
    .await;
    assert_eq!(stack.rows_for(&during).await, (0, 0));
    assert_eq!(
        readiness(&stack, stack.consumer_url()).await,
        503,
        "the consumer must stay up"
    );

    // Act
    proxy.restore().await;

    // Assert: every message is stored once the database is back, without a restart.
    let count = during.len() as i64;
    eventually(
        Duration::from_secs(30),
        "the held messages to be stored",
        || async { (stack.rows_for(&during).await == (count, count)).then_some(()) },
    )
    .await;
    stack.wait_ready(stack.consumer_url()).await;
    assert_eq!(stack.row_count().await, 4);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_several_broker_urls_the_services_use_a_node_that_answers_and_move_when_it_goes() {
    // Arrange: two nodes (proxies to the machine's broker) in AMQP_URL; the first is down at start.
    let broker = url_address(&amqp_url());
    let first = CuttableProxy::start(broker).await;
    let second = CuttableProxy::start(broker).await;
    first.cut().await;
    let nodes = format!(
        "amqp://guest:guest@{}/%2f,amqp://guest:guest@{}/%2f",
        first.address(),
        second.address()
    );
    let config = StackConfig::unique().with_broker(&nodes);
    let stack = TestStack::start_with(config).await;
    let on_second = stack.publish_ok(&message_from("on the second node")).await;
    stack.wait_stored(on_second).await;

    // Act: the second node goes away and the first comes back.
    first.restore().await;
    second.cut().await;

    // Assert: both services move to the first node by themselves, and the pipeline works end to end.
    let on_first = eventually(
        Duration::from_secs(60),
        "a message accepted again",
        || async {
            let response = stack.publish(&message_from("on the first node")).await;
            let body: serde_json::Value = response.json().await.ok()?;
            body["id"].as_str()?.parse::<Uuid>().ok()
        },
    )
    .await;
    stack.wait_ready(stack.consumer_url()).await;
    stack.wait_stored(on_first).await;
}
