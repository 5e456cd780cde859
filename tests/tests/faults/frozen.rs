//! A broker frozen with SIGSTOP (silence, not errors) under the largest batches.

use std::time::{Duration, Instant};

use crate::{
    harness::{Machine, Pipeline},
    CONFIRM_DEADLINE,
};

use crate::memory::{wait_stored, PUBLISHER_LIMIT_KIB};

/// The machine's broker frozen with SIGSTOP (as a hung node or a partition that sends no reset looks),
/// and thawed with SIGCONT when dropped, even when the scenario fails.
struct FrozenBroker(i32);

impl FrozenBroker {
    fn freeze() -> Self {
        let output = std::process::Command::new("rabbitmqctl")
            .args(["eval", "list_to_integer(os:getpid())."])
            .output()
            .expect("rabbitmqctl");
        let pid: i32 = String::from_utf8_lossy(&output.stdout)
            .trim()
            .parse()
            .expect("the broker's pid");
        // SAFETY: signalling the broker's own process, whose pid the broker just gave.
        assert_eq!(unsafe { libc::kill(pid, libc::SIGSTOP) }, 0, "SIGSTOP sent");
        Self(pid)
    }
}

impl Drop for FrozenBroker {
    fn drop(&mut self) {
        // SAFETY: as above; continuing a stopped process.
        unsafe { libc::kill(self.0, libc::SIGCONT) };
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "freezes the machine's RabbitMQ; run by scripts/fault-suite"]
async fn s14_a_frozen_broker_under_the_largest_batches_keeps_the_publisher_in_its_limit_and_answering(
) {
    let _machine = Machine;
    let pipeline = Pipeline::start().await;
    let blob = "x".repeat(64 * 1024 - 64);
    let batch: Vec<serde_json::Value> = (0..64)
        .map(|i| serde_json::json!({ "sender": format!("frozen-{i}"), "messageAttributes": { "b": blob } }))
        .collect();
    let body = serde_json::to_vec(&batch).unwrap();
    // What a request may take: its confirm timeout, reading a 4 MiB body, and the answer's way back.
    let deadline = CONFIRM_DEADLINE + Duration::from_secs(5);

    // 16 clients of 4 MiB batches, for 5 s before the freeze, 60 s frozen and 10 s after.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let clients: Vec<_> = (0..16)
        .map(|_| {
            let (http, url, body, stop) = (
                pipeline.http.clone(),
                pipeline.publisher.url.clone(),
                body.clone(),
                stop.clone(),
            );
            tokio::spawn(async move {
                let (mut ids, mut statuses, mut slowest) = (
                    Vec::new(),
                    std::collections::BTreeMap::new(),
                    Duration::ZERO,
                );
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    let sent = Instant::now();
                    let response = http
                        .post(format!("{url}/message/publish/batch"))
                        .header("Content-Type", "application/json")
                        .body(body.clone())
                        .timeout(Duration::from_secs(60))
                        .send()
                        .await;
                    slowest = slowest.max(sent.elapsed());
                    let Ok(response) = response else {
                        *statuses.entry(0).or_insert(0) += 1;
                        continue;
                    };
                    let status = response.status().as_u16();
                    *statuses.entry(status).or_insert(0) += 1;
                    if status == 202 {
                        let answer: serde_json::Value = response.json().await.unwrap();
                        ids.extend(
                            answer["ids"]
                                .as_array()
                                .unwrap()
                                .iter()
                                .map(|id| id.as_str().unwrap().parse::<uuid::Uuid>().unwrap()),
                        );
                    } else {
                        tokio::time::sleep(Duration::from_millis(100)).await;
                    }
                }
                (ids, statuses, slowest)
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_secs(5)).await;
    let frozen = FrozenBroker::freeze();
    let frozen_at = Instant::now();
    let mut peak_frozen = 0;
    while frozen_at.elapsed() < Duration::from_secs(60) {
        peak_frozen = peak_frozen.max(pipeline.publisher.rss_kib());
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    drop(frozen);
    tokio::time::sleep(Duration::from_secs(10)).await;
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let (mut accepted, mut statuses, mut slowest) = (
        Vec::new(),
        std::collections::BTreeMap::new(),
        Duration::ZERO,
    );
    for client in futures::future::join_all(clients).await {
        let (ids, seen, slow) = client.unwrap();
        accepted.extend(ids);
        for (status, count) in seen {
            *statuses.entry(status).or_insert(0) += count;
        }
        slowest = slowest.max(slow);
    }
    let peak = pipeline.publisher.peak_rss_kib();
    println!(
        "frozen broker for 60 s under 16 clients of 4 MiB batches: publisher peak RSS {:.1} MiB \
         (limit {} MiB; {:.1} MiB while frozen), statuses {statuses:?}, slowest answer {slowest:.1?}, \
         {} messages accepted",
        peak as f64 / 1024.0,
        PUBLISHER_LIMIT_KIB / 1024,
        peak_frozen as f64 / 1024.0,
        accepted.len()
    );
    assert!(
        peak < PUBLISHER_LIMIT_KIB,
        "the publisher peaked at {peak} KiB, over its {PUBLISHER_LIMIT_KIB} KiB limit"
    );
    assert!(
        slowest < deadline,
        "an answer took {slowest:?}, past {deadline:?}"
    );
    assert!(
        !statuses.contains_key(&0),
        "a request went unanswered: {statuses:?}"
    );
    wait_stored(&pipeline, &accepted).await;
    // Requests answered 503 in doubt may be stored too; nothing is stored twice.
    let (rows, ids): (i64, i64) =
        sqlx::query_as("SELECT count(*), count(DISTINCT id) FROM messages")
            .fetch_one(&pipeline.db)
            .await
            .unwrap();
    assert_eq!(rows, ids, "a message stored twice");
}
