//! Followers of `GET /message/feed` as server-sent event streams, for what the feed costs ingestion and
//! how late it delivers: each records, for every message it receives, the time from `stored_at` (the
//! start of the transaction that stored it, so the figure includes the insert itself) to its arrival.

use std::{
    sync::{
        atomic::{AtomicBool, AtomicUsize, Ordering},
        Arc,
    },
    time::Duration,
};

use chrono::{DateTime, Utc};
use serde_json::Value;
use tokio::task::JoinHandle;

/// Streams following the feed of one consumer until stopped.
pub struct Followers {
    stop: Arc<AtomicBool>,
    /// Messages received, over every stream.
    received: Arc<AtomicUsize>,
    tasks: Vec<JoinHandle<anyhow::Result<Vec<f64>>>>,
}

/// The cursor after the newest row of the feed of the consumer at `address` (`127.0.0.1:port`).
pub async fn head(address: &str) -> anyhow::Result<String> {
    let http = reqwest::Client::new();
    let mut next = "/message/feed?limit=1000".to_owned();
    loop {
        let response = http.get(format!("http://{address}{next}")).send().await?;
        let link = response
            .headers()
            .get("link")
            .and_then(|l| l.to_str().ok())
            .ok_or_else(|| anyhow::anyhow!("a feed page without a Link"))?;
        let target = link[link.find('<').unwrap_or(0) + 1..link.find('>').unwrap_or(0)].to_owned();
        let page: Vec<Value> = response.json().await?;
        if page.is_empty() {
            let after = target
                .split('&')
                .find_map(|p| p.split('?').next_back()?.strip_prefix("after="))
                .ok_or_else(|| anyhow::anyhow!("a Link without after="))?;
            return Ok(after.to_owned());
        }
        next = target;
    }
}

impl Followers {
    /// `streams` event streams from `after` on the consumer at `address`.
    pub fn start(address: &str, streams: usize, after: Option<String>) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let received = Arc::new(AtomicUsize::new(0));
        let tasks = (0..streams)
            .map(|_| {
                tokio::spawn(follow(
                    format!("http://{address}/message/feed?limit=1000"),
                    after.clone(),
                    stop.clone(),
                    received.clone(),
                ))
            })
            .collect();
        Self {
            stop,
            received,
            tasks,
        }
    }

    /// Waits until the streams together have received `count` messages (60 s at most).
    pub async fn wait_for(&self, count: usize) -> anyhow::Result<()> {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
        while self.received.load(Ordering::Relaxed) < count {
            anyhow::ensure!(
                tokio::time::Instant::now() < deadline,
                "the feed's followers received {} of {count} messages in 60 s",
                self.received.load(Ordering::Relaxed)
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        Ok(())
    }

    /// Stops every stream; returns each message's delay from `stored_at` to arrival, in milliseconds.
    pub async fn stop(self) -> anyhow::Result<Vec<f64>> {
        self.stop.store(true, Ordering::Relaxed);
        let mut delays = Vec::new();
        for task in self.tasks {
            delays.extend(task.await??);
        }
        Ok(delays)
    }
}

async fn follow(
    url: String,
    after: Option<String>,
    stop: Arc<AtomicBool>,
    received: Arc<AtomicUsize>,
) -> anyhow::Result<Vec<f64>> {
    let mut request = reqwest::Client::new()
        .get(&url)
        .header("accept", "text/event-stream");
    if let Some(after) = after {
        request = request.header("last-event-id", after);
    }
    let mut response = request.send().await?;
    anyhow::ensure!(response.status() == 200, "{url}: {}", response.status());
    let (mut buffer, mut delays) = (String::new(), Vec::new());
    while !stop.load(Ordering::Relaxed) {
        let Ok(chunk) = tokio::time::timeout(Duration::from_millis(200), response.chunk()).await
        else {
            continue;
        };
        let Some(chunk) = chunk? else { break };
        let now = Utc::now();
        buffer.push_str(std::str::from_utf8(&chunk)?);
        while let Some(end) = buffer.find("\n\n") {
            let event: String = buffer.drain(..end + 2).collect();
            for line in event.lines() {
                if let Some(data) = line.strip_prefix("data: ") {
                    let message: Value = serde_json::from_str(data)?;
                    let stored: DateTime<Utc> = message["stored_at"]
                        .as_str()
                        .ok_or_else(|| anyhow::anyhow!("an event without stored_at"))?
                        .parse()?;
                    delays.push((now - stored).num_microseconds().unwrap_or(i64::MAX) as f64 / 1e3);
                    received.fetch_add(1, Ordering::Relaxed);
                }
            }
        }
    }
    Ok(delays)
}

/// The `q` quantile of `values` (0 when empty).
pub fn quantile(values: &mut [f64], q: f64) -> f64 {
    if values.is_empty() {
        return 0.0;
    }
    values.sort_by(f64::total_cmp);
    values[((values.len() - 1) as f64 * q).round() as usize]
}
