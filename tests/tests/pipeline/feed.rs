//! `GET /message/feed`: every stored message once, in an order that a later commit never falls behind;
//! long polls that answer at the first commit; event streams that resume with `Last-Event-ID`; and the
//! bounds on followers and slow readers.

use std::{
    collections::HashSet,
    time::{Duration, Instant},
};

use chrono::Utc;
use common::{Message, QueuedMessage};
use end_to_end::{eventually, StackConfig, TestStack};
use serde_json::{json, Value};
use tokio::{io::AsyncWriteExt, net::TcpSocket};
use uuid::Uuid;

use crate::fixtures::message_from;

/// One page of the feed: its messages' ids and the `next` link (absolute).
struct Page {
    ids: Vec<Uuid>,
    next: String,
}

async fn page(stack: &TestStack, url: &str) -> Page {
    let response = stack.http.get(url).send().await.unwrap();
    assert_eq!(response.status(), 200, "{url}");
    let link = response
        .headers()
        .get("link")
        .unwrap_or_else(|| panic!("{url}: no Link header"))
        .to_str()
        .unwrap()
        .to_owned();
    assert!(link.ends_with("; rel=\"next\""), "{link}");
    let target = &link[link.find('<').unwrap() + 1..link.find('>').unwrap()];
    assert!(target.starts_with("/message/feed?after="), "{target}");
    let messages: Vec<Value> = response.json().await.unwrap();
    Page {
        ids: messages
            .iter()
            .map(|m| m["id"].as_str().unwrap().parse().unwrap())
            .collect(),
        next: format!("{}{target}", stack.consumer_url()),
    }
}

