use std::time::{Duration, Instant};

use end_to_end::{eventually, StackConfig, TestStack};
use futures::{stream, StreamExt};
use serde_json::{json, Value};
use uuid::Uuid;

use crate::process::ConsumerProcess;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_consumer_exits_0_promptly_on_sigterm_mid_backlog_and_nothing_is_lost() {
    // Arrange: a backlog of 20,000 messages waiting in the queue.
    let stack = TestStack::start_publisher_only(StackConfig::unique()).await;
    let mut ids = Vec::new();
    for _ in 0..20 {
        let batch: Vec<Value> = (0..1000)
            .map(|i| json!({ "sender": format!("backlog-{i}") }))
            .collect();
        ids.extend(stack.publish_batch_ok(&batch).await);
    }
    let mut consumer = ConsumerProcess::spawn(&stack.consumer_config);
    stack.wait_ready(&consumer.url).await;

    // Act: SIGTERM while it drains.
    eventually(Duration::from_secs(60), "draining to begin", || async {
        (stack.row_count().await >= 1000).then_some(())
    })
    .await;
    let (status, took) = consumer.terminate();
    let rows_at_exit = stack.row_count().await;
    let restarted = ConsumerProcess::spawn(&stack.consumer_config);
    eventually(
        Duration::from_secs(60),
        "the backlog to be stored",
        || async { (stack.row_count().await >= 20_000).then_some(()) },
    )
    .await;

    // Assert
    assert!(status.success(), "exit status {status}");
    assert!(took < Duration::from_secs(10), "took {took:?} to exit");
    assert!(
        rows_at_exit < 20_000,
        "the backlog was drained before SIGTERM"
    );
    assert_eq!(stack.rows_for(&ids).await, (20_000, 20_000));
    assert_eq!(stack.row_count().await, 20_000);
    println!("consumer exited 0 in {took:?} on SIGTERM with {rows_at_exit} of 20000 rows stored");
    drop(restarted);
}

/// What a client saw for one request.
enum Outcome {
    Accepted(Uuid),
    Refused(u16),
    NoAnswer,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stopping_publisher_answers_every_request_in_flight_and_each_accepted_message_is_stored()
{
    // Arrange
    let mut stack = TestStack::start().await;
    let url = format!("{}/message/publish", stack.publisher_url());
    let http = stack.http.clone();
    let clients = tokio::spawn(async move {
        stream::iter(0..4000)
            .map(|i| {
                let (http, url) = (http.clone(), url.clone());
                async move {
                    match http
                        .post(&url)
                        .json(&json!({ "sender": format!("c-{i}") }))
                        .send()
                        .await
                    {
                        Ok(response) if response.status() == 202 => {
                            let body: Value = response.json().await.unwrap();
                            Outcome::Accepted(body["id"].as_str().unwrap().parse().unwrap())
                        }
                        Ok(response) => Outcome::Refused(response.status().as_u16()),
                        Err(_) => Outcome::NoAnswer,
                    }
                }
            })
            .buffer_unordered(64)
            .collect::<Vec<Outcome>>()
            .await
    });
    eventually(
        Duration::from_secs(60),
        "publishing to be under way",
        || async { (stack.row_count().await >= 200).then_some(()) },
    )
    .await;

    // Act
    let started = Instant::now();
    let stopped = stack.publisher.take().unwrap().stop().await;
    let took = started.elapsed();
    let outcomes = clients.await.unwrap();

    // Assert
    stopped.expect("the publisher stops cleanly");
    assert!(took < Duration::from_secs(10), "took {took:?} to stop");
    let accepted: Vec<Uuid> = outcomes
        .iter()
        .filter_map(|o| {
            if let Outcome::Accepted(id) = o {
                Some(*id)
            } else {
                None
            }
        })
        .collect();
    let refused: Vec<u16> = outcomes
        .iter()
        .filter_map(|o| {
            if let Outcome::Refused(s) = o {
                Some(*s)
            } else {
                None
            }
        })
        .collect();
    assert!(
        refused.is_empty(),
        "requests refused during shutdown: {refused:?}"
    );
    assert!(
        accepted.len() < 4000,
        "every request was accepted before the stop took effect"
    );
    let count = accepted.len() as i64;
    eventually(
        Duration::from_secs(30),
        "every accepted message to be stored",
        || async { (stack.rows_for(&accepted).await == (count, count)).then_some(()) },
    )
    .await;
    let unanswered = outcomes
        .iter()
        .filter(|o| matches!(o, Outcome::NoAnswer))
        .count();
    println!(
        "publisher stopped in {took:?}: {count} accepted and stored, {unanswered} never reached it"
    );
}
