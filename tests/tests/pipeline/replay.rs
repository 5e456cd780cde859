//! The dead-letter admin routes: `GET /dead-letters` shows what `.dead` holds, with reason, origin
//! queue and payload, and leaves it there; `POST /dead-letters/replay` puts messages back, each once,
//! so that a message refused by the database is stored once its cause is fixed, and sent back to
//! `.dead` with its reason while it is not.

use std::time::Duration;

use end_to_end::{eventually, TestStack};
use serde_json::Value;
use uuid::Uuid;

use crate::fixtures::message_from;

async fn dead_letters(stack: &TestStack) -> Vec<Value> {
    let response = stack.get("/dead-letters?limit=100").await;
    assert_eq!(response.status(), 200);
    response.json().await.expect("a JSON array")
}

/// Waits until `.dead` holds exactly `count` letters, and returns them.
async fn wait_dead(stack: &TestStack, count: usize) -> Vec<Value> {
    eventually(
        Duration::from_secs(30),
        &format!("{count} dead letters"),
        || async {
            let letters = dead_letters(stack).await;
            (letters.len() == count).then_some(letters)
        },
    )
    .await
}

async fn replay(stack: &TestStack, limit: usize) -> u64 {
    let response = stack
        .http
        .post(format!(
            "{}/dead-letters/replay?limit={limit}",
            stack.consumer_url()
        ))
        .send()
        .await
        .expect("consumer reachable");
    assert_eq!(response.status(), 200);
    let body: Value = response.json().await.expect("JSON");
    body["replayed"].as_u64().expect("a count")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_look_at_the_dead_letters_shows_why_and_where_from_and_leaves_them_in_place() {
    let stack = TestStack::start().await;
    stack.publish_raw(b"not a message at all").await;
    let letters = wait_dead(&stack, 1).await;
    let letter = &letters[0];
    assert!(
        letter["reason"]
            .as_str()
            .unwrap()
            .starts_with("undecodable"),
        "{letter}"
    );
    assert_eq!(letter["queue"], stack.queue.as_str());
    assert_eq!(letter["payload"], "not a message at all");
    assert_eq!(letter["payload_bytes"], 20);
    assert_eq!(letter["truncated"], false);
    // Looked at twice, still there, and still one.
    assert_eq!(dead_letters(&stack).await.len(), 1);
    // Closing the looking connection returns what it took; a quorum queue takes it back shortly after.
    eventually(
        Duration::from_secs(10),
        "the dead letter back in .dead",
        || async { (stack.queue_depth(".dead").await == 1).then_some(()) },
    )
    .await;
    for bad in ["limit=0", "limit=101", "offset=-1", "limit=ten"] {
        let response = stack.get(&format!("/dead-letters?{bad}")).await;
        assert_eq!(response.status(), 400, "{bad}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_the_database_refused_is_stored_once_when_replayed_after_the_cause_is_fixed() {
    let stack = TestStack::start().await;
    sqlx::query(
        "ALTER TABLE messages ADD CONSTRAINT no_blocked_sender CHECK (sender <> 'blocked')",
    )
    .execute(&stack.db)
    .await
    .expect("constraint added");
    let id: Uuid = stack.publish_ok(&message_from("blocked")).await;
    let letters = wait_dead(&stack, 1).await;
    assert!(
        letters[0]["reason"]
            .as_str()
            .unwrap()
            .starts_with("refused by PostgreSQL"),
        "{letters:?}"
    );
    assert_eq!(letters[0]["message_id"], id.to_string().as_str());

    // While the cause is still there, a replay sends it back to `.dead`, with its reason.
    assert_eq!(replay(&stack, 10).await, 1);
    let again = wait_dead(&stack, 1).await;
    assert!(again[0]["reason"]
        .as_str()
        .unwrap()
        .starts_with("refused by PostgreSQL"));
    assert_eq!(stack.rows_for(&[id]).await, (0, 0));

    // Fixed: replayed once, stored once, and `.dead` is empty.
    sqlx::query("ALTER TABLE messages DROP CONSTRAINT no_blocked_sender")
        .execute(&stack.db)
        .await
        .expect("constraint dropped");
    assert_eq!(replay(&stack, 10).await, 1);
    stack.wait_stored(id).await;
    assert_eq!(stack.rows_for(&[id]).await, (1, 1));
    wait_dead(&stack, 0).await;
    assert_eq!(replay(&stack, 10).await, 0, "nothing left to replay");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replay_takes_each_dead_letter_once_even_when_it_fails_again_while_the_replay_runs() {
    // Arrange: 200 dead letters whose cause is still there.
    let stack = TestStack::start().await;
    sqlx::query(
        "ALTER TABLE messages ADD CONSTRAINT no_blocked_sender CHECK (sender <> 'blocked')",
    )
    .execute(&stack.db)
    .await
    .expect("constraint added");
    let blocked: Vec<Value> = (0..200).map(|_| message_from("blocked")).collect();
    stack.publish_batch_ok(&blocked).await;
    eventually(Duration::from_secs(30), "200 dead letters", || async {
        (stack.queue_depth(".dead").await == 200).then_some(())
    })
    .await;

    // Act: a replay that could take many more, while each one fails again behind it.
    let replayed = replay(&stack, 1_000).await;

    // Assert: each taken and counted once; all 200 back in `.dead`, none stored.
    assert_eq!(replayed, 200, "each dead letter replayed once");
    eventually(
        Duration::from_secs(30),
        "200 dead letters again",
        || async { (stack.queue_depth(".dead").await == 200).then_some(()) },
    )
    .await;
    assert_eq!(stack.row_count().await, 0);
}

/// The dead-letter routes link and refuse like the other reads: the `next` link is under
/// `PUBLIC_BASE_URL`, never the `Host` a client sends, and a parameter the route does not know is a
/// `400` that names it, not ignored.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dead_letter_pages_link_under_the_public_base_url_and_unknown_parameters_are_refused() {
    // Arrange
    let mut config = end_to_end::StackConfig::unique();
    config.consumer.reads.public_base_url = Some("https://api.example.com/queue/".into());
    let stack = TestStack::start_with(config).await;
    stack.publish_raw(b"first").await;
    stack.publish_raw(b"second").await;
    wait_dead(&stack, 2).await;

    // Act
    let page = stack
        .http
        .get(format!("{}/dead-letters?limit=1", stack.consumer_url()))
        .header("Host", "evil.example")
        .header("X-Forwarded-Host", "evil.example")
        .send()
        .await
        .unwrap();
    let link = page
        .headers()
        .get("link")
        .map(|v| v.to_str().unwrap().to_owned());
    let misspelt = stack.get("/dead-letters?limt=1").await;
    let misspelt_status = misspelt.status();
    let problem: Value = misspelt.json().await.unwrap();
    let replay_misspelt = stack
        .http
        .post(format!(
            "{}/dead-letters/replay?limt=1",
            stack.consumer_url()
        ))
        .send()
        .await
        .unwrap();

    // Assert
    assert_eq!(page.status(), 200);
    assert_eq!(
        link.as_deref(),
        Some("<https://api.example.com/queue/dead-letters?limit=1&offset=1>; rel=\"next\"")
    );
    assert_eq!(misspelt_status, 400);
    assert!(
        problem["detail"].as_str().unwrap_or("").contains("limt"),
        "{problem}"
    );
    assert_eq!(replay_misspelt.status(), 400);
    // Nothing replayed: both letters are back in `.dead` once the looks have returned them.
    eventually(Duration::from_secs(10), "both letters in .dead", || async {
        (stack.queue_depth(".dead").await == 2).then_some(())
    })
    .await;
    assert_eq!(dead_letters(&stack).await.len(), 2);
}
