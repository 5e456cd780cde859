//! `mq tail` starts at the end of the feed and prints what is stored after it started, once each.

use std::{
    io::{BufRead, BufReader},
    process::Stdio,
    sync::mpsc,
    time::Duration,
};

use end_to_end::{eventually, TestStack};
use serde_json::{json, Value};

use crate::helpers::mq;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tail_prints_the_messages_published_after_it_started_and_none_before() {
    // Arrange: messages stored before tail starts, which it must skip.
    let stack = TestStack::start().await;
    for n in 0..3 {
        let id = stack
            .publish_ok(&json!({ "sender": format!("before-{n}") }))
            .await;
        stack.wait_stored(id).await;
    }
    let mut tail = mq(&stack)
        .args(["tail", "--wait", "5"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("mq tail starts");
    let (lines, printed) = mpsc::channel::<String>();
    let stdout = tail.stdout.take().expect("piped stdout");
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if lines.send(line).is_err() {
                break;
            }
        }
    });
    // Tail has skipped to the end once its long poll waits on the feed.
    eventually(
        Duration::from_secs(30),
        "tail waiting on the feed",
        || async {
            let followers = stack
                .metric(stack.consumer_url(), "consumer_feed_followers")
                .await;
            (followers >= 1.0).then_some(())
        },
    )
    .await;

    // Act
    let mut published = Vec::new();
    for n in 0..5 {
        let id = stack
            .publish_ok(&json!({ "sender": format!("after-{n}") }))
            .await;
        published.push(id.to_string());
    }

    // Assert
    let mut seen = Vec::new();
    while seen.len() < published.len() {
        let line = tokio::task::block_in_place(|| printed.recv_timeout(Duration::from_secs(30)))
            .unwrap_or_else(|_| panic!("tail printed only {seen:?}"));
        let message: Value = serde_json::from_str(&line).expect("a JSON line");
        let sender = message["sender"].as_str().expect("a sender").to_owned();
        assert!(
            sender.starts_with("after-"),
            "tail printed an older message: {line}"
        );
        seen.push(message["id"].as_str().expect("an id").to_owned());
    }
    let _ = tail.kill();
    let _ = tail.wait();
    let mut expected = published.clone();
    expected.sort();
    seen.sort();
    assert_eq!(seen, expected, "each new message printed once");
}
