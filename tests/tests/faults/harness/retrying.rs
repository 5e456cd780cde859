//! Concurrent clients that retry each key until it is accepted, as a careful client of the contract does,
//! and the accounting of their keys.

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

use super::load::LoadReport;
use super::pipeline::Pipeline;

/// What the clients of a [`RetryingLoad`] saw.
#[derive(Debug, Default)]
pub struct RetryingReport {
    /// Ids answered 202, one per key.
    pub accepted: Vec<Uuid>,
    /// Keys that were never answered 202 before the clients gave up.
    pub abandoned: Vec<Uuid>,
    /// Answers by status (0: no answer).
    pub statuses: BTreeMap<u16, usize>,
    /// When each 202 arrived.
    pub accepted_at: Vec<Instant>,
}

impl RetryingReport {
    /// The longest time between two consecutive 202s, across all clients.
    pub fn longest_pause(&self) -> Duration {
        let mut times = self.accepted_at.clone();
        times.sort();
        times
            .windows(2)
            .map(|pair| pair[1] - pair[0])
            .max()
            .unwrap_or_default()
    }
}

/// Concurrent clients that publish one message a request, each with its own `Idempotency-Key`, and that
/// retry a request answered anything but 202 (or not at all) with the same key and body, on the next
/// publisher in turn, until it is accepted: what a careful client of the contract does.
pub struct RetryingLoad {
    stop: Arc<AtomicBool>,
    accepted: Arc<AtomicUsize>,
    clients: Vec<JoinHandle<RetryingReport>>,
}

/// How long a client keeps retrying one key after the load is told to stop.
const RETRY_AFTER_STOP: Duration = Duration::from_secs(60);

impl RetryingLoad {
    pub fn start(http: &reqwest::Client, publisher_urls: &[String], clients: usize) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let accepted = Arc::new(AtomicUsize::new(0));
        let urls: Arc<Vec<String>> = Arc::new(
            publisher_urls
                .iter()
                .map(|url| format!("{url}/message/publish"))
                .collect(),
        );
        let clients = (0..clients)
            .map(|client| {
                let (http, urls, stop, accepted) =
                    (http.clone(), urls.clone(), stop.clone(), accepted.clone());
                tokio::spawn(async move {
                    let mut report = RetryingReport::default();
                    let mut n = 0u64;
                    let mut target = client;
                    while !stop.load(Ordering::Relaxed) {
                        n += 1;
                        let key = format!("retrying-{client}-{n}-{}", Uuid::new_v4().simple());
                        let body = serde_json::json!({ "sender": format!("client-{client}") });
                        let message: Message = serde_json::from_value(body.clone()).unwrap();
                        let id = IdempotencyKey::parse(key.as_bytes())
                            .unwrap()
                            .message_id(&message, None, None);
                        let mut give_up_at = None;
                        loop {
                            let status = match http
                                .post(urls[target % urls.len()].as_str())
                                .header("Idempotency-Key", &key)
                                .json(&body)
                                .send()
                                .await
                            {
                                Ok(response) => response.status().as_u16(),
                                Err(_) => 0,
                            };
                            *report.statuses.entry(status).or_default() += 1;
                            if status == 202 {
                                report.accepted.push(id);
                                report.accepted_at.push(Instant::now());
                                accepted.fetch_add(1, Ordering::Relaxed);
                                break;
                            }
                            if stop.load(Ordering::Relaxed) {
                                let at =
                                    *give_up_at.get_or_insert(Instant::now() + RETRY_AFTER_STOP);
                                if Instant::now() >= at {
                                    report.abandoned.push(id);
                                    break;
                                }
                            }
                            // Another publisher, after a pause, as Retry-After asks.
                            target += 1;
                            tokio::time::sleep(Duration::from_millis(100)).await;
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

    /// Stops the clients; each finishes retrying the key in hand first.
    pub async fn stop(self) -> RetryingReport {
        self.stop.store(true, Ordering::Relaxed);
        let mut total = RetryingReport::default();
        for client in self.clients {
            let report = client.await.expect("client task");
            total.accepted.extend(report.accepted);
            total.abandoned.extend(report.abandoned);
            total.accepted_at.extend(report.accepted_at);
            for (status, count) in report.statuses {
                *total.statuses.entry(status).or_default() += count;
            }
        }
        total
    }
}

impl Pipeline {
    /// Every id accepted by a [`RetryingLoad`] is stored, each exactly once, and nothing else is.
    /// Waits for the consumers to catch up; returns how long that took.
    pub async fn assert_each_key_stored_once(&self, report: &RetryingReport) -> Duration {
        assert!(
            report.abandoned.is_empty(),
            "{} keys were never accepted, even retried for {RETRY_AFTER_STOP:?}",
            report.abandoned.len()
        );
        let load = LoadReport {
            accepted: report.accepted.clone(),
            attempted: report.accepted.clone(),
            ..LoadReport::default()
        };
        self.assert_accepted_stored_once(&load).await
    }
}
