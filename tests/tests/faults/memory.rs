//! The largest legal input, sent every way the API allows, against the manifests' memory limits.

use std::time::{Duration, Instant};

use crate::harness::{wait_ready, Pipeline};

/// The memory limits the manifests ship, in KiB (`kube/base/message-*-deployment.yaml`).
pub const PUBLISHER_LIMIT_KIB: u64 = 192 * 1024;
const CONSUMER_LIMIT_KIB: u64 = 256 * 1024;

/// How a raw request announces its body.
#[derive(Clone, Copy)]
enum Framing {
    /// `Content-Length` with the given length.
    Declared(usize),
    /// `Transfer-Encoding: chunked`: no length to refuse it by.
    Chunked,
}

/// Sends up to `body_bytes` of a batch of tiny elements (`{"sender":"a"},` repeated) and returns the
/// status line of the answer. The answer is read while the body is still being sent, since the publisher
/// may answer and close before taking it all.
async fn post_tiny_elements(url: &str, framing: Framing, body_bytes: usize) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let address = url.trim_start_matches("http://");
    let stream = tokio::net::TcpStream::connect(address).await.unwrap();
    let (mut reader, mut writer) = stream.into_split();
    let answer = tokio::spawn(async move {
        let mut answer = Vec::new();
        let mut buffer = [0; 512];
        while !answer.contains(&b'\n') {
            match reader.read(&mut buffer).await {
                Ok(0) | Err(_) => break,
                Ok(read) => answer.extend_from_slice(&buffer[..read]),
            }
        }
        String::from_utf8_lossy(&answer)
            .lines()
            .next()
            .unwrap_or_default()
            .to_owned()
    });
    let length_header = match framing {
        Framing::Declared(length) => format!("Content-Length: {length}"),
        Framing::Chunked => "Transfer-Encoding: chunked".to_owned(),
    };
    let head = format!(
        "POST /message/publish/batch HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n{length_header}\r\n\r\n"
    );
    let element = br#"{"sender":"a"},"#;
    let piece: Vec<u8> = element
        .iter()
        .copied()
        .cycle()
        .take(element.len() * 4096)
        .collect();
    let mut sent = 0;
    let mut written = writer.write_all(head.as_bytes()).await;
    let mut first = true;
    while written.is_ok() && sent < body_bytes && !answer.is_finished() {
        let mut data = if first { b"[".to_vec() } else { Vec::new() };
        first = false;
        data.extend_from_slice(&piece);
        data.truncate(body_bytes - sent);
        sent += data.len();
        written = match framing {
            Framing::Declared(_) => writer.write_all(&data).await,
            Framing::Chunked => {
                let framed = [
                    format!("{:x}\r\n", data.len()).into_bytes(),
                    data,
                    b"\r\n".to_vec(),
                ]
                .concat();
                writer.write_all(&framed).await
            }
        };
    }
    tokio::time::timeout(Duration::from_secs(30), answer)
        .await
        .expect("an answer in time")
        .unwrap()
}

/// Clients that each send `rounds` copies of `body` to the batch endpoint, retrying a `503` (which must
/// carry `Retry-After`) until it is accepted. Returns the accepted ids and how many 503s they met.
async fn send_batches(
    pipeline: &Pipeline,
    clients: usize,
    rounds: usize,
    body: &[u8],
) -> (Vec<uuid::Uuid>, usize) {
    let tasks = (0..clients).map(|_| {
        let (http, url, body) = (
            pipeline.http.clone(),
            pipeline.publisher.url.clone(),
            body.to_vec(),
        );
        tokio::spawn(async move {
            let (mut busy, mut ids) = (0, Vec::new());
            let give_up = Instant::now() + Duration::from_secs(180);
            while ids.len() < rounds * 64 {
                assert!(
                    Instant::now() < give_up,
                    "batches still refused after 180 s"
                );
                let response = http
                    .post(format!("{url}/message/publish/batch"))
                    .header("Content-Type", "application/json")
                    .body(body.clone())
                    .send()
                    .await
                    .unwrap();
                match response.status().as_u16() {
                    202 => {
                        let answer: serde_json::Value = response.json().await.unwrap();
                        ids.extend(
                            answer["ids"]
                                .as_array()
                                .unwrap()
                                .iter()
                                .map(|id| id.as_str().unwrap().parse::<uuid::Uuid>().unwrap()),
                        );
                    }
                    503 => {
                        assert!(
                            response.headers().contains_key("retry-after"),
                            "a 503 without Retry-After"
                        );
                        busy += 1;
                        // Shorter than Retry-After asks, to keep the publisher at its cap.
                        tokio::time::sleep(Duration::from_millis(50)).await;
                    }
                    other => panic!("unexpected {other}: {:?}", response.text().await),
                }
            }
            (ids, busy)
        })
    });
    let (mut ids, mut busy) = (Vec::new(), 0);
    for client in futures::future::join_all(tasks).await {
        let (accepted, refused) = client.unwrap();
        ids.extend(accepted);
        busy += refused;
    }
    (ids, busy)
}

