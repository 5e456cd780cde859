//! Budgets under clients that lie, stall, flood and invent: whatever they send, nothing of it may become
//! state that outlives the request, and honest clients are served meanwhile.

use std::time::{Duration, Instant};

use end_to_end::raw_http::{address, exchange, request};
use serde_json::json;
use tokio::io::AsyncWriteExt;

use crate::{guarded_stack, resident_kib, PUBLISH, READ};

async fn publish_small(stack: &end_to_end::TestStack, n: usize) -> Vec<u16> {
    let mut statuses = Vec::new();
    for i in 0..n {
        let response = stack
            .http
            .post(format!("{}/message/publish", stack.publisher_url()))
            .bearer_auth(PUBLISH)
            .json(&json!({ "sender": format!("honest-{i}") }))
            .send()
            .await
            .unwrap();
        statuses.push(response.status().as_u16());
    }
    statuses
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn invented_methods_paths_and_headers_leave_metrics_and_memory_flat() {
    // Arrange
    let stack = guarded_stack(|_| {}).await;
    let targets = [
        address(stack.publisher_url()),
        address(stack.consumer_url()),
    ];
    // Warm both services up, so that what is measured afterwards is what the attack adds.
    for target in &targets {
        for i in 0..50 {
            exchange(target, &request("GET", &format!("/nowhere/{i}"), &[], "")).await;
        }
    }
    let mut metrics_before = Vec::new();
    for url in [stack.publisher_url(), stack.consumer_url()] {
        metrics_before.push(end_to_end::metrics_text(&stack.http, url).await.len());
    }
    let resident_before = resident_kib();

    // Act: 1,500 requests to each service, each with a method, a path and a header of its own.
    for target in &targets {
        futures::future::join_all((0..1500).collect::<Vec<_>>().chunks(100).map(|chunk| {
            let target = target.clone();
            let chunk = chunk.to_vec();
            async move {
                for i in chunk {
                    let method = format!("M{i:05}{}", "X".repeat(2000));
                    let path = format!("/{i}/{}", "p".repeat(500));
                    let header = format!("X-Invented-{i}: {}", "v".repeat(1000));
                    let answer = exchange(&target, &request(&method, &path, &[header], "")).await;
                    assert!(
                        matches!(answer.status, 0 | 400 | 404 | 405 | 414 | 431),
                        "{}",
                        answer.text
                    );
                }
            }
        }))
        .await;
    }

    // Assert
    let mut metrics_after = Vec::new();
    for url in [stack.publisher_url(), stack.consumer_url()] {
        metrics_after.push(end_to_end::metrics_text(&stack.http, url).await);
    }
    for (before, after) in metrics_before.iter().zip(&metrics_after) {
        assert!(
            after.len() < before + 4096,
            "/metrics grew from {before} to {} bytes",
            after.len()
        );
        assert!(
            !after.contains("M00001"),
            "an invented method became a label"
        );
        assert!(after.contains(r#"method="other""#), "{after}");
        assert!(after.contains(r#"route="unmatched""#), "{after}");
    }
    let grown = resident_kib().saturating_sub(resident_before);
    println!("3,000 invented requests: resident memory grew {grown} KiB");
    assert!(grown < 32 * 1024, "resident memory grew {grown} KiB");
    assert_eq!(publish_small(&stack, 5).await, [202; 5]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn clients_that_declare_much_and_send_nothing_hold_nothing() {
    // Arrange: the default budget of three of the largest batches.
    let stack = guarded_stack(|_| {}).await;
    let publisher = address(stack.publisher_url());
    let declared = 4 * 1024 * 1024;

    // Act: five clients declare the largest batch and send nothing, then 20 honest publishes.
    let mut idle = Vec::new();
    for _ in 0..5 {
        let mut stream = tokio::net::TcpStream::connect(&publisher).await.unwrap();
        stream
            .write_all(
                format!(
                    "POST /message/publish/batch HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {PUBLISH}\r\n\
                     Content-Type: application/json\r\nContent-Length: {declared}\r\n\r\n["
                )
                .as_bytes(),
            )
            .await
            .unwrap();
        idle.push(stream);
    }
    // Once the five are reading their bodies, each holds what it sent ("[", one byte), no more.
    let held = end_to_end::eventually(
        Duration::from_secs(10),
        "the idle requests to reach their bodies",
        || async {
            let held = stack
                .metric(stack.publisher_url(), "publisher_inflight_bytes")
                .await;
            (held >= 5.0).then_some(held)
        },
    )
    .await;
    let statuses = publish_small(&stack, 20).await;

    // Assert
    assert_eq!(
        held, 5.0,
        "bytes held by five clients that sent one byte each"
    );
    assert_eq!(statuses, [202; 20], "idle clients shut honest ones out");
    drop(idle);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn slow_headers_huge_headers_and_connection_floods_cost_honest_clients_nothing() {
    // Arrange
    let stack = guarded_stack(|_| {}).await;
    let consumer = address(stack.consumer_url());
    let publisher = address(stack.publisher_url());

    // Act 1: slowloris, a header line a second on 50 connections.
    let mut slow = Vec::new();
    for _ in 0..50 {
        let mut stream = tokio::net::TcpStream::connect(&publisher).await.unwrap();
        stream
            .write_all(b"POST /message/publish HTTP/1.1\r\nHost: x\r\n")
            .await
            .unwrap();
        slow.push(stream);
    }
    let started = Instant::now();
    let served_meanwhile = publish_small(&stack, 5).await;
    // Act 2: 500 connections opened and left idle.
    let mut idle = Vec::new();
    for _ in 0..500 {
        idle.push(tokio::net::TcpStream::connect(&consumer).await.unwrap());
    }
    let read_meanwhile = stack
        .http
        .get(format!("{}/message?limit=1", stack.consumer_url()))
        .bearer_auth(READ)
        .send()
        .await
        .unwrap()
        .status();
    // Act 3: a 1 MiB header, and 10,000 repeated headers.
    let huge = exchange(
        &publisher,
        &request(
            "POST",
            "/message/publish",
            &[format!("X-Huge: {}", "h".repeat(1 << 20))],
            "{}",
        ),
    )
    .await;
    let repeated = exchange(
        &consumer,
        &request(
            "GET",
            "/message",
            &(0..10_000)
                .map(|i| format!("Authorization: Bearer guess-{i:012}"))
                .collect::<Vec<_>>(),
            "",
        ),
    )
    .await;
    // Act 4: the slow clients are dropped by the header timeout.
    let mut dropped = 0;
    for mut stream in slow {
        let mut buffer = [0u8; 256];
        let read = tokio::time::timeout(
            Duration::from_secs(15),
            tokio::io::AsyncReadExt::read(&mut stream, &mut buffer),
        )
        .await;
        if matches!(read, Ok(Ok(_)) | Ok(Err(_))) {
            dropped += 1;
        }
    }

    // Assert
    assert_eq!(
        served_meanwhile, [202; 5],
        "slow clients shut honest ones out"
    );
    assert!(started.elapsed() < Duration::from_secs(5) || served_meanwhile == [202; 5]);
    assert_eq!(read_meanwhile, 200, "idle connections shut readers out");
    assert!(
        matches!(huge.status, 0 | 400 | 413 | 431),
        "a 1 MiB header: {}",
        &huge.text[..huge.text.len().min(200)]
    );
    assert!(
        matches!(repeated.status, 0 | 400 | 401 | 431),
        "10,000 guesses in one request: {}",
        &repeated.text[..repeated.text.len().min(200)]
    );
    assert_eq!(
        dropped, 50,
        "slow header senders are closed by the header timeout"
    );
    drop(idle);
    assert_eq!(publish_small(&stack, 3).await, [202; 3]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idempotency_keys_and_tokens_at_their_edges() {
    // Arrange
    let stack = guarded_stack(|_| {}).await;
    let publisher = address(stack.publisher_url());
    let body = json!({ "sender": "edges" }).to_string();
    let publish = |headers: Vec<String>| {
        let publisher = publisher.clone();
        let body = body.clone();
        async move {
            exchange(
                &publisher,
                &request("POST", "/message/publish", &headers, &body),
            )
            .await
            .status
        }
    };
    let bearer = format!("Authorization: Bearer {PUBLISH}");

    // Act and assert: keys of 1 and 200 visible characters pass; empty, 201, a space, a non-ASCII
    // byte, and a key given twice are refused naming the header.
    for (key, expected) in [
        ("k".to_owned(), 202),
        ("k".repeat(200), 202),
        (String::new(), 400),
        ("k".repeat(201), 400),
        ("a b".to_owned(), 400),
        ("caf\u{e9}".to_owned(), 400),
    ] {
        let status = publish(vec![bearer.clone(), format!("Idempotency-Key: {key}")]).await;
        assert_eq!(status, expected, "key {key:?}");
    }
    let twice = publish(vec![
        bearer.clone(),
        "Idempotency-Key: one".into(),
        "Idempotency-Key: two".into(),
    ])
    .await;
    assert_eq!(twice, 400, "a key given twice");
    // Tokens: the right one in any case of the scheme passes; a 64 KiB token, the token with a byte
    // more or less, another scope's, and two Authorization headers (one right) are refused.
    for (authorization, expected) in [
        (format!("bearer {PUBLISH}"), 202),
        (format!("BEARER   {PUBLISH}"), 202),
        (format!("Bearer {}", "t".repeat(64 * 1024)), 401),
        (format!("Bearer {PUBLISH}x"), 401),
        (format!("Bearer {}", &PUBLISH[..PUBLISH.len() - 1]), 401),
        (format!("Bearer {READ}"), 403),
        (format!("Basic {PUBLISH}"), 401),
        ("Bearer".to_owned(), 401),
    ] {
        let status = publish(vec![format!("Authorization: {authorization}")]).await;
        assert!(
            status == expected || (expected == 401 && matches!(status, 400 | 431)),
            "{} -> {status}",
            &authorization[..authorization.len().min(40)]
        );
    }
    let two_tokens = publish(vec![
        "Authorization: Bearer not-a-configured-token".into(),
        bearer.clone(),
    ])
    .await;
    assert_eq!(two_tokens, 401, "two Authorization headers");
    let two_tokens = publish(vec![bearer.clone(), bearer]).await;
    assert_eq!(two_tokens, 401, "the right token twice");
}
