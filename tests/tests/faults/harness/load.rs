//! Concurrent clients publishing one message a request until stopped, and what they saw.

use std::{
    collections::BTreeMap,
    sync::atomic::{AtomicBool, AtomicUsize, Ordering},
    sync::Arc,
    time::{Duration, Instant},
};

use common::Message;
use end_to_end::eventually;
use publisher::IdempotencyKey;
use tokio::task::JoinHandle;
use uuid::Uuid;

/// What the clients of a [`Load`] saw.
#[derive(Debug, Default)]
pub struct LoadReport {
    /// Ids answered 202.
    pub accepted: Vec<Uuid>,
    /// The id of every attempt, answered or not (derived from its Idempotency-Key).
    pub attempted: Vec<Uuid>,
    /// Answers by status.
    pub statuses: BTreeMap<u16, usize>,
    /// Requests that got no answer (connection refused or reset, timeout).
    pub unanswered: usize,
    /// Their Idempotency-Key, body and id, for a client to retry.
    pub unanswered_attempts: Vec<(String, serde_json::Value, Uuid)>,
    /// Refusals (503) that came without a Retry-After header.
    pub refusals_without_retry_after: usize,
    /// When each 5xx answer arrived.
    pub refusals_at: Vec<Instant>,
    /// Each 503: when its request was sent, and how long the answer took.
    pub refusals: Vec<(Instant, Duration)>,
}

impl LoadReport {
    /// The slowest 503 among requests sent at or after `sent_after` (`None` for all of them).
    pub fn slowest_refusal(&self, sent_after: Option<Instant>) -> Duration {
        self.refusals
            .iter()
            .filter(|(sent, _)| sent_after.is_none_or(|after| *sent >= after))
            .map(|(_, took)| *took)
            .max()
            .unwrap_or_default()
    }
}

/// Concurrent clients publishing one message a request, each with its own Idempotency-Key, until stopped.
pub struct Load {
    stop: Arc<AtomicBool>,
    accepted: Arc<AtomicUsize>,
    clients: Vec<JoinHandle<LoadReport>>,
}

impl Load {
    pub fn start(http: &reqwest::Client, publisher_url: &str, clients: usize) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let accepted = Arc::new(AtomicUsize::new(0));
        let url = Arc::new(format!("{publisher_url}/message/publish"));
        let clients = (0..clients)
            .map(|client| {
                let (http, url, stop, accepted) =
                    (http.clone(), url.clone(), stop.clone(), accepted.clone());
                tokio::spawn(async move {
                    let mut report = LoadReport::default();
                    let mut n = 0u64;
                    while !stop.load(Ordering::Relaxed) {
                        n += 1;
                        let key = format!("load-{client}-{n}-{}", Uuid::new_v4().simple());
                        let body = serde_json::json!({ "sender": format!("client-{client}") });
                        let message: Message = serde_json::from_value(body.clone()).unwrap();
                        let id = IdempotencyKey::parse(key.as_bytes())
                            .unwrap()
                            .message_id(&message, None, None);
                        report.attempted.push(id);
                        let started = Instant::now();
                        let response = http
                            .post(url.as_str())
                            .header("Idempotency-Key", &key)
                            .json(&body)
                            .send()
                            .await;
                        match response {
                            Ok(response) => {
                                let status = response.status().as_u16();
                                *report.statuses.entry(status).or_default() += 1;
                                if status == 202 {
                                    report.accepted.push(id);
                                    accepted.fetch_add(1, Ordering::Relaxed);
                                } else if status >= 500 {
                                    report.refusals_at.push(Instant::now());
                                }
                                if status == 503 {
                                    report.refusals.push((started, started.elapsed()));
                                    if !response.headers().contains_key("retry-after") {
                                        report.refusals_without_retry_after += 1;
                                    }
                                    tokio::time::sleep(Duration::from_millis(50)).await;
                                }
                            }
                            Err(_) => {
                                report.unanswered += 1;
                                report.unanswered_attempts.push((key, body, id));
                                tokio::time::sleep(Duration::from_millis(50)).await;
                            }
                        }
                    }
                    report
                })
            })
            .collect();
        Self {
            stop,
            accepted,
            clients,
        }
    }

    /// Messages accepted so far.
    pub fn accepted(&self) -> usize {
        self.accepted.load(Ordering::Relaxed)
    }

    /// Waits until `more` further messages have been accepted.
    pub async fn wait_accepted(&self, more: usize, within: Duration) {
        let target = self.accepted() + more;
        eventually(
            within,
            &format!("{more} more messages to be accepted"),
            || async { (self.accepted() >= target).then_some(()) },
        )
        .await;
    }

    pub async fn stop(self) -> LoadReport {
        self.stop.store(true, Ordering::Relaxed);
        let mut total = LoadReport::default();
        for client in self.clients {
            let report = client.await.expect("client task");
            total.accepted.extend(report.accepted);
            total.attempted.extend(report.attempted);
            for (status, count) in report.statuses {
                *total.statuses.entry(status).or_default() += count;
            }
            total.unanswered += report.unanswered;
            total.unanswered_attempts.extend(report.unanswered_attempts);
            total.refusals_without_retry_after += report.refusals_without_retry_after;
            total.refusals_at.extend(report.refusals_at);
            total.refusals.extend(report.refusals);
        }
        total
    }
}
