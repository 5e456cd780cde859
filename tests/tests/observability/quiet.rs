//! A healthy pipeline writes no error line: an operator alerting on `ERROR` is woken only by faults.

use std::time::Duration;

use end_to_end::eventually;
use serde_json::{json, Value};

use crate::services::Services;

/// The consumer's looks for shard queues that do not exist, which the broker answers by closing the
/// channel, are not errors: many looks, and no `ERROR` line from either service.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn looking_for_missing_shard_queues_logs_no_error() {
    // Arrange: a look every 6 watch intervals of 100 ms.
    let services = Services::start(&[("QUEUE_WATCH_INTERVAL_MS", "100")]).await;
    let id = services.publish(&json!({"sender": "quiet"}), &[]).await;
    services.wait_stored(&[id]).await;

    // Act
    let looks = |events: &[Value]| {
        events
            .iter()
            .filter(|e| e["message"] == "looked for new shard queues: none")
            .count()
    };
    eventually(
        Duration::from_secs(30),
        "three looks for shard queues",
        || async { (looks(&services.consumer.logs.events()) >= 3).then_some(()) },
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