pub async fn wait_stored(pipeline: &Pipeline, ids: &[uuid::Uuid]) {
    end_to_end::eventually(
        Duration::from_secs(300),
        "every accepted message to be stored",
        || async {
            let stored: i64 =
                sqlx::query_scalar("SELECT count(*) FROM messages WHERE id = ANY($1)")
                    .bind(ids)
                    .fetch_one(&pipeline.db)
                    .await
                    .ok()?;
            (stored == ids.len() as i64).then_some(())
        },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "stops the machine's RabbitMQ and PostgreSQL; run by scripts/fault-suite"]
async fn s10_the_largest_legal_input_keeps_both_services_under_their_manifest_memory_limits() {
    let mut pipeline = Pipeline::start().await;
    let publisher_idle = pipeline.publisher.peak_rss_kib();

    // Bodies of tiny elements, each refused without being built: 62 MiB declared, 62 MiB chunked, and a
    // body inside the byte limit but with far more than 1,000 elements.
    let declared = post_tiny_elements(
        &pipeline.publisher.url,
        Framing::Declared(62 << 20),
        62 << 20,
    )
    .await;
    let chunked = post_tiny_elements(&pipeline.publisher.url, Framing::Chunked, 62 << 20).await;
    let over_long =
        post_tiny_elements(&pipeline.publisher.url, Framing::Declared(4 << 20), 4 << 20).await;
    let publisher_after_huge = pipeline.publisher.peak_rss_kib();
    assert!(declared.contains(" 413 "), "{declared}");
    assert!(chunked.contains(" 413 "), "{chunked}");
    assert!(over_long.contains(" 400 "), "{over_long}");
    assert!(
        publisher_after_huge < PUBLISHER_LIMIT_KIB / 4,
        "refusing huge bodies took the publisher to {publisher_after_huge} KiB"
    );

    // 16 clients at once, each sending batches of 64 of the largest messages (4 MiB), twice while the
    // consumer stores them, then twice more with the consumer stopped so that a backlog builds up.
    let blob = "x".repeat(64 * 1024 - 64);
    let batch: Vec<serde_json::Value> = (0..64)
        .map(|i| serde_json::json!({ "sender": format!("big-{i}"), "messageAttributes": { "b": blob } }))
        .collect();
    let body = serde_json::to_vec(&batch).unwrap();
    assert!(body.len() <= 4 << 20, "a batch of {} bytes", body.len());
    let live = Instant::now();
    let (mut accepted, busy_live) = send_batches(&pipeline, 16, 2, &body).await;
    wait_stored(&pipeline, &accepted).await;
    let live_time = live.elapsed();
    let consumer_live_peak = pipeline.consumer.peak_rss_kib();

    pipeline.consumer.kill();
    let (backlog, busy_backlog) = send_batches(&pipeline, 16, 2, &body).await;
    let publisher_peak = pipeline.publisher.peak_rss_kib();

    // A fresh consumer drains the backlog of the largest messages.
    pipeline.consumer.restart();
    wait_ready(
        &pipeline.http,
        &pipeline.consumer.url,
        Duration::from_secs(30),
    )
    .await;
    let drained = Instant::now();
    wait_stored(&pipeline, &backlog).await;
    let drain_time = drained.elapsed();
    let consumer_drain_peak = pipeline.consumer.peak_rss_kib();
    accepted.extend(backlog);
    let rows: i64 = sqlx::query_scalar("SELECT count(*) FROM messages")
        .fetch_one(&pipeline.db)
        .await
        .unwrap();

    assert_eq!(
        accepted.len(),
        16 * 4 * 64,
        "every batch accepted in the end"
    );
    assert_eq!(rows, accepted.len() as i64, "each stored once");
    assert!(
        busy_live + busy_backlog > 0,
        "16 batches of 4 MiB at once never met the in-flight cap"
    );
    for (service, peak, limit) in [
        ("publisher", publisher_peak, PUBLISHER_LIMIT_KIB),
        (
            "consumer storing live",
            consumer_live_peak,
            CONSUMER_LIMIT_KIB,
        ),
        (
            "consumer draining the backlog",
            consumer_drain_peak,
            CONSUMER_LIMIT_KIB,
        ),
    ] {
        assert!(
            peak < limit,
            "{service} peaked at {peak} KiB, over its {limit} KiB limit"
        );
    }
    println!(
        "largest legal input: publisher peak RSS {:.1} MiB idle, {:.1} MiB after refusing 62 MiB bodies (declared 413, \
         chunked 413) and 4 MiB of tiny elements (400), {:.1} MiB under 16 clients sending 4,096 messages of \
         64 KiB in batches of 64 ({} × 503 at the in-flight cap; limit {} MiB); consumer peak RSS {:.1} MiB \
         storing 2,048 of them live in {live_time:.1?}, {:.1} MiB draining a backlog of 2,048 in \
         {drain_time:.1?} (limit {} MiB)",
        publisher_idle as f64 / 1024.0,
        publisher_after_huge as f64 / 1024.0,
        publisher_peak as f64 / 1024.0,
        busy_live + busy_backlog,
        PUBLISHER_LIMIT_KIB / 1024,
        consumer_live_peak as f64 / 1024.0,
        consumer_drain_peak as f64 / 1024.0,
        CONSUMER_LIMIT_KIB / 1024
    );
}
