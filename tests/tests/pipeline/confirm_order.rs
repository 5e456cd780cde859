//! Confirms matched to their own messages: many HTTP workers publishing on one channel while the broker
//! both acks and nacks. A queue held at its length limit with `overflow: reject-publish` nacks whatever
//! arrives while it is full; if one message's nack were taken for another's, a nacked message would be
//! answered 202 and never stored.

use std::{
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use end_to_end::{broker_users::BrokerPolicy, eventually, StackConfig, TestStack};
use serde_json::{json, Value};
use uuid::Uuid;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn with_many_workers_on_one_channel_every_message_answered_202_is_stored() {
    // Arrange: eight HTTP workers share one connection of one channel; the queue holds at most 20
    // messages and refuses more; the consumer takes one at a time.
    let mut config = StackConfig::unique();
    config.publisher.http.http_workers = 8;
    config.publisher.links.publish_channels = 1;
    config.publisher.links.amqp_connections = 1;
    config.publisher.links.confirm_timeout_ms = 1_000;
    config.consumer.ingest.batch_size = 1;
    config.consumer.ingest.prefetch = 1;
    let _policy = BrokerPolicy::apply(&common::amqp::Policy {
        name: format!("{}.full", config.queue),
        pattern: format!("^{}$", regex_escape(&config.queue)),
        definition: json!({ "max-length": 20, "overflow": "reject-publish" }),
    });
    let stack = TestStack::start_with(config).await;
    let accepted = Arc::new(Mutex::new(Vec::<Uuid>::new()));
    let refused = Arc::new(Mutex::new(0usize));

    // Act: 48 clients for 8 seconds, of messages large enough that handing one to lapin takes a while
    // (its body is cut into frames between taking its tag and queueing its frames).
    let until = Instant::now() + Duration::from_secs(8);
    let padding = "p".repeat(40_000);
    let clients = (0..48).map(|client| {
        let padding = padding.clone();
        let http = stack.http.clone();
        let url = format!("{}/message/publish", stack.publisher_url());
        let accepted = accepted.clone();
        let refused = refused.clone();
        async move {
            let mut n = 0;
            while Instant::now() < until {
                n += 1;
                let Ok(response) = http
                    .post(&url)
                    .json(&json!({
                        "sender": format!("c{client}"),
                        "ts": format!("{n}"),
                        "messageAttributes": { "padding": &padding[..(n * 997 + client * 4001) % 40_000] },
                    }))
                    .send()
                    .await
                else {
                    continue;
                };
                match response.status().as_u16() {
                    202 => {
                        let body: Value = response.json().await.unwrap();
                        accepted
                            .lock()
                            .unwrap()
                            .push(body["id"].as_str().unwrap().parse().unwrap());
                    }
                    503 => *refused.lock().unwrap() += 1,
                    other => panic!("unexpected {other}"),
                }
            }
        }
    });
    futures::future::join_all(clients).await;

    // Assert
    let accepted = accepted.lock().unwrap().clone();
    let refused = *refused.lock().unwrap();
    println!(
        "{} accepted, {refused} refused by the full queue",
        accepted.len()
    );
    assert!(
        refused > 0,
        "the queue never refused: the broker never nacked"
    );
    assert!(!accepted.is_empty());
    eventually(
        Duration::from_secs(60),
        "every accepted message to be stored",
        || async {
            let (found, rows) = stack.rows_for(&accepted).await;
            (found == accepted.len() as i64 && rows == found).then_some(())
        },
    )
    .await;
}

fn regex_escape(name: &str) -> String {
    name.replace('.', "\\.")
}
