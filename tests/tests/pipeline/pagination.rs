use std::{collections::HashSet, time::Duration};

use chrono::{DateTime, Utc};
use common::{Message, QueuedMessage};
use end_to_end::{eventually, TestStack};
use serde_json::{json, Value};
use uuid::Uuid;

use crate::fixtures::message_from;

async fn publish_batch(stack: &TestStack, sender: &str, count: usize) -> Vec<Uuid> {
    let batch: Vec<Value> = (0..count).map(|_| message_from(sender)).collect();
    stack.publish_batch_ok(&batch).await
}

async fn wait_rows(stack: &TestStack, ids: &[Uuid]) {
    let expected = ids.len() as i64;
    eventually(Duration::from_secs(30), "rows to be stored", || async {
        (stack.rows_for(ids).await == (expected, expected)).then_some(())
    })
    .await;
}

/// Follows `rel="next"` links from `first`, calling `between` after each page; returns every message seen.
async fn walk(stack: &TestStack, first: String, mut between: impl AsyncFnMut(usize)) -> Vec<Value> {
    let mut seen = Vec::new();
    let mut next = Some(first);
    let mut page = 0;
    while let Some(url) = next.take() {
        let response = stack.http.get(&url).send().await.unwrap();
        assert_eq!(response.status(), 200, "{url}");
        next = response.headers().get("link").map(|link| {
            let link = link.to_str().unwrap();
            assert!(link.ends_with("; rel=\"next\""), "{link}");
            let target = &link[link.find('<').unwrap() + 1..link.find('>').unwrap()];
            // A relative reference, resolved against the URL asked.
            assert!(target.starts_with("/message?"), "{target}");
            format!("{}{target}", stack.consumer_url())
        });
        let messages: Vec<Value> = response.json().await.unwrap();
        seen.extend(messages);
        page += 1;
        between(page).await;
    }
    seen
}

fn sort_key(message: &Value) -> (DateTime<Utc>, Uuid) {
    (
        message["received_at"].as_str().unwrap().parse().unwrap(),
        message["id"].as_str().unwrap().parse().unwrap(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn following_next_links_under_concurrent_inserts_visits_every_earlier_message_exactly_once() {
    // Arrange
    let stack = TestStack::start().await;
    let earlier = publish_batch(&stack, "early", 300).await;
    wait_rows(&stack, &earlier).await;
    let (oldest, newest): (DateTime<Utc>, DateTime<Utc>) =
        sqlx::query_as("SELECT min(received_at), max(received_at) FROM messages")
            .fetch_one(&stack.db)
            .await
            .unwrap();

    // Act: between pages, store new messages and late arrivals that sort among those already paged.
    let seen = walk(
        &stack,
        format!("{}/message?limit=37", stack.consumer_url()),
        async |page| {
            let mut injected = publish_batch(&stack, "new", 5).await;
            for i in 0..5 {
                let late = QueuedMessage {
                    id: Uuid::now_v7(),
                    received_at: oldest + (newest - oldest) * (page as i32 * 5 + i) / 60,
                    message: serde_json::from_value::<Message>(json!({ "sender": "late" }))
                        .unwrap(),
                    fingerprint: None,
                };
                stack.publish_raw(&late.to_payload()).await;
                injected.push(late.id);
            }
            wait_rows(&stack, &injected).await;
        },
    )
    .await;

    // Assert
    let ids: Vec<Uuid> = seen.iter().map(|m| sort_key(m).1).collect();
    let distinct: HashSet<Uuid> = ids.iter().copied().collect();
    assert_eq!(distinct.len(), ids.len(), "a message was served twice");
    let missing: Vec<&Uuid> = earlier.iter().filter(|id| !distinct.contains(id)).collect();
    assert!(
        missing.is_empty(),
        "{} earlier messages were skipped",
        missing.len()
    );
    let keys: Vec<_> = seen.iter().map(sort_key).collect();
    assert!(
        keys.windows(2).all(|pair| pair[0] > pair[1]),
        "pages are not newest first"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_sender_filter_is_kept_across_pages() {
    // Arrange
    let stack = TestStack::start().await;
    let mut ids = publish_batch(&stack, "alice", 23).await;
    ids.extend(publish_batch(&stack, "bob", 10).await);
    wait_rows(&stack, &ids).await;

    // Act
    let seen = walk(
        &stack,
        format!("{}/message?limit=5&sender=alice", stack.consumer_url()),
        async |_| {},
    )
    .await;

    // Assert
    assert_eq!(seen.len(), 23);
    assert!(seen.iter().all(|m| m["sender"] == "alice"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_page_of_large_messages_ends_at_the_byte_budget_and_its_links_lead_to_every_message_once()
{
    // Arrange: room for three messages of 60 KB a page.
    let mut config = end_to_end::StackConfig::unique();
    config.consumer.reads.max_page_bytes = 200_000;
    let stack = TestStack::start_with(config).await;
    let padding = "p".repeat(60_000);
    let batch: Vec<Value> = (0..10)
        .map(|i| json!({ "sender": format!("large-{i}"), "messageAttributes": { "padding": padding } }))
        .collect();
    let ids = stack.publish_batch_ok(&batch).await;
    wait_rows(&stack, &ids).await;

    // Act
    let first = stack.get("/message?limit=1000").await;
    let has_next = first.headers().contains_key("link");
    let first_page: Vec<Value> = first.json().await.unwrap();
    let seen = walk(
        &stack,
        format!("{}/message?limit=1000", stack.consumer_url()),
        async |_| {},
    )
    .await;

    // Assert
    assert_eq!(
        first_page.len(),
        3,
        "the page stops before its fourth 60 KB message"
    );
    assert!(has_next, "a link to the rest");
    let seen: Vec<Uuid> = seen
        .iter()
        .map(|message| message["id"].as_str().unwrap().parse().unwrap())
        .collect();
    assert_eq!(seen.len(), 10, "every message once");
    assert_eq!(
        seen.iter().collect::<HashSet<_>>(),
        ids.iter().collect::<HashSet<_>>()
    );
}

#[tokio::test]
async fn next_links_never_echo_the_host_headers_a_client_sends() {
    let mut config = end_to_end::StackConfig::unique();
    config.consumer.reads.public_base_url = Some("https://api.example.com/queue/".into());
    let stack = TestStack::start_with(config).await;
    let ids = publish_batch(&stack, "links", 3).await;
    wait_rows(&stack, &ids).await;
    let response = stack
        .http
        .get(format!(
            "{}/message?limit=1&sender=links",
            stack.consumer_url()
        ))
        .header("Host", "evil.example")
        .header("X-Forwarded-Host", "evil.example")
        .header("X-Forwarded-Proto", "http")
        .header("Forwarded", "host=evil.example;proto=http")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let link = response.headers()["link"].to_str().unwrap().to_owned();
    assert!(!link.contains("evil"), "{link}");
    assert!(
        link.starts_with("<https://api.example.com/queue/message?limit=1&sender=links&before="),
        "{link}"
    );
}
