use std::time::{Duration, Instant};

use end_to_end::{amqp_url, eventually, proxy::CuttableProxy, StackConfig, TestStack};

use crate::fixtures::message_from;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn while_the_broker_is_unreachable_publishing_fails_fast_with_503_and_resumes_by_itself() {
    // Arrange: both services reach the broker through a proxy the test can cut.
    let broker = url_address(&amqp_url());
    let proxy = CuttableProxy::start(broker).await;
    let mut config = StackConfig::unique();
    let through_proxy = format!("amqp://guest:guest@{}/%2f", proxy.address());
    config.publisher.amqp_url = through_proxy.clone();
    config.consumer.amqp_url = through_proxy;
    let stack = TestStack::start_with(config).await;
    let before = stack.publish_ok(&message_from("before")).await;
    stack.wait_stored(before).await;

    // Act
    proxy.cut().await;

    // Assert: refusals are immediate and say when to retry; readiness reports the outage.
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
                body["id"].as_str()?.parse::<uuid::Uuid>().ok()
            } else {
                None
            }
        },
    )
    .await;
    stack.wait_stored(after).await;
    assert_eq!(stack.row_count().await, 2);
}

fn url_address(url: &str) -> std::net::SocketAddr {
    let authority = url
        .split('@')
        .nth(1)
        .unwrap_or(url)
        .split('/')
        .next()
        .unwrap();
    let authority = authority.strip_prefix("amqp://").unwrap_or(authority);
    std::net::ToSocketAddrs::to_socket_addrs(authority)
        .unwrap()
        .next()
        .unwrap()
}
