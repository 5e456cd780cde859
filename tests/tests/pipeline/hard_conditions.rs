//! The promise under hard conditions on the broker's side: a deleted queue, a connection killed under a
//! large batch, a confirm timeout, the in-flight byte cap, and the delivery limit.

use std::time::Duration;

use crate::fixtures::message_from;
use end_to_end::{amqp_url, eventually, proxy::CuttableProxy, url_address, StackConfig, TestStack};
use serde_json::{json, Value};
use uuid::Uuid;

use crate::hard_input::{accepted_id, post_raw};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_the_main_queue_deleted_every_accepted_message_is_still_stored_and_the_queue_comes_back(
) {
    // Arrange
    let stack = TestStack::start().await;
    let before = stack.publish_ok(&message_from("before")).await;
    stack.wait_stored(before).await;

    // Act: delete the queue under both services and keep publishing.
    stack.delete_queue("").await;
    let mut accepted = vec![before];
    for i in 0..40 {
        let response = stack.publish(&message_from(&format!("during {i}"))).await;
        if response.status() == 202 {
            let body: Value = response.json().await.unwrap();
            accepted.push(body["id"].as_str().unwrap().parse().unwrap());
        } else {
            assert_eq!(response.status(), 503);
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // Assert: every 202 becomes a row, none reaches `.dead`, and the main queue exists again.
    eventually(
        Duration::from_secs(30),
        "every accepted message to be stored",
        || async {
            (stack.rows_for(&accepted).await == (accepted.len() as i64, accepted.len() as i64))
                .then_some(())
        },
    )
    .await;
    assert!(
        accepted.len() > 30,
        "most publishes were accepted: {}",
        accepted.len()
    );
    assert_eq!(stack.queue_depth(".dead").await, 0);
    eventually(
        Duration::from_secs(10),
        "the main queue to be declared again",
        || async {
            let after = stack.publish_ok(&message_from("after")).await;
            stack.wait_stored(after).await;
            (stack.queue_depth("").await == 0).then_some(())
        },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_killed_under_a_large_batch_is_republished_and_every_id_is_stored_once() {
    // Arrange: the publisher reaches the broker through a proxy the test can cut; no consumer yet, so
    // the queue shows when the batch is under way.
    let proxy = CuttableProxy::start(url_address(&amqp_url())).await;
    let mut config = StackConfig::unique();
    config.publisher.broker.amqp_url = format!("amqp://guest:guest@{}/%2f", proxy.address());
    config.publisher.links.confirm_timeout_ms = 15_000;
    let mut stack = TestStack::start_publisher_only(config).await;
    let padding = "p".repeat(3500);
    let batch: Vec<Value> = (0..1000)
        .map(|i| json!({ "sender": format!("m{i}"), "messageAttributes": { "padding": padding } }))
        .collect();

    // Act: cut every connection once part of the batch is queued, and let the publisher reconnect.
    let publishing = stack.publish_batch_ok(&batch);
    let cutting = async {
        eventually(
            Duration::from_secs(20),
            "part of the batch to be queued",
            || async { (stack.queue_depth("").await > 0).then_some(()) },
        )
        .await;
        proxy.cut().await;
        proxy.restore().await;
    };
    let (ids, ()) = tokio::join!(publishing, cutting);
    stack.restart_consumer();
    stack.wait_ready(stack.consumer_url()).await;

    // Assert: 202 for the whole batch after publishing again; each id stored once.
    assert_eq!(ids.len(), 1000);
    assert!(
        stack
            .metric(
                stack.publisher_url(),
                "publisher_messages_republished_total"
            )
            .await
            > 0.0,
        "the cut fell inside the batch"
    );
    eventually(
        Duration::from_secs(60),
        "the whole batch to be stored",
        || async { (stack.rows_for(&ids).await == (1000, 1000)).then_some(()) },
    )
    .await;
    assert_eq!(stack.row_count().await, 1000);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_confirm_timeout_fails_that_request_only_naming_its_ids_and_others_on_the_connection_succeed(
) {
    // Arrange: the publisher reaches the broker through a proxy that can hold the broker's answers back.
    let proxy = CuttableProxy::start(url_address(&amqp_url())).await;
    let mut config = StackConfig::unique();
    config.publisher.broker.amqp_url = format!("amqp://guest:guest@{}/%2f", proxy.address());
    config.publisher.links.confirm_timeout_ms = 1_500;
    let stack = TestStack::start_with(config).await;
    let connections = stack
        .metric(stack.publisher_url(), "publisher_broker_connections_total")
        .await;
    let batch: Vec<Value> = (0..1000).map(|i| message_from(&format!("m{i}"))).collect();

    // Act: confirms stall for 2.5 s. The batch, sent at once, passes its 1.5 s deadline; a message sent
    // 1.5 s into the stall is confirmed within its own deadline once the confirms flow again.
    proxy.hold_replies();
    let stalled = tokio::time::Instant::now();
    let early = stack
        .http
        .post(format!("{}/message/publish/batch", stack.publisher_url()))
        .json(&batch)
        .send();
    let late = async {
        tokio::time::sleep_until(stalled + Duration::from_millis(1_500)).await;
        stack.publish(&message_from("late")).await
    };
    let release = async {
        tokio::time::sleep_until(stalled + Duration::from_millis(2_500)).await;
        proxy.release_replies();
    };
    let (early, late, ()) = tokio::join!(early, late, release);

    // Assert: only the batch is 503 (outcome unknown, with its ids); the late message is accepted on the
    // same connection, and the batch's confirms, arriving later, leave it stored too.
    let early = early.unwrap();
    let status = early.status();
    let problem: Value = early.json().await.unwrap();
    assert_eq!(status, 503, "{problem}");
    assert_eq!(problem["type"], "urn:message-queue:problem:outcome-unknown");
    let ids: Vec<Uuid> = problem["ids"]
        .as_array()
        .expect("the ids")
        .iter()
        .map(|id| id.as_str().unwrap().parse().unwrap())
        .collect();
    assert_eq!(ids.len(), 1000);
    let late = accepted_id(late).await;
    eventually(
        Duration::from_secs(30),
        "the in-doubt batch and the late message to be stored",
        || async {
            let (found, rows) = stack.rows_for(&ids).await;
            (found == 1000 && rows == 1000 && stack.rows_for(&[late]).await == (1, 1)).then_some(())
        },
    )
    .await;
    assert_eq!(
        stack
            .metric(stack.publisher_url(), "publisher_broker_connections_total")
            .await,
        connections,
        "the timeout did not replace the connection"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn past_the_in_flight_byte_cap_a_request_is_refused_at_once_with_503_and_retry_after() {
    use tokio::io::AsyncWriteExt;
    // Arrange: room for one large message in flight.
    let mut config = StackConfig::unique();
    config.publisher.body.max_inflight_bytes = 100_000;
    let stack = TestStack::start_with(config).await;
    let padding = "p".repeat(60_000);
    let large =
        json!({ "sender": "large", "messageAttributes": { "padding": padding } }).to_string();

    // Act: one client declares 60,000 bytes and sends all but the last few, holding what it sent.
    let address = stack
        .publisher_url()
        .trim_start_matches("http://")
        .to_owned();
    let mut holder = tokio::net::TcpStream::connect(&address).await.unwrap();
    let head = format!(
        "POST /message/publish HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
        large.len()
    );
    holder.write_all(head.as_bytes()).await.unwrap();
    let held = large.len() - 10;
    holder.write_all(&large.as_bytes()[..held]).await.unwrap();
    eventually(
        Duration::from_secs(10),
        "the holder's bytes to be reserved",
        || async {
            let reserved = stack
                .metric(stack.publisher_url(), "publisher_inflight_bytes")
                .await;
            (reserved >= held as f64).then_some(())
        },
    )
    .await;
    let refused = eventually(
        Duration::from_secs(10),
        "a request to meet the cap",
        || async {
            let response = post_raw(&stack, "/message/publish", large.clone(), None).await;
            (response.status() == 503).then_some(response)
        },
    )
    .await;
    let retry_after = refused.headers().get("retry-after").cloned();
    let problem: Value = refused.json().await.unwrap();
    let small_meanwhile = post_raw(
        &stack,
        "/message/publish",
        r#"{"sender":"small"}"#.into(),
        None,
    )
    .await;
    holder.write_all(&large.as_bytes()[held..]).await.unwrap();
    let after = eventually(
        Duration::from_secs(10),
        "the cap to be released",
        || async {
            let response = post_raw(&stack, "/message/publish", large.clone(), None).await;
            (response.status() == 202).then_some(response)
        },
    )
    .await;

    // Assert
    assert!(retry_after.is_some(), "503 without Retry-After: {problem}");
    assert!(
        problem["detail"].as_str().unwrap().contains("100000"),
        "the detail names the cap: {problem}"
    );
    accepted_id(small_meanwhile).await;
    let after = accepted_id(after).await;
    stack.wait_stored(after).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_delivery_about_to_reach_the_delivery_limit_is_dead_lettered_by_the_consumer_with_its_reason(
) {
    // Arrange: a message already delivered twice without being stored (as by consumers that crashed),
    // under a delivery limit of 3, before any consumer of ours runs.
    let mut config = StackConfig::unique();
    config.publisher.broker.delivery_limit = 3;
    config.consumer.broker.delivery_limit = 3;
    let mut stack = TestStack::start_publisher_only(config).await;
    let id = stack.publish_ok(&message_from("unlucky")).await;
    let amqp = lapin::Connection::connect(&amqp_url(), lapin::ConnectionProperties::default())
        .await
        .unwrap();
    let channel = amqp.create_channel().await.unwrap();
    for _ in 0..2 {
        let got = eventually(
            Duration::from_secs(10),
            "the message to be ready",
            || async {
                channel
                    .basic_get(
                        stack.queue.as_str().into(),
                        lapin::options::BasicGetOptions::default(),
                    )
                    .await
                    .unwrap()
            },
        )
        .await;
        got.delivery
            .acker
            .reject(lapin::options::BasicRejectOptions { requeue: true })
            .await
            .unwrap();
    }
    amqp.close(200, "done".into()).await.unwrap();

    // Act: the consumer gets its third delivery, the last the broker would make.
    stack.restart_consumer();
    stack.wait_ready(stack.consumer_url()).await;
    eventually(Duration::from_secs(30), "the dead letter", || async {
        (stack.queue_depth(".dead").await == 1).then_some(())
    })
    .await;

    // Assert: dead-lettered by the consumer, with the reason; not stored; counted, and seen in the
    // dead-letter queue's depth, where dead letters the broker makes on its own show too.
    let dead_depth = format!(
        r#"consumer_queue_messages{{queue="{}.dead",state="ready"}}"#,
        stack.queue
    );
    eventually(
        Duration::from_secs(30),
        "the dead-letter depth metric",
        || async { (stack.metric(stack.consumer_url(), &dead_depth).await == 1.0).then_some(()) },
    )
    .await;
    let reasons = stack.drain_dead_letter_reasons().await;
    assert_eq!(reasons.len(), 1);
    assert!(reasons[0].contains("delivered 3 times"), "{reasons:?}");
    assert_eq!(stack.rows_for(&[id]).await, (0, 0));
    assert_eq!(
        stack
            .metric(
                stack.consumer_url(),
                "consumer_messages_dead_lettered_total"
            )
            .await,
        1.0
    );
}
