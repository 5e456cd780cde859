//! The consumer scales its batch writers on the backlog: they rise while a large backlog drains, come
//! back once it is gone, and stay put under a steady load.

use std::time::{Duration, Instant};

use end_to_end::{eventually, StackConfig, TestStack};
use serde_json::Value;

use crate::fixtures::message_from;

/// A consumer that looks at its queues every 200 ms, wants any backlog gone within a second, and waits
/// two seconds of calm before removing writers: the production pace, compressed.
fn quick_scaling() -> StackConfig {
    let mut config = StackConfig::unique();
    config.consumer.scaling.writers_min = 1;
    config.consumer.scaling.writers_max = 4;
    config.consumer.scaling.queue_watch_interval_ms = 200;
    config.consumer.scaling.scale_target_drain_secs = 1;
    config.consumer.scaling.scale_cooldown_secs = 2;
    config
}

async fn monitor_status(stack: &TestStack) -> Value {
    let response = stack.get("/monitor/status").await;
    assert_eq!(response.status(), 200);
    response.json().await.expect("JSON status")
}

/// Writers of the main queue, as the consumer reports them.
fn writers(status: &Value, queue: &str) -> u64 {
    status["queues"]
        .as_array()
        .expect("queues")
        .iter()
        .find(|q| q["queue"] == queue)
        .and_then(|q| q["writers"].as_u64())
        .unwrap_or(0)
}

/// `consumer_scaling_decisions_total` of the changes (up and down) in a `/metrics` text.
fn changes(metrics: &str) -> f64 {
    metrics
        .lines()
        .filter(|line| line.starts_with("consumer_scaling_decisions_total{"))
        .filter(|line| !line.contains(r#"direction="hold""#))
        .filter_map(|line| line.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

async fn metrics_text(stack: &TestStack) -> String {
    stack
        .get("/metrics")
        .await
        .text()
        .await
        .expect("metrics text")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_fifty_thousand_message_backlog_raises_the_writers_drains_and_lets_them_fall_back() {
    let mut stack = TestStack::start_publisher_only(quick_scaling()).await;
    let backlog = stack.fill_queue(50_000).await;
    stack.restart_consumer();
    stack.wait_ready(stack.consumer_url()).await;

    // Writers rise while the backlog drains, and the backlog is stored whole.
    let queue = stack.queue.clone();
    let mut most = 0;
    let deadline = Instant::now() + Duration::from_secs(180);
    loop {
        let status = monitor_status(&stack).await;
        most = most.max(writers(&status, &queue));
        if stack.row_count().await == backlog.len() as i64 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "backlog not drained in time: {status}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(stack.rows_for(&backlog).await, (50_000, 50_000));
    assert!(
        most > 1,
        "writers never rose above 1 while 50,000 messages drained"
    );

    // Then fall back to the minimum once the backlog has stayed gone for the cooldown.
    let status = eventually(Duration::from_secs(30), "writers back at 1", || async {
        let status = monitor_status(&stack).await;
        (writers(&status, &queue) == 1).then_some(status)
    })
    .await;
    let decisions = status["decisions"].as_array().expect("decisions");
    let reasons: Vec<&str> = decisions
        .iter()
        .filter_map(|d| d["reason"].as_str())
        .collect();
    assert!(
        reasons.contains(&"drain_slower_than_target") && reasons.contains(&"backlog_gone"),
        "both directions recorded with their reasons: {decisions:?}"
    );
    eprintln!(
        "50,000-message backlog: writers rose to {most}; decisions {:?}",
        decisions
            .iter()
            .map(|d| format!("{}→{} {}", d["from"], d["to"], d["reason"]))
            .collect::<Vec<_>>()
    );
    let metrics = metrics_text(&stack).await;
    assert!(
        metrics.contains(&format!(
            r#"consumer_scaling_decisions_total{{direction="up",queue="{queue}",reason="drain_slower_than_target"}}"#
        )),
        "{metrics}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_steady_load_makes_no_more_than_a_handful_of_writer_changes() {
    let stack = TestStack::start_with(quick_scaling()).await;
    let before = changes(&metrics_text(&stack).await);
    // About 400 messages a second for 8 seconds, in batches of 20 every 50 ms.
    let started = Instant::now();
    let batch: Vec<Value> = (0..20).map(|_| message_from("steady")).collect();
    let mut ids = Vec::new();
    while started.elapsed() < Duration::from_secs(8) {
        let tick = Instant::now();
        ids.extend(stack.publish_batch_ok(&batch).await);
        tokio::time::sleep(Duration::from_millis(50).saturating_sub(tick.elapsed())).await;
    }
    eventually(Duration::from_secs(30), "steady load stored", || async {
        (stack.rows_for(&ids).await.0 == ids.len() as i64).then_some(())
    })
    .await;
    let made = changes(&metrics_text(&stack).await) - before;
    eprintln!(
        "steady load: {} messages over 8 s, {made} writer changes",
        ids.len()
    );
    assert!(
        made <= 4.0,
        "a steady load bounced the writers {made} times"
    );
}
