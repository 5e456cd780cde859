//! The worker monitor in headless Chromium: its figures match the database and the broker, it updates
//! as messages arrive, a sender's markup is shown as text, and a screenshot is saved under `target/`.

use std::time::Duration;

use end_to_end::eventually;
use fantoccini::{Client, Locator};
use serde_json::json;
use uuid::Uuid;

use crate::{browser::Browser, services::Services};

const HOSTILE_SENDER: &str = "<img src=x onerror=\"window.injected=1\">";

async fn text(client: &Client, selector: &str) -> String {
    client
        .find(Locator::Css(selector))
        .await
        .unwrap_or_else(|error| panic!("{selector} on the page: {error}"))
        .text()
        .await
        .expect("element text")
}

/// Waits until the page shows `expected` in `selector`, without reloading it.
async fn shows(client: &Client, selector: &str, expected: &str) {
    eventually(
        Duration::from_secs(15),
        &format!("{selector} to show {expected}"),
        || async { (text(client, selector).await == expected).then_some(()) },
    )
    .await;
}

/// The texts of the elements `selector` finds, read in one script: the page redraws its tables every
/// second, so elements looked up one by one can be gone before they are read.
async fn texts(client: &Client, selector: &str, read: &str) -> Vec<String> {
    let script =
        format!("return Array.from(document.querySelectorAll(arguments[0])).map(e => {read});");
    let found = client
        .execute(&script, vec![json!(selector)])
        .await
        .expect("script runs");
    serde_json::from_value(found).expect("a list of strings")
}

/// The ids of the messages table, top to bottom.
async fn listed_ids(client: &Client) -> Vec<String> {
    texts(client, "#messages tbody tr[data-id]", "e.dataset.id").await
}

/// The newest ids in the database, as the page should list them.
async fn newest_ids(services: &Services, sender: Option<&str>) -> Vec<String> {
    let ids: Vec<Uuid> = sqlx::query_scalar(
        "SELECT id FROM messages WHERE $1::text IS NULL OR sender = $1 \
         ORDER BY received_at DESC, id DESC LIMIT 20",
    )
    .bind(sender)
    .fetch_all(&services.db)
    .await
    .expect("newest ids");
    ids.iter().map(Uuid::to_string).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_monitor_shows_what_the_database_holds_updates_live_and_escapes_senders() {
    let services = Services::start(&[("QUEUE_WATCH_INTERVAL_MS", "200")]).await;
    let mut ids = Vec::new();
    for sender in ["alice", HOSTILE_SENDER, "alice"] {
        ids.push(
            services
                .publish(
                    &json!({"sender": sender, "messageAttributes": {"n": ids.len()}}),
                    &[],
                )
                .await,
        );
    }
    // One message that can never be stored, for the dead-letter figure.
    services.publish_raw(b"{\"not\": \"a message\"}").await;
    services.wait_stored(&ids).await;

    let browser = Browser::start().await;
    let client = &browser.client;
    client
        .goto(&format!("{}/", services.consumer.url))
        .await
        .expect("page loads");

    // The figures match the database and the broker.
    shows(client, "#stored-total", "3").await;
    shows(client, "#dead-letters", "1").await;
    let queue_row = format!("#queues tbody tr[data-queue=\"{}\"]", services.queue);
    eventually(Duration::from_secs(15), "the main queue's row", || async {
        client.find(Locator::Css(&queue_row)).await.ok()
    })
    .await;
    assert_eq!(listed_ids(client).await, newest_ids(&services, None).await);

    // A sender's markup is text: no image element, and its handler never ran.
    let shown = texts(client, "#messages td.sender", "e.textContent").await;
    assert!(shown.iter().any(|s| s == HOSTILE_SENDER), "{shown:?}");
    assert!(client
        .find_all(Locator::Css("img"))
        .await
        .expect("query")
        .is_empty());
    let injected = client
        .execute("return window.injected === undefined", vec![])
        .await
        .expect("script runs");
    assert_eq!(injected, json!(true), "the sender's handler ran");

    // New messages appear without a reload.
    let mut more = Vec::new();
    for n in 0..2 {
        more.push(
            services
                .publish(
                    &json!({"sender": "bob", "messageAttributes": {"n": n}}),
                    &[],
                )
                .await,
        );
    }
    services.wait_stored(&more).await;
    shows(client, "#stored-total", "5").await;
    eventually(Duration::from_secs(15), "bob's messages listed", || async {
        (listed_ids(client).await == newest_ids(&services, None).await).then_some(())
    })
    .await;

    // The sender filter keeps one sender's messages.
    client
        .find(Locator::Css("#sender-filter"))
        .await
        .expect("filter")
        .send_keys("bob")
        .await
        .expect("typed");
    eventually(Duration::from_secs(15), "only bob's messages", || async {
        (listed_ids(client).await == newest_ids(&services, Some("bob")).await).then_some(())
    })
    .await;
    client
        .find(Locator::Css("#sender-filter"))
        .await
        .expect("filter")
        .clear()
        .await
        .expect("cleared");

    // A screenshot under target/, once every sender is listed again (docs/monitor.png is taken under
    // load by monitor_charts.rs).
    eventually(
        Duration::from_secs(15),
        "every sender listed again",
        || async { (listed_ids(client).await == newest_ids(&services, None).await).then_some(()) },
    )
    .await;
    let png = client.screenshot().await.expect("screenshot");
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/monitor.png");
    std::fs::write(&path, &png).expect("screenshot saved");
    assert!(png.starts_with(b"\x89PNG"), "a PNG");
    eprintln!("worker monitor screenshot: {}", path.display());
    let _ = browser.client.clone().close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_read_tokens_the_monitor_asks_for_one_and_shows_nothing_until_given_it() {
    const TOKEN: &str = "monitor-read-token-0123456789";
    let services =
        Services::start(&[("READ_TOKENS", TOKEN), ("QUEUE_WATCH_INTERVAL_MS", "200")]).await;
    let id = services
        .publish(&json!({"sender": "behind a token"}), &[])
        .await;
    services.wait_stored(&[id]).await;

    let browser = Browser::start().await;
    let client = &browser.client;
    client
        .goto(&format!("{}/", services.consumer.url))
        .await
        .expect("page loads");
    eventually(Duration::from_secs(15), "the token form shown", || async {
        let hidden = client
            .execute(
                "return document.getElementById('token-form').hidden",
                vec![],
            )
            .await
            .ok()?;
        (hidden == json!(false)).then_some(())
    })
    .await;
    assert_eq!(
        text(client, "#stored-total").await,
        "–",
        "no figures without a token"
    );
    assert!(
        listed_ids(client).await.is_empty(),
        "no messages without a token"
    );

    crate::browser::give_token(client, TOKEN).await;
    shows(client, "#stored-total", "1").await;
    eventually(Duration::from_secs(15), "the message listed", || async {
        (listed_ids(client).await == vec![id.to_string()]).then_some(())
    })
    .await;
    let _ = browser.client.clone().close().await;
}
