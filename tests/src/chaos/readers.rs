//! The readers of the soak: clients that follow `GET /message/feed` through every fault (two over JSON
//! pages with `wait`, one over server-sent events that disconnects and resumes with `Last-Event-ID`), a
//! client that polls `GET /message` newest first for what is newer than the newest row it saw (what
//! users did before the feed, to show what that misses), and an operator who replays dead letters
//! meanwhile. Each reader goes to one consumer and moves to the other when it fails.
//!
//! At the end every feed reader must have seen every stored row exactly once, in the order of the
//! transactions that stored them.

use std::{
    collections::{HashMap, HashSet},
    sync::{
        atomic::{AtomicBool, AtomicUsize, Ordering},
        Arc,
    },
    time::Duration,
};

use chrono::{DateTime, Utc};
use serde_json::Value;
use tokio::time::Instant;
use uuid::Uuid;

/// What one reader saw.
#[derive(Debug, Default)]
pub struct Reading {
    pub name: String,
    /// Every message id served, in the order served.
    pub ids: Vec<Uuid>,
    /// Requests or streams that failed (a fault), each followed by a retry elsewhere.
    pub failures: u64,
    /// Streams ended on purpose and resumed with `Last-Event-ID`.
    pub resumes: u64,
}

pub struct Readers {
    /// Set once the soak knows how many rows there are: a reader that has seen that many stops.
    target: Arc<AtomicUsize>,
    stop: Arc<AtomicBool>,
    /// Cleared when the soak ends, so that no replay lands after the table is counted.
    replaying: Arc<AtomicBool>,
    tasks: Vec<tokio::task::JoinHandle<Reading>>,
    replayer: tokio::task::JoinHandle<(u64, u64)>,
}

/// A reader's shared view of the consumers and of when to stop.
#[derive(Clone)]
struct Context {
    http: reqwest::Client,
    consumers: Arc<Vec<String>>,
    target: Arc<AtomicUsize>,
    stop: Arc<AtomicBool>,
}

impl Context {
    fn done(&self, seen: usize) -> bool {
        let target = self.target.load(Ordering::Relaxed);
        self.stop.load(Ordering::Relaxed) || (target > 0 && seen >= target)
    }
}

impl Readers {
    pub fn start(consumers: Vec<String>) -> Self {
        let context = Context {
            http: reqwest::Client::builder()
                .pool_idle_timeout(Duration::from_secs(5))
                .build()
                .expect("an HTTP client"),
            consumers: Arc::new(consumers),
            target: Arc::new(AtomicUsize::new(0)),
            stop: Arc::new(AtomicBool::new(false)),
        };
        let tasks = vec![
            tokio::spawn(pages(context.clone(), "feed pages via consumer 1", 0)),
            tokio::spawn(pages(context.clone(), "feed pages via consumer 2", 1)),
            tokio::spawn(events(context.clone(), "feed events", 0)),
            tokio::spawn(newest_first(context.clone(), "GET /message polling", 1)),
        ];
        let replaying = Arc::new(AtomicBool::new(true));
        let replayer = tokio::spawn(replay(context.clone(), replaying.clone()));
        Self {
            target: context.target,
            stop: context.stop,
            replaying,
            tasks,
            replayer,
        }
    }

    /// Lets each reader go on until it has seen `rows` messages, `within` at most, and returns what
    /// each saw, and the replays made (requests answered, messages put back).
    pub async fn finish(self, rows: usize, within: Duration) -> (Vec<Reading>, (u64, u64)) {
        self.target.store(rows.max(1), Ordering::Relaxed);
        let stop = self.stop.clone();
        let deadline = tokio::spawn(async move {
            tokio::time::sleep(within).await;
            stop.store(true, Ordering::Relaxed);
        });
        let mut readings = Vec::new();
        for task in self.tasks {
            readings.push(task.await.expect("a reader task"));
        }
        self.stop.store(true, Ordering::Relaxed);
        deadline.abort();
        let replays = self.replayer.await.expect("the replay task");
        (readings, replays)
    }

    /// Stops the replays (the soak is over); the readers go on until [`Readers::finish`].
    pub fn stop_replaying(&self) {
        self.replaying.store(false, Ordering::Relaxed);
    }
}

/// The link target of a `Link: <target>; rel="next"` header, if any.
fn next_link(response: &reqwest::Response) -> Option<String> {
    let link = response.headers().get("link")?.to_str().ok()?;
    Some(link[link.find('<')? + 1..link.find('>')?].to_owned())
}

