//! A healthy pipeline writes no error line: an operator alerting on `ERROR` is woken only by faults.

use std::time::Duration;

use end_to_end::eventually;
use serde_json::{json, Value};

use crate::services::Services;

/// How many times the consumer has looked for shard queues and found none (every six watch intervals).
fn shard_looks(events: &[Value]) -> usize {
    events
        .iter()
        .filter(|e| e["message"] == "looked for new shard queues: none")
        .count()
}

/// The consumer's looks for shard queues that do not exist, which the broker answers by closing the
/// channel, are not errors: many looks, and no `ERROR` line from either service.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn looking_for_missing_shard_queues_logs_no_error() {
    // Arrange: a look every 6 watch intervals of 100 ms.
    let services = Services::start(&[("QUEUE_WATCH_INTERVAL_MS", "100")]).await;
    let id = services.publish(&json!({"sender": "quiet"}), &[]).await;
    services.wait_stored(&[id]).await;

    // Act
    eventually(
        Duration::from_secs(30),
        "three looks for shard queues",
        || async { (shard_looks(&services.consumer.logs.events()) >= 3).then_some(()) },
    )
    .await;

    // Assert
    for (who, logs) in [
        ("consumer", &services.consumer.logs),
        ("publisher", &services.publisher.logs),
    ] {
        let errors: Vec<Value> = logs
            .events()
            .into_iter()
            .filter(|e| e["level"] == "ERROR")
            .collect();
        assert!(errors.is_empty(), "{who} logged errors: {errors:#?}");
    }
}

/// A queue of the topology deleted by hand is a fault, and the consumer's watch says so once, naming
/// it, although the broker's own answer is kept out of the log.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deleted_dead_letter_queue_is_reported_once_by_the_watch() {
    // Arrange
    let services = Services::start(&[("QUEUE_WATCH_INTERVAL_MS", "100")]).await;
    let dead = format!("{}.dead", services.queue);
    let connection = common::amqp::BrokerAddress::new(end_to_end::amqp_url())
        .connect(Default::default())
        .await
        .expect("broker reachable");
    let channel = connection.create_channel().await.expect("channel");

    // Act
    channel
        .queue_delete(dead.as_str().into(), Default::default())
        .await
        .expect("queue deleted");
    let reports = |events: &[Value]| -> Vec<Value> {
        events
            .iter()
            .filter(|e| {
                e["level"] == "WARN"
                    && e["message"]
                        .as_str()
                        .is_some_and(|m| m.starts_with("a queue of the topology is missing"))
            })
            .cloned()
            .collect()
    };
    let first = eventually(
        Duration::from_secs(30),
        "the missing queue reported",
        || async { reports(&services.consumer.logs.events()).first().cloned() },
    )
    .await;
    // At least twelve more watch intervals (two looks for shard queues, every six), which must not
    // repeat it.
    let looked = shard_looks(&services.consumer.logs.events());
    eventually(
        Duration::from_secs(30),
        "twelve more watch intervals",
        || async { (shard_looks(&services.consumer.logs.events()) >= looked + 2).then_some(()) },
    )
    .await;
    let _ = connection.close(200, "done".into()).await;

    // Assert
    assert!(
        first["error"].as_str().unwrap_or("").contains(&dead),
        "{first}"
    );
    assert_eq!(reports(&services.consumer.logs.events()).len(), 1);
}
