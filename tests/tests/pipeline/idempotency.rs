use end_to_end::TestStack;
use serde_json::Value;

use crate::fixtures::message_from;

async fn publish_with_key(stack: &TestStack, body: &Value, key: &str) -> String {
    let response = stack
        .http
        .post(format!("{}/message/publish", stack.publisher_url()))
        .header("Idempotency-Key", key)
        .json(body)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 202);
    let body: Value = response.json().await.unwrap();
    body["id"].as_str().unwrap().to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retry_with_the_same_idempotency_key_gets_the_same_id_and_is_stored_once() {
    // Arrange
    let stack = TestStack::start().await;
    let message = message_from("alice");

    // Act
    let first = publish_with_key(&stack, &message, "order-42").await;
    let retry = publish_with_key(&stack, &message, "order-42").await;
    let other_sender = publish_with_key(&stack, &message_from("bob"), "order-42").await;
    stack.wait_stored(other_sender.parse().unwrap()).await;

    // Assert
    assert_eq!(first, retry);
    assert_ne!(first, other_sender);
    stack.wait_stored(first.parse().unwrap()).await;
    assert_eq!(stack.row_count().await, 2);
}