fn ids_of(messages: &[Value]) -> Option<Vec<Uuid>> {
    messages
        .iter()
        .map(|m| m["id"].as_str()?.parse().ok())
        .collect()
}

/// Follows the feed's JSON pages, waiting up to 2 s at the end of each.
async fn pages(context: Context, name: &str, first: usize) -> Reading {
    let mut reading = Reading {
        name: name.to_owned(),
        ..Reading::default()
    };
    let mut consumer = first;
    let mut next = "/message/feed?limit=1000&wait=2".to_owned();
    let mut distinct = HashSet::new();
    while !context.done(distinct.len()) {
        let url = format!("{}{next}", context.consumers[consumer]);
        let answer = context
            .http
            .get(&url)
            .timeout(Duration::from_secs(15))
            .send()
            .await;
        let page = match answer {
            Ok(response) if response.status() == 200 => {
                let link = next_link(&response);
                match (link, response.json::<Vec<Value>>().await) {
                    (Some(link), Ok(messages)) => ids_of(&messages).map(|ids| (link, ids)),
                    _ => None,
                }
            }
            _ => None,
        };
        match page {
            Some((link, ids)) => {
                distinct.extend(ids.iter().copied());
                reading.ids.extend(ids);
                next = link;
            }
            None => {
                reading.failures += 1;
                consumer = 1 - consumer;
                tokio::time::sleep(Duration::from_millis(250)).await;
            }
        }
    }
    reading
}

/// Follows the feed as server-sent events, ending each stream after 20 s (or at a fault) and resuming
/// after the last event read, on the other consumer when this one failed.
async fn events(context: Context, name: &str, first: usize) -> Reading {
    let mut reading = Reading {
        name: name.to_owned(),
        ..Reading::default()
    };
    let mut consumer = first;
    let mut last_event_id: Option<String> = None;
    let mut distinct = HashSet::new();
    while !context.done(distinct.len()) {
        let mut request = context
            .http
            .get(format!(
                "{}/message/feed?limit=500",
                context.consumers[consumer]
            ))
            .header("accept", "text/event-stream");
        if let Some(id) = &last_event_id {
            request = request.header("last-event-id", id);
        }
        let mut response = match request.timeout(Duration::from_secs(3600)).send().await {
            Ok(response) if response.status() == 200 => response,
            _ => {
                reading.failures += 1;
                consumer = 1 - consumer;
                tokio::time::sleep(Duration::from_millis(250)).await;
                continue;
            }
        };
        let until = Instant::now() + Duration::from_secs(20);
        let mut buffer = String::new();
        let failed = loop {
            if Instant::now() >= until || context.done(distinct.len()) {
                break false;
            }
            // A heartbeat comes every 15 s; nothing for 20 s is a fault.
            let chunk = tokio::time::timeout(Duration::from_secs(20), response.chunk()).await;
            let chunk = match chunk {
                Ok(Ok(Some(chunk))) => chunk,
                _ => break true,
            };
            let Ok(text) = std::str::from_utf8(&chunk) else {
                break true;
            };
            buffer.push_str(text);
            while let Some(end) = buffer.find("\n\n") {
                let event: String = buffer.drain(..end + 2).collect();
                let (mut id, mut data) = (None, None);
                for line in event.lines() {
                    if let Some(value) = line.strip_prefix("id: ") {
                        id = Some(value.to_owned());
                    } else if let Some(value) = line.strip_prefix("data: ") {
                        data = serde_json::from_str::<Value>(value)
                            .ok()
                            .and_then(|m| m["id"].as_str()?.parse::<Uuid>().ok());
                    }
                }
                // As a browser does: an `id` sets the last event id, with data or without.
                if let Some(id) = id {
                    last_event_id = Some(id);
                }
                if let Some(message) = data {
                    distinct.insert(message);
                    reading.ids.push(message);
                }
            }
        };
        drop(response);
        if failed {
            reading.failures += 1;
            consumer = 1 - consumer;
        } else {
            reading.resumes += 1;
        }
    }
    reading
}

