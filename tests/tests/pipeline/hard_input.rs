//! The promise under hard but legal input: exact numbers, keys that cannot lose a message, and the size
//! limit of every element of a batch.

use std::time::Duration;

use end_to_end::{eventually, TestStack};
use serde_json::{json, Value};
use uuid::Uuid;

pub async fn post_raw(
    stack: &TestStack,
    path: &str,
    body: String,
    key: Option<&str>,
) -> reqwest::Response {
    let mut request = stack
        .http
        .post(format!("{}{path}", stack.publisher_url()))
        .header("Content-Type", "application/json")
        .body(body);
    if let Some(key) = key {
        request = request.header("Idempotency-Key", key);
    }
    request.send().await.expect("publisher reachable")
}

pub async fn accepted_id(response: reqwest::Response) -> Uuid {
    assert_eq!(response.status(), 202, "{:?}", response.text().await);
    let body: Value = response.json().await.unwrap();
    body["id"].as_str().unwrap().parse().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn numbers_at_the_edges_of_json_come_back_with_the_exact_text_that_was_sent() {
    // Arrange
    let stack = TestStack::start().await;
    let attributes = r#"{"u64+1":18446744073709551616,"decimal":12345678901234567.89,"minus zero":-0,"exponent":1E2,"tiny":1e-400,"huge":1e400,"max":1.7976931348623157e308,"same":1,"same":2}"#;
    let body = format!(r#"{{"sender":"numbers","messageAttributes":{attributes}}}"#);

    // Act
    let id = accepted_id(post_raw(&stack, "/message/publish", body, None).await).await;
    // Polled as text: these numbers are beyond what a JSON library's number type holds.
    eventually(
        Duration::from_secs(30),
        "the message to be stored",
        || async { (stack.rows_for(&[id]).await == (1, 1)).then_some(()) },
    )
    .await;
    let served = stack
        .get(&format!("/message/{id}"))
        .await
        .text()
        .await
        .unwrap();
    let listed = stack
        .get("/message?sender=numbers")
        .await
        .text()
        .await
        .unwrap();
    let stored: String =
        sqlx::query_scalar("SELECT message_attributes::text FROM messages WHERE id = $1")
            .bind(id)
            .fetch_one(&stack.db)
            .await
            .unwrap();

    // Assert
    assert_eq!(stored, attributes);
    assert!(
        served.contains(&format!(r#""messageAttributes":{attributes}"#)),
        "{served}"
    );
    assert!(listed.contains(attributes), "{listed}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_reused_with_a_different_message_is_dead_lettered_with_its_reason_and_the_first_is_kept(
) {
    // Arrange
    let stack = TestStack::start().await;
    let first = json!({ "sender": "alice", "messageAttributes": { "order": 1 } }).to_string();
    let changed = json!({ "sender": "alice", "messageAttributes": { "order": 2 } }).to_string();

    // Act
    let first_id =
        accepted_id(post_raw(&stack, "/message/publish", first.clone(), Some("k-1")).await).await;
    let retry_id =
        accepted_id(post_raw(&stack, "/message/publish", first, Some("k-1")).await).await;
    let changed_id =
        accepted_id(post_raw(&stack, "/message/publish", changed, Some("k-1")).await).await;

    // Assert: the id is the key's, the first body is stored once, the changed one is in `.dead`.
    assert_eq!(first_id, retry_id);
    assert_eq!(first_id, changed_id);
    let stored = stack.wait_stored(first_id).await;
    assert_eq!(stored["messageAttributes"], json!({ "order": 1 }));
    eventually(
        Duration::from_secs(10),
        "the changed copy to be dead-lettered",
        || async { (stack.queue_depth(".dead").await == 1).then_some(()) },
    )
    .await;
    assert_eq!(
        stack.drain_dead_letter_reasons().await,
        vec![consumer::KEY_REUSED.to_owned()]
    );
    assert_eq!(stack.row_count().await, 1);
    assert_eq!(
        stack
            .metric(stack.consumer_url(), "consumer_key_conflicts_total")
            .await,
        1.0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sender_holding_a_newline_cannot_take_another_senders_keyed_message() {
    // Arrange: sender "a\nk" with key "0" once spelled the same id as element 0 of a batch from "a" with key "k".
    let stack = TestStack::start().await;

    // Act
    let single = accepted_id(
        post_raw(
            &stack,
            "/message/publish",
            json!({ "sender": "a\nk" }).to_string(),
            Some("0"),
        )
        .await,
    )
    .await;
    let response = post_raw(
        &stack,
        "/message/publish/batch",
        json!([{ "sender": "a" }]).to_string(),
        Some("k"),
    )
    .await;
    assert_eq!(response.status(), 202);
    let batch: Value = response.json().await.unwrap();
    let element: Uuid = batch["ids"][0].as_str().unwrap().parse().unwrap();

    // Assert
    assert_ne!(single, element);
    assert_eq!(stack.wait_stored(single).await["sender"], "a\nk");
    assert_eq!(stack.wait_stored(element).await["sender"], "a");
    assert_eq!(stack.row_count().await, 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_element_of_a_batch_is_held_to_the_one_message_limit() {
    // Arrange
    let stack = TestStack::start().await;
    let limit = stack.consumer_config.ingest.max_message_bytes;
    let two_mib = "x".repeat(2 * 1024 * 1024);
    let oversized =
        json!([{ "sender": "big", "messageAttributes": { "blob": two_mib } }]).to_string();
    let just_over = json!([
        { "sender": "ok" },
        { "sender": "big", "messageAttributes": { "blob": "y".repeat(limit) } }
    ])
    .to_string();

    // Act
    let refused_2mib = post_raw(&stack, "/message/publish/batch", oversized, None).await;
    let refused_over = post_raw(&stack, "/message/publish/batch", just_over, None).await;
    let largest =
        json!({ "sender": "largest", "messageAttributes": { "blob": "z".repeat(limit - 100) } });
    let ids = stack.publish_batch_ok(&vec![largest; 3]).await;

    // Assert
    assert_eq!(refused_2mib.status(), 413);
    assert_eq!(refused_over.status(), 413);
    let problem: Value = refused_over.json().await.unwrap();
    assert!(
        problem["detail"].as_str().unwrap().contains("index 1"),
        "{problem}"
    );
    for id in &ids {
        stack.wait_stored(*id).await;
    }
    assert_eq!(stack.row_count().await, 3);
}