/// Follows the feed from `url` until it has served `count` messages and then a page comes back empty
/// (30 s at most); returns the ids seen and the last link. The feed serves a row once every transaction
/// older than its own has ended, on the whole server: tests of other databases running alongside may
/// hold it back for a moment, so an empty page before `count` is waited past rather than taken for the
/// end.
async fn follow_to_the_end(stack: &TestStack, url: String, count: usize) -> (Vec<Uuid>, String) {
    let deadline = Instant::now() + Duration::from_secs(30);
    let (mut seen, mut url) = (Vec::new(), url);
    loop {
        let page = page(stack, &url).await;
        if page.ids.is_empty() {
            // An empty page links to where it was asked from.
            assert_eq!(after(&page.next), after(&url).or(Some("0".into())));
            if seen.len() >= count {
                return (seen, page.next);
            }
            assert!(
                Instant::now() < deadline,
                "the feed served {} of {count} messages in 30 s",
                seen.len()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        seen.extend(page.ids);
        url = page.next;
    }
}

/// The `after` parameter of a feed URL.
fn after(url: &str) -> Option<String> {
    let query = url.split_once('?')?.1;
    query
        .split('&')
        .find_map(|pair| pair.strip_prefix("after="))
        .map(str::to_owned)
}

async fn stored(stack: &TestStack, ids: &[Uuid]) {
    let expected = ids.len() as i64;
    eventually(Duration::from_secs(30), "rows to be stored", || async {
        (stack.rows_for(ids).await == (expected, expected)).then_some(())
    })
    .await;
}

fn exactly_once(seen: &[Uuid]) -> HashSet<Uuid> {
    let set: HashSet<Uuid> = seen.iter().copied().collect();
    assert_eq!(set.len(), seen.len(), "a message was served twice");
    set
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn following_the_links_visits_every_message_once_and_an_empty_page_links_to_itself() {
    // Arrange
    let stack = TestStack::start().await;
    let mut published = Vec::new();
    for n in 0..5 {
        let batch: Vec<Value> = (0..50).map(|_| message_from(&format!("s{n}"))).collect();
        published.extend(stack.publish_batch_ok(&batch).await);
    }
    stored(&stack, &published).await;

    // Act
    let first = format!("{}/message/feed?limit=37", stack.consumer_url());
    let (seen, end) = follow_to_the_end(&stack, first, published.len()).await;
    let more: Vec<Value> = (0..20).map(|_| message_from("later")).collect();
    let later = stack.publish_batch_ok(&more).await;
    stored(&stack, &later).await;
    let (after, _) = follow_to_the_end(&stack, end, later.len()).await;
    let sender = format!("{}/message/feed?sender=s3", stack.consumer_url());
    let (of_sender, _) = follow_to_the_end(&stack, sender, 50).await;

    // Assert
    assert_eq!(exactly_once(&seen), published.iter().copied().collect());
    assert_eq!(exactly_once(&after), later.iter().copied().collect());
    assert_eq!(
        exactly_once(&of_sender),
        published[150..200].iter().copied().collect()
    );
}

/// A row whose transaction began before rows that commit first, and which carries an older
/// `received_at` (as a republished message or a replayed dead letter does): the feed holds back the rows
/// behind it until it commits, then serves it before them; a client polling `GET /message` for what is
/// newer than the newest row it saw never sees it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_row_committed_late_is_served_in_commit_order_where_newest_first_polling_misses_it() {
    // Arrange
    let stack = TestStack::start().await;
    let first = stack.publish_ok(&message_from("before")).await;
    stack.wait_stored(first).await;
    let (_, head) =
        follow_to_the_end(&stack, format!("{}/message/feed", stack.consumer_url()), 1).await;
    let newest_seen: Vec<Value> = stack.get("/message?limit=1").await.json().await.unwrap();
    assert_eq!(newest_seen[0]["id"], first.to_string());
    let mut late = stack.db.begin().await.unwrap();
    let late_id = Uuid::now_v7();
    sqlx::query(
        "INSERT INTO messages (id, sender, received_at) VALUES ($1, 'late', now() - interval '1 minute')",
    )
    .bind(late_id)
    .execute(&mut *late)
    .await
    .unwrap();

    // Act: a message stored by the pipeline commits while the late row's transaction is open.
    let after = stack.publish_ok(&message_from("after")).await;
    stack.wait_stored(after).await;
    let held = page(&stack, &head).await;
    late.commit().await.unwrap();
    let (served, _) = follow_to_the_end(&stack, held.next.clone(), 2).await;
    let polled: Vec<Value> = stack.get("/message?limit=100").await.json().await.unwrap();
    let newer_than_seen: Vec<String> = polled
        .iter()
        .map(|m| m["id"].as_str().unwrap().to_owned())
        .take_while(|id| *id != first.to_string())
        .collect();

    // Assert
    assert!(
        held.ids.is_empty(),
        "served past a transaction still open: {:?}",
        held.ids
    );
    assert_eq!(served, vec![late_id, after]);
    assert_eq!(newer_than_seen, vec![after.to_string()]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_long_poll_answers_at_the_first_commit_and_empty_at_its_deadline() {
    // Arrange
    let stack = TestStack::start().await;
    let (_, head) =
        follow_to_the_end(&stack, format!("{}/message/feed", stack.consumer_url()), 0).await;

    // Act
    let started = Instant::now();
    let idle = page(&stack, &format!("{head}&wait=1")).await;
    let idle_took = started.elapsed();
    let waiting = {
        let (http, url) = (stack.http.clone(), format!("{head}&wait=20"));
        tokio::spawn(async move {
            let started = Instant::now();
            let response = http.get(url).send().await.unwrap();
            let body: Vec<Value> = response.json().await.unwrap();
            (body, started.elapsed())
        })
    };
    eventually(Duration::from_secs(10), "the long poll to wait", || async {
        (stack
            .metric(stack.consumer_url(), "consumer_feed_followers")
            .await
            == 1.0)
            .then_some(())
    })
    .await;
    let id = stack.publish_ok(&message_from("awaited")).await;
    let (body, took) = waiting.await.unwrap();

    // Assert
    assert!(idle.ids.is_empty());
    assert!(idle.next.ends_with("&wait=1"), "{}", idle.next);
    assert!(
        idle_took >= Duration::from_secs(1) && idle_took < Duration::from_secs(5),
        "{idle_took:?}"
    );
    assert_eq!(body.len(), 1);
    assert_eq!(body[0]["id"], id.to_string());
    assert!(took < Duration::from_secs(15), "{took:?}");
    assert_eq!(
        stack
            .metric(stack.consumer_url(), "consumer_feed_followers")
            .await,
        0.0
    );
}

/// Reads server-sent events from `response` until `count` messages came or `within` passed; returns
/// each event's (id, message id) and the comments seen.
async fn events(
    response: &mut reqwest::Response,
    count: usize,
    within: Duration,
) -> (Vec<(String, Uuid)>, Vec<String>) {
    let deadline = tokio::time::Instant::now() + within;
    let (mut buffer, mut seen, mut comments) = (String::new(), Vec::new(), Vec::new());
    while seen.len() < count {
        let chunk = match tokio::time::timeout_at(deadline, response.chunk()).await {
            Ok(chunk) => chunk.unwrap(),
            Err(_) => break,
        };
        let Some(chunk) = chunk else { break };
        buffer.push_str(std::str::from_utf8(&chunk).unwrap());
        while let Some(end) = buffer.find("\n\n") {
            let event: String = buffer.drain(..end + 2).collect();
            let (mut id, mut data) = (None, None);
            for line in event.lines() {
                if let Some(comment) = line.strip_prefix(':') {
                    comments.push(comment.trim().to_owned());
                } else if let Some(value) = line.strip_prefix("id: ") {
                    id = Some(value.to_owned());
                } else if let Some(value) = line.strip_prefix("data: ") {
                    let message: Value = serde_json::from_str(value).unwrap();
                    data = Some(message["id"].as_str().unwrap().parse().unwrap());
                }
            }
            if let (Some(id), Some(data)) = (id, data) {
                seen.push((id, data));
            }
        }
    }
    (seen, comments)
}

/// `GET /message/feed?{query}` asking for an event stream, resuming after `last_event_id` if given.
async fn request_stream(
    stack: &TestStack,
    query: &str,
    last_event_id: Option<&str>,
) -> reqwest::Response {
    let mut request = stack
        .http
        .get(format!("{}/message/feed?{query}", stack.consumer_url()))
        .header("accept", "text/event-stream");
    if let Some(id) = last_event_id {
        request = request.header("last-event-id", id);
    }
    request.send().await.unwrap()
}

async fn open_stream(stack: &TestStack, last_event_id: Option<&str>) -> reqwest::Response {
    let response = request_stream(stack, "limit=7", last_event_id).await;
    assert_eq!(response.status(), 200);
    assert_eq!(
        response.headers()["content-type"].to_str().unwrap(),
        "text/event-stream"
    );
    response
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_event_stream_resumes_after_a_disconnect_with_last_event_id_and_beats_while_idle() {
    // Arrange
    let mut config = StackConfig::unique();
    config.consumer.feed.feed_heartbeat_secs = 1;
    let stack = TestStack::start_with(config).await;
    let batch: Vec<Value> = (0..50).map(|_| message_from("streamed")).collect();
    let earlier = stack.publish_batch_ok(&batch).await;
    stored(&stack, &earlier).await;

    // Act: read 20 events, drop the connection, store more, resume after the last event read.
    let mut stream = open_stream(&stack, None).await;
    let (first, _) = events(&mut stream, 20, Duration::from_secs(20)).await;
    drop(stream);
    let batch: Vec<Value> = (0..30).map(|_| message_from("streamed later")).collect();
    let later = stack.publish_batch_ok(&batch).await;
    stored(&stack, &later).await;
    let resume_from = first.last().unwrap().0.clone();
    let mut stream = open_stream(&stack, Some(&resume_from)).await;
    let (rest, _) = events(&mut stream, 60, Duration::from_secs(20)).await;
    let (none, comments) = events(&mut stream, 1, Duration::from_secs(3)).await;

    // Assert
    let seen: Vec<Uuid> = first.iter().chain(&rest).map(|(_, id)| *id).collect();
    let all: HashSet<Uuid> = earlier.iter().chain(&later).copied().collect();
    assert!(first.len() >= 20 && first.len() < 50, "{}", first.len());
    assert_eq!(exactly_once(&seen), all);
    assert!(none.is_empty());
    assert!(
        comments.iter().any(|c| c == "heartbeat"),
        "no heartbeat in 3 s: {comments:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn followers_beyond_the_bound_are_refused_and_a_reader_that_takes_nothing_is_dropped() {
    // Arrange
    let mut config = StackConfig::unique();
    config.consumer.feed.feed_max_followers = 2;
    config.consumer.feed.feed_slow_reader_secs = 1;
    let stack = TestStack::start_with(config).await;
    // 400 messages of 16 KiB attributes: 6 MiB, far beyond what the socket buffers of a client that
    // reads nothing take.
    let mut ids = Vec::new();
    for _ in 0..8 {
        let batch: Vec<Value> = (0..50)
            .map(|n| json!({"sender": "big", "messageAttributes": {"n": n, "pad": "x".repeat(16 * 1024)}}))
            .collect();
        ids.extend(stack.publish_batch_ok(&batch).await);
    }
    stored(&stack, &ids).await;

    // Act: two streams, one that reads everything and then waits, and one that never reads; then more.
    let mut reading = open_stream(&stack, None).await;
    let (read, _) = events(&mut reading, ids.len(), Duration::from_secs(30)).await;
    let address = end_to_end::url_address(stack.consumer_url());
    let socket = TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    let mut never_reads = socket.connect(address).await.unwrap();
    never_reads
        .write_all(b"GET /message/feed HTTP/1.1\r\nHost: test\r\nAccept: text/event-stream\r\n\r\n")
        .await
        .unwrap();
    eventually(Duration::from_secs(10), "two followers", || async {
        (stack
            .metric(stack.consumer_url(), "consumer_feed_followers")
            .await
            == 2.0)
            .then_some(())
    })
    .await;
    let third = stack
        .http
        .get(format!("{}/message/feed?wait=5", stack.consumer_url()))
        .send()
        .await
        .unwrap();
    let third_status = third.status();
    let retry_after = third.headers().get("retry-after").cloned();
    let problem: Value = third.json().await.unwrap();
    eventually(
        Duration::from_secs(30),
        "the reader that takes nothing to be dropped",
        || async {
            let slow = stack
                .metric(stack.consumer_url(), "consumer_feed_slow_readers_total")
                .await;
            let open = stack
                .metric(stack.consumer_url(), "consumer_feed_followers")
                .await;
            (slow == 1.0 && open == 1.0).then_some(())
        },
    )
    .await;

    // Assert
    assert_eq!(read.len(), ids.len());
    assert_eq!(
        third_status, 200,
        "a JSON page with nothing to wait for needs no follower"
    );
    assert!(retry_after.is_none());
    assert!(problem.is_array());
    let refused = request_stream(&stack, "", None).await;
    // The slow reader's place is free again: one more stream fits, and the one after it does not.
    assert_eq!(refused.status(), 200);
    let over = request_stream(&stack, "", None).await;
    assert_eq!(over.status(), 503);
    assert!(over.headers().get("retry-after").is_some());
    let problem: Value = over.json().await.unwrap();
    assert_eq!(problem["type"], "urn:message-queue:problem:busy");
    assert_eq!(
        stack
            .metric(stack.consumer_url(), "consumer_feed_refused_total")
            .await,
        1.0
    );
}

/// A message republished with its first `received_at` (as after a broker fault) is served by the feed
/// when it is stored, whatever its time.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_stored_with_an_old_received_at_is_served_at_its_commit() {
    // Arrange
    let stack = TestStack::start().await;
    let (_, head) =
        follow_to_the_end(&stack, format!("{}/message/feed", stack.consumer_url()), 0).await;
    let old = QueuedMessage {
        id: Uuid::now_v7(),
        received_at: Utc::now() - chrono::Duration::days(3),
        message: serde_json::from_value::<Message>(json!({ "sender": "republished" })).unwrap(),
        fingerprint: None,
    };

    // Act
    stack.publish_raw(&old.to_payload()).await;
    stack.wait_stored(old.id).await;
    let (served, _) = follow_to_the_end(&stack, head, 1).await;

    // Assert
    assert_eq!(served, vec![old.id]);
}

/// `after=end` starts after every message stored at the time of the request, in one look: the
/// messages before it are never served, every one after it is, and a long poll from it answers with the
/// first message committed while it waits.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_end_skips_what_is_stored_and_serves_everything_after_it() {
    // Arrange
    let stack = TestStack::start().await;
    let before: Vec<Value> = (0..30).map(|_| message_from("before")).collect();
    let before = stack.publish_batch_ok(&before).await;
    stored(&stack, &before).await;
    // The rows are served once every older transaction on the server has ended.
    follow_to_the_end(
        &stack,
        format!("{}/message/feed", stack.consumer_url()),
        before.len(),
    )
    .await;
    let last = stack.publish_ok(&message_from("before")).await;
    stack.wait_stored(last).await;

    // Act
    let end = page(
        &stack,
        &format!("{}/message/feed?after=end", stack.consumer_url()),
    )
    .await;
    let of_sender = page(
        &stack,
        &format!(
            "{}/message/feed?after=end&sender=before",
            stack.consumer_url()
        ),
    )
    .await;
    let waiting = {
        let (http, url) = (stack.http.clone(), format!("{}&wait=20", end.next));
        tokio::spawn(async move {
            http.get(url)
                .send()
                .await
                .unwrap()
                .json::<Vec<Value>>()
                .await
        })
    };
    let awaited = stack.publish_ok(&message_from("after")).await;
    let first: Vec<Value> = waiting.await.unwrap().unwrap();
    let more: Vec<Value> = (0..10).map(|_| message_from("after")).collect();
    let more = stack.publish_batch_ok(&more).await;
    stored(&stack, &more).await;
    let (served, _) = follow_to_the_end(&stack, end.next.clone(), more.len() + 1).await;
    let (served_of_sender, _) = follow_to_the_end(&stack, of_sender.next.clone(), 0).await;

    // Assert
    assert!(end.ids.is_empty() && of_sender.ids.is_empty());
    assert_ne!(after(&end.next).as_deref(), Some("0"), "{}", end.next);
    assert_ne!(after(&end.next).as_deref(), Some("end"), "{}", end.next);
    // The end is the last stored row itself, whose commit is durable: not a transaction id that a
    // server restarted after a crash could hand out again.
    assert!(
        after(&end.next).is_some_and(|cursor| cursor.ends_with(&format!("-{}", last.simple()))),
        "{}",
        end.next
    );
    assert_eq!(first.len(), 1, "{first:?}");
    assert_eq!(first[0]["id"], awaited.to_string());
    let mut expected: HashSet<Uuid> = more.iter().copied().collect();
    expected.insert(awaited);
    assert_eq!(exactly_once(&served), expected);
    assert!(served_of_sender.is_empty(), "{served_of_sender:?}");
}

/// `after=end` skips every message stored before the request, even one the feed cannot serve yet
/// because an older transaction on the server is still open: once that transaction ends, following
/// from the end serves only what was stored after the request.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_end_skips_a_stored_message_held_back_by_an_older_open_transaction() {
    // Arrange: a transaction with an id, open while messages are stored after it.
    let stack = TestStack::start().await;
    let mut older = stack.db.begin().await.unwrap();
    sqlx::query("SELECT pg_current_xact_id()")
        .execute(&mut *older)
        .await
        .unwrap();
    let before: Vec<Value> = (0..5).map(|_| message_from("before")).collect();
    let before = stack.publish_batch_ok(&before).await;
    stored(&stack, &before).await;
    let held_back = page(&stack, &format!("{}/message/feed", stack.consumer_url())).await;

    // Act
    let end = page(
        &stack,
        &format!("{}/message/feed?after=end", stack.consumer_url()),
    )
    .await;
    older.commit().await.unwrap();
    let later = stack.publish_ok(&message_from("after")).await;
    stack.wait_stored(later).await;
    let (served, _) = follow_to_the_end(&stack, end.next.clone(), 1).await;

    // Assert
    assert!(held_back.ids.is_empty(), "served past an open transaction");
    assert!(end.ids.is_empty(), "{:?}", end.ids);
    assert_eq!(served, vec![later], "served from the end");
}

/// `after=end` compares transaction ids as numbers: a row of transaction 10 comes after one of 9, as
/// the feed serves them, though the text `9` sorts after `10`. (Rows written with their ids given, as a
/// counter that grows by a digit would write them.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_end_is_the_row_of_the_largest_transaction_id_by_number() {
    // Arrange
    let stack = TestStack::start().await;
    let (nine, ten) = (Uuid::now_v7(), Uuid::now_v7());
    for (id, xid) in [(ten, "10"), (nine, "9")] {
        sqlx::query(
            "INSERT INTO messages (id, sender, received_at, xid) VALUES ($1, 'digits', now(), $2::text::xid8)",
        )
        .bind(id)
        .bind(xid)
        .execute(&stack.db)
        .await
        .unwrap();
    }

    // Act
    let from_start =
        follow_to_the_end(&stack, format!("{}/message/feed", stack.consumer_url()), 2).await;
    let end = page(
        &stack,
        &format!("{}/message/feed?after=end", stack.consumer_url()),
    )
    .await;
    let of_sender = page(
        &stack,
        &format!(
            "{}/message/feed?after=end&sender=digits",
            stack.consumer_url()
        ),
    )
    .await;

    // Assert
    assert_eq!(from_start.0, vec![nine, ten], "the feed's own order");
    assert!(end.ids.is_empty(), "served from the end: {:?}", end.ids);
    assert!(
        of_sender.ids.is_empty(),
        "served from the end: {:?}",
        of_sender.ids
    );
    let expected = format!("10-{}", ten.simple());
    assert_eq!(after(&end.next), Some(expected.clone()), "{}", end.next);
    assert_eq!(after(&of_sender.next), Some(expected), "{}", of_sender.next);
}

/// An event stream opened `after=end` says where it began before any event, so that a client whose
/// stream ends before the first one resumes from that end (with `Last-Event-ID`, as a browser's
/// `EventSource` does) and misses nothing stored in between.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_event_stream_from_the_end_resumes_from_where_it_began() {
    // Arrange
    let stack = TestStack::start().await;
    let before = stack.publish_ok(&message_from("before")).await;
    stack.wait_stored(before).await;
    let mut stream = request_stream(&stack, "after=end", None).await;
    assert_eq!(stream.status(), 200);

    // Act: the stream ends before any message; one is stored; the client resumes.
    let mut opening = String::new();
    while !opening.contains("\n\n") {
        let chunk = tokio::time::timeout(Duration::from_secs(10), stream.chunk())
            .await
            .expect("the stream's first chunk within 10 s")
            .unwrap()
            .expect("a first chunk");
        opening.push_str(std::str::from_utf8(&chunk).unwrap());
    }
    drop(stream);
    let began_at = opening
        .lines()
        .find_map(|line| line.strip_prefix("id: "))
        .unwrap_or_else(|| panic!("no id before the first event: {opening:?}"))
        .to_owned();
    let missed = stack.publish_ok(&message_from("in between")).await;
    stack.wait_stored(missed).await;
    let mut resumed = open_stream(&stack, Some(&began_at)).await;
    let (seen, _) = events(&mut resumed, 2, Duration::from_secs(5)).await;

    // Assert
    let seen: Vec<Uuid> = seen.into_iter().map(|(_, id)| id).collect();
    assert_eq!(seen, vec![missed], "resumed from {began_at}");
}