/// Polls `GET /message` newest first for what is newer than the newest row seen, every 200 ms.
async fn newest_first(context: Context, name: &str, first: usize) -> Reading {
    let mut reading = Reading {
        name: name.to_owned(),
        ..Reading::default()
    };
    let consumer = first;
    let mut mark: Option<(DateTime<Utc>, Uuid)> = None;
    let mut distinct = HashSet::new();
    while !context.done(distinct.len()) {
        let mut next = Some("/message?limit=1000".to_owned());
        let mut newest = mark;
        // The mark moves only after a walk that reached it: one cut short by a fault would skip the rows
        // between where it stopped and the old mark.
        let mut reached = true;
        'pages: while let Some(target) = next.take() {
            let url = format!("{}{target}", context.consumers[consumer]);
            let answer = context
                .http
                .get(&url)
                .timeout(Duration::from_secs(15))
                .send()
                .await;
            let response = match answer {
                Ok(response) if response.status() == 200 => response,
                _ => {
                    reading.failures += 1;
                    reached = false;
                    break;
                }
            };
            next = next_link(&response);
            let Ok(messages) = response.json::<Vec<Value>>().await else {
                reading.failures += 1;
                reached = false;
                break;
            };
            for message in &messages {
                let key = (|| {
                    Some((
                        message["received_at"].as_str()?.parse().ok()?,
                        message["id"].as_str()?.parse().ok()?,
                    ))
                })();
                let Some(key) = key else { continue };
                if mark.is_some_and(|mark| key <= mark) {
                    break 'pages;
                }
                newest = newest.max(Some(key));
                if distinct.insert(key.1) {
                    reading.ids.push(key.1);
                }
            }
        }
        if reached {
            mark = newest;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    reading
}

/// Replays up to 1,000 dead letters every 20 s, through either consumer; returns the requests answered
/// and the messages put back.
async fn replay(context: Context, replaying: Arc<AtomicBool>) -> (u64, u64) {
    let (mut answered, mut replayed) = (0, 0);
    for round in 0usize.. {
        for _ in 0..20 {
            tokio::time::sleep(Duration::from_secs(1)).await;
            if !replaying.load(Ordering::Relaxed) {
                return (answered, replayed);
            }
        }
        let url = format!(
            "{}/dead-letters/replay?limit=1000",
            context.consumers[round % 2]
        );
        let answer = context
            .http
            .post(&url)
            .timeout(Duration::from_secs(30))
            .send()
            .await;
        if let Ok(response) = answer {
            if response.status() == 200 {
                answered += 1;
                if let Ok(body) = response.json::<Value>().await {
                    replayed += body["replayed"].as_u64().unwrap_or(0);
                }
            }
        }
    }
    (answered, replayed)
}

/// How a feed reader's record compares with the table: ids seen twice, stored ids never seen, ids seen
/// that are not stored, and places where the order went back (by the storing transaction, then id).
#[derive(Debug, Default, PartialEq, Eq)]
pub struct FeedOutcome {
    pub twice: usize,
    pub missing: usize,
    pub unknown: usize,
    pub backwards: usize,
}

impl FeedOutcome {
    pub fn exact(&self) -> bool {
        *self == Self::default()
    }
}

/// Compares `ids` (as served) with the stored rows, `order` giving each row's (transaction, id).
pub fn compare(ids: &[Uuid], order: &HashMap<Uuid, (u64, Uuid)>) -> FeedOutcome {
    let mut outcome = FeedOutcome::default();
    let mut seen = HashSet::new();
    let mut last: Option<(u64, Uuid)> = None;
    for id in ids {
        if !seen.insert(*id) {
            outcome.twice += 1;
        }
        match order.get(id) {
            None => outcome.unknown += 1,
            Some(&key) => {
                if last.is_some_and(|last| key <= last) {
                    outcome.backwards += 1;
                }
                last = Some(key);
            }
        }
    }
    outcome.missing = order.keys().filter(|id| !seen.contains(id)).count();
    outcome
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_repeat_a_gap_a_stranger_and_a_step_back_are_each_counted() {
        let ids: Vec<Uuid> = (0..4).map(|_| Uuid::now_v7()).collect();
        let order: HashMap<Uuid, (u64, Uuid)> = ids
            .iter()
            .enumerate()
            .map(|(n, id)| (*id, (n as u64 + 10, *id)))
            .collect();
        let served = [ids[0], ids[2], ids[1], ids[1], Uuid::now_v7()];
        let outcome = compare(&served, &order);
        assert_eq!(
            outcome,
            FeedOutcome {
                twice: 1,
                missing: 1,
                unknown: 1,
                backwards: 2,
            }
        );
        assert!(compare(&ids, &order).exact());
    }
}
