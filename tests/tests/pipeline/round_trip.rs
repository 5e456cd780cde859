use std::time::Instant;

use chrono::{DateTime, Utc};
use end_to_end::TestStack;

use crate::fixtures::{seed, SEED_MALFORMED};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_seed_message_round_trips_with_every_field_as_sent() {
    // Arrange
    let stack = TestStack::start().await;
    let sent = seed();

    // Act
    let posted = Instant::now();
    let id = stack.publish_ok(&sent).await;
    let stored = stack.wait_stored(id).await;
    println!("POST to row for one message: {:?}", posted.elapsed());

    // Assert
    for field in [
        "ts",
        "sender",
        "messageAttributes",
        "sent_from_ip",
        "priority",
    ] {
        assert_eq!(stored[field], sent[field], "field {field}");
    }
    assert_eq!(stored["id"], id.to_string());
    let received: DateTime<Utc> = stored["received_at"].as_str().unwrap().parse().unwrap();
    let committed: DateTime<Utc> = stored["stored_at"].as_str().unwrap().parse().unwrap();
    assert!(
        committed >= received,
        "stored_at {committed} before received_at {received}"
    );
    let listed: serde_json::Value = stack.get("/message").await.json().await.unwrap();
    assert_eq!(listed.as_array().unwrap(), &vec![stored]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_tutorials_request_without_its_comma_is_refused_at_line_9_and_accepted_once_fixed() {
    // Arrange
    let stack = TestStack::start().await;

    // Act
    let refused = stack
        .http
        .post(format!("{}/message/publish", stack.publisher_url()))
        .header("Content-Type", "application/json")
        .body(SEED_MALFORMED)
        .send()
        .await
        .unwrap();
    let fixed = SEED_MALFORMED.replace("        }\n        \"sent", "        },\n        \"sent");
    let accepted = stack
        .http
        .post(format!("{}/message/publish", stack.publisher_url()))
        .header("Content-Type", "application/json")
        .body(fixed)
        .send()
        .await
        .unwrap();

    // Assert
    assert_eq!(refused.status(), 400);
    let problem: serde_json::Value = refused.json().await.unwrap();
    assert!(
        problem["detail"].as_str().unwrap().contains("line 9"),
        "{problem}"
    );
    assert_eq!(accepted.status(), 202);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn numbers_at_the_edges_of_f64_are_stored_and_served_back_equal() {
    // Arrange: the values schemathesis found (PostgreSQL keeps -f64::MAX as an exact 309-digit number).
    let stack = TestStack::start().await;
    let attributes = serde_json::json!({
        "max": f64::MAX, "min": -f64::MAX, "tiny": 5e-324, "big_int": u64::MAX, "neg_int": i64::MIN
    });

    // Act
    let id = stack
        .publish_ok(&serde_json::json!({ "sender": "edges", "messageAttributes": attributes }))
        .await;
    let stored = stack.wait_stored(id).await;
    let listed = stack.get("/message").await;

    // Assert
    assert_eq!(stored["messageAttributes"], attributes);
    assert_eq!(listed.status(), 200);
}
