//! Services killed or stopped under load: by SIGKILL, by SIGTERM, and by a message that keeps crashing
//! its consumer.

use std::time::{Duration, Instant};

use crate::harness::{wait_ready, Load, Machine, Pipeline};
use lapin::{
    options::{BasicConsumeOptions, BasicPublishOptions, BasicQosOptions, QueueDeclareOptions},
    types::FieldTable,
    BasicProperties, Connection, ConnectionProperties,
};

use crate::{summary, CLIENTS};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "stops the machine's RabbitMQ and PostgreSQL; run by scripts/fault-suite"]
async fn s1_a_consumer_killed_mid_batch_loses_and_doubles_nothing() {
    let _machine = Machine;
    let mut pipeline = Pipeline::start().await;
    let load = Load::start(&pipeline.http, &pipeline.publisher.url, CLIENTS);
    load.wait_accepted(2000, Duration::from_secs(60)).await;

    pipeline.consumer.kill();
    load.wait_accepted(1000, Duration::from_secs(60)).await;
    pipeline.consumer.restart();
    let restarted = Instant::now();
    wait_ready(
        &pipeline.http,
        &pipeline.consumer.url,
        Duration::from_secs(30),
    )
    .await;
    let recovered = restarted.elapsed();
    load.wait_accepted(1000, Duration::from_secs(60)).await;
    let report = load.stop().await;

    let caught_up = pipeline.assert_accepted_stored_once(&report).await;
    summary(
        "consumer SIGKILL",
        &report,
        caught_up,
        &format!("; ready {recovered:.1?} after restart"),
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "stops the machine's RabbitMQ and PostgreSQL; run by scripts/fault-suite"]
async fn s2_s9_a_publisher_killed_under_load_keeps_every_accepted_message_and_keyed_retries_store_once(
) {
    let _machine = Machine;
    let mut pipeline = Pipeline::start().await;
    let load = Load::start(&pipeline.http, &pipeline.publisher.url, CLIENTS);
    load.wait_accepted(2000, Duration::from_secs(60)).await;

    pipeline.publisher.kill();
    pipeline.publisher.restart();
    wait_ready(
        &pipeline.http,
        &pipeline.publisher.url,
        Duration::from_secs(30),
    )
    .await;
    load.wait_accepted(1000, Duration::from_secs(60)).await;
    let mut report = load.stop().await;

    // Clients that saw no answer retry with the same key: same id, stored once, confirmed or not before.
    let retried = report.unanswered_attempts.clone();
    for (key, body, id) in &retried {
        let response = pipeline
            .http
            .post(format!("{}/message/publish", pipeline.publisher.url))
            .header("Idempotency-Key", key)
            .json(body)
            .send()
            .await
            .expect("publisher answers");
        assert_eq!(response.status(), 202);
        let answer: serde_json::Value = response.json().await.unwrap();
        assert_eq!(answer["id"], id.to_string(), "a retry got another id");
        report.accepted.push(*id);
    }

    let caught_up = pipeline.assert_accepted_stored_once(&report).await;
    summary(
        "publisher SIGKILL",
        &report,
        caught_up,
        &format!(
            "; {} unanswered requests retried with their key",
            retried.len()
        ),
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "stops the machine's RabbitMQ and PostgreSQL; run by scripts/fault-suite"]
async fn s5_sigterm_under_load_exits_0_promptly_and_loses_nothing() {
    let _machine = Machine;
    let mut pipeline = Pipeline::start().await;
    let load = Load::start(&pipeline.http, &pipeline.publisher.url, CLIENTS);
    load.wait_accepted(1000, Duration::from_secs(60)).await;

    let (consumer_status, consumer_took) = pipeline.consumer.terminate();
    pipeline.consumer.restart();
    load.wait_accepted(500, Duration::from_secs(60)).await;
    let (publisher_status, publisher_took) = pipeline.publisher.terminate();
    // A restarted publisher answers 503 (with Retry-After) until its broker link is up; before the
    // restart, every request in flight at SIGTERM must have been answered, not refused.
    let restarted = std::time::Instant::now();
    pipeline.publisher.restart();
    wait_ready(
        &pipeline.http,
        &pipeline.publisher.url,
        Duration::from_secs(30),
    )
    .await;
    load.wait_accepted(500, Duration::from_secs(60)).await;
    let report = load.stop().await;

    assert!(
        consumer_status.success(),
        "consumer exited with {consumer_status}"
    );
    assert!(
        publisher_status.success(),
        "publisher exited with {publisher_status}"
    );
    for took in [consumer_took, publisher_took] {
        assert!(took < Duration::from_secs(10), "took {took:?} to exit");
    }
    let refused_before_restart = report
        .refusals_at
        .iter()
        .filter(|at| **at < restarted)
        .count();
    assert_eq!(
        refused_before_restart, 0,
        "in-flight requests were refused: {:?}",
        report.statuses
    );
    assert_eq!(
        report.refusals_without_retry_after, 0,
        "a 503 without Retry-After"
    );
    let caught_up = pipeline.assert_accepted_stored_once(&report).await;
    summary(
        "SIGTERM",
        &report,
        caught_up,
        &format!("; consumer exited 0 in {consumer_took:.1?}, publisher in {publisher_took:.1?}"),
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "stops the machine's RabbitMQ and PostgreSQL; run by scripts/fault-suite"]
async fn s6_a_message_that_keeps_crashing_its_consumer_is_dead_lettered_after_the_delivery_limit() {
    // Arrange: no consumer of ours; a message on the queue.
    let _machine = Machine;
    let mut pipeline = Pipeline::start_with(&[("DELIVERY_LIMIT", "3")]).await;
    pipeline.consumer.kill();
    let amqp = Connection::connect(&end_to_end::amqp_url(), ConnectionProperties::default())
        .await
        .unwrap();
    let channel = amqp.create_channel().await.unwrap();
    channel.confirm_select(Default::default()).await.unwrap();
    let queue = pipeline.queue().to_owned();
    channel
        .basic_publish(
            format!("{queue}.exchange").as_str().into(),
            queue.as_str().into(),
            BasicPublishOptions::default(),
            b"{\"crashes\": \"every consumer\"}",
            BasicProperties::default().with_delivery_mode(2),
        )
        .await
        .unwrap()
        .await
        .unwrap();

    // Act: a consumer that dies holding it, again and again.
    let mut deliveries = 0;
    for _ in 0..10 {
        let crashing =
            Connection::connect(&end_to_end::amqp_url(), ConnectionProperties::default())
                .await
                .unwrap();
        let crashing_channel = crashing.create_channel().await.unwrap();
        crashing_channel
            .basic_qos(1, BasicQosOptions::default())
            .await
            .unwrap();
        let mut consumer = crashing_channel
            .basic_consume(
                queue.as_str().into(),
                "crashing".into(),
                BasicConsumeOptions::default(),
                FieldTable::default(),
            )
            .await
            .unwrap();
        use futures::StreamExt;
        let got = tokio::time::timeout(Duration::from_secs(2), consumer.next()).await;
        let _ = crashing.close(320, "crash".into()).await;
        if got.is_err() {
            break; // nothing left to deliver: it was dead-lettered
        }
        deliveries += 1;
    }

    // Assert
    let dead = channel
        .queue_declare(
            format!("{queue}.dead").as_str().into(),
            QueueDeclareOptions {
                passive: true,
                ..Default::default()
            },
            FieldTable::default(),
        )
        .await
        .unwrap();
    assert_eq!(
        dead.message_count(),
        1,
        "the message is in the dead-letter queue"
    );
    assert!(
        deliveries <= 4,
        "delivered {deliveries} times with a delivery limit of 3"
    );
    println!("crash loop: dead-lettered after {deliveries} deliveries (DELIVERY_LIMIT=3)");
}
