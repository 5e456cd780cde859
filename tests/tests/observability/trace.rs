//! A message's trace id is the same in the publisher's log lines for its request and in the consumer's
//! for storing it: taken from the request's `traceparent`, or started by the publisher.

use std::time::Duration;

use end_to_end::eventually;
use serde_json::{json, Value};
use uuid::Uuid;

use crate::services::Services;

/// The trace id of a JSON log line: a field of the event or of any span it was written in.
fn trace_id(event: &Value) -> Option<&str> {
    let spans = event["spans"].as_array().into_iter().flatten();
    std::iter::once(event)
        .chain(std::iter::once(&event["span"]))
        .chain(spans)
        .find_map(|fields| fields["trace_id"].as_str().filter(|id| !id.is_empty()))
}

/// Whether `event` is about the message `id`: it names it, or a span it was written in does.
fn about(event: &Value, id: Uuid) -> bool {
    let id = id.to_string();
    let spans = event["spans"].as_array().into_iter().flatten();
    std::iter::once(event)
        .chain(std::iter::once(&event["span"]))
        .chain(spans)
        .any(|fields| fields["id"].as_str() == Some(id.as_str()))
}

/// The trace ids in `events` of the lines about `id`, waiting for at least one.
async fn trace_ids_about(logs: &end_to_end::process::LogLines, id: Uuid, who: &str) -> Vec<String> {
    eventually(
        Duration::from_secs(10),
        &format!("a {who} log line about {id}"),
        || async {
            let ids: Vec<String> = logs
                .events()
                .iter()
                .filter(|event| about(event, id))
                .filter_map(|event| trace_id(event).map(str::to_owned))
                .collect();
            (!ids.is_empty()).then_some(ids)
        },
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_trace_id_given_to_the_publisher_is_in_the_consumer_log_lines_for_that_message() {
    let services = Services::start(&[]).await;
    let given = "4bf92f3577b34da6a3ce929d0e0e4736";
    let traceparent = format!("00-{given}-00f067aa0ba902b7-01");
    let id = services
        .publish(
            &json!({"sender": "traced"}),
            &[("traceparent", traceparent.as_str())],
        )
        .await;
    services.wait_stored(&[id]).await;

    let published = trace_ids_about(&services.publisher.logs, id, "publisher").await;
    let stored = trace_ids_about(&services.consumer.logs, id, "consumer").await;
    assert!(
        published.iter().all(|t| t == given),
        "publisher: {published:?}"
    );
    assert!(stored.iter().all(|t| t == given), "consumer: {stored:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_traceparent_the_publisher_starts_a_trace_that_the_consumer_continues() {
    let services = Services::start(&[]).await;
    let first = services.publish(&json!({"sender": "untraced"}), &[]).await;
    let second = services
        .publish(
            &json!({"sender": "untraced"}),
            &[("traceparent", "not a trace context")],
        )
        .await;
    services.wait_stored(&[first, second]).await;

    let mut started = Vec::new();
    for id in [first, second] {
        let published = trace_ids_about(&services.publisher.logs, id, "publisher").await;
        let stored = trace_ids_about(&services.consumer.logs, id, "consumer").await;
        assert_eq!(published.len(), 1, "one publisher line: {published:?}");
        assert_eq!(published[0].len(), 32, "a W3C trace id: {published:?}");
        assert!(
            stored.iter().all(|t| *t == published[0]),
            "{stored:?} vs {published:?}"
        );
        started.push(published[0].clone());
    }
    assert_ne!(started[0], started[1], "each request starts its own trace");
}
