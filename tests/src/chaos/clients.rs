//! The clients of the soak, and what each saw. Every message carries a nonce in its attributes, unique to
//! the attempt, so the checker can tell each stored row's origin: a keyed client's retries (same
//! `Idempotency-Key`, same body) share one nonce, and an unkeyed request has its own.
//!
//! - keyed: one message a request; anything but 202 (a 503, a timeout, a reset) is retried with the same
//!   key and body on the other publisher, until accepted;
//! - unkeyed: one message a request, never retried (a retry without a key would be a new message);
//! - batch: the largest batches the publisher takes (`MAX_BATCH_MESSAGES` messages, close to
//!   `MAX_BATCH_BYTES` or small), keyed and retried like the keyed clients.

use std::{
    collections::{BTreeMap, HashMap},
    sync::{
        atomic::{AtomicBool, AtomicUsize, Ordering},
        Arc,
    },
    time::{Duration, Instant},
};

use common::Message;
use publisher::IdempotencyKey;
use serde_json::{json, Value};
use uuid::Uuid;

/// What the clients saw, merged over all of them.
#[derive(Default)]
pub struct Record {
    /// Every message attempted: its nonce, and the id its key gives (keyed messages only).
    pub attempts: HashMap<String, Option<Uuid>>,
    /// Messages answered 202: nonce and the id answered.
    pub accepted: HashMap<String, Uuid>,
    /// 202 answers whose id was not the one the key gives, or not the one of an earlier 202.
    pub unstable: usize,
    /// Answers by status; 0 is no answer (refused, reset, timed out).
    pub statuses: BTreeMap<u16, u64>,
    /// Keys never accepted before the clients gave up, after the soak.
    pub abandoned: usize,
}

impl Record {
    pub fn merge(&mut self, other: Record) {
        self.attempts.extend(other.attempts);
        self.accepted.extend(other.accepted);
        self.unstable += other.unstable;
        for (status, count) in other.statuses {
            *self.statuses.entry(status).or_default() += count;
        }
        self.abandoned += other.abandoned;
    }

    fn answered(&mut self, nonce: &str, id: Uuid) {
        let expected = self.attempts.get(nonce).copied().flatten();
        match self.accepted.insert(nonce.to_owned(), id) {
            Some(earlier) if earlier != id => self.unstable += 1,
            _ if expected.is_some_and(|expected| expected != id) => self.unstable += 1,
            _ => {}
        }
    }
}

/// One kind of client; each runs in its own task.
#[derive(Clone, Copy)]
pub enum Kind {
    Keyed,
    Unkeyed,
    /// `MAX_BATCH_MESSAGES` messages a request, each padded with this many bytes.
    Batch {
        pad: usize,
    },
}

pub const BATCH_MESSAGES: usize = 1000;
/// Brings a batch of 1000 close to the default `MAX_BATCH_BYTES` (4 MiB) without passing it.
pub const LARGEST_PAD: usize = 3_900;
/// How long a keyed client keeps retrying the key in hand after the soak.
const RETRY_AFTER_STOP: Duration = Duration::from_secs(90);

pub struct Clients {
    stop: Arc<AtomicBool>,
    /// Batch requests of the largest kind in flight now.
    pub largest_in_flight: Arc<AtomicUsize>,
    tasks: Vec<tokio::task::JoinHandle<Record>>,
}

struct Client {
    http: reqwest::Client,
    publishers: Arc<Vec<String>>,
    stop: Arc<AtomicBool>,
    largest_in_flight: Arc<AtomicUsize>,
    name: String,
    record: Record,
}

impl Clients {
    pub fn start(run: &str, publishers: Vec<String>, kinds: &[Kind]) -> Self {
        let http = reqwest::Client::builder()
            .pool_idle_timeout(Duration::from_secs(5))
            .build()
            .expect("an HTTP client");
        let publishers = Arc::new(publishers);
        let stop = Arc::new(AtomicBool::new(false));
        let largest_in_flight = Arc::new(AtomicUsize::new(0));
        let tasks = kinds
            .iter()
            .enumerate()
            .map(|(i, &kind)| {
                let client = Client {
                    http: http.clone(),
                    publishers: publishers.clone(),
                    stop: stop.clone(),
                    largest_in_flight: largest_in_flight.clone(),
                    name: format!("{run}-{}{i}", kind.letter()),
                    record: Record::default(),
                };
                tokio::spawn(client.run(kind, i))
            })
            .collect();
        Self {
            stop,
            largest_in_flight,
            tasks,
        }
    }

    /// Stops the clients (each keyed client first finishes the key in hand) and merges what they saw.
    pub async fn stop(self) -> Record {
        self.stop.store(true, Ordering::Relaxed);
        let mut record = Record::default();
        for task in self.tasks {
            record.merge(task.await.expect("a client task"));
        }
        record
    }
}

impl Kind {
    fn letter(self) -> &'static str {
        match self {
            Kind::Keyed => "k",
            Kind::Unkeyed => "u",
            Kind::Batch { .. } => "b",
        }
    }
}

/// A message of `sender` carrying `nonce`, padded with `pad` bytes.
pub fn message(sender: &str, nonce: &str, pad: usize) -> Value {
    let mut attributes = json!({ "nonce": nonce });
    if pad > 0 {
        attributes["pad"] = json!("x".repeat(pad));
    }
    json!({ "sender": sender, "messageAttributes": attributes })
}

/// The id the publisher gives `body` sent under `key` (at `index` of a batch).
pub fn keyed_id(key: &str, body: &Value, index: Option<usize>) -> Uuid {
    let message: Message = serde_json::from_value(body.clone()).expect("a valid message");
    IdempotencyKey::parse(key.as_bytes())
        .expect("a valid key")
        .message_id(&message, index, None)
}

impl Client {
    async fn run(mut self, kind: Kind, index: usize) -> Record {
        let mut target = index;
        let mut n = 0u64;
        while !self.stop.load(Ordering::Relaxed) {
            n += 1;
            let nonce = format!("{}-{n}", self.name);
            match kind {
                Kind::Keyed => {
                    let body = message(&self.name, &nonce, 0);
                    let id = keyed_id(&nonce, &body, None);
                    self.record.attempts.insert(nonce.clone(), Some(id));
                    let ids = self
                        .until_accepted("/message/publish", &nonce, &body, &mut target)
                        .await;
                    if let Some(ids) = ids {
                        self.record.answered(&nonce, ids[0]);
                    }
                }
                Kind::Batch { pad } => {
                    let elements: Vec<(String, Value)> = (0..BATCH_MESSAGES)
                        .map(|i| {
                            let element_nonce = format!("{nonce}#{i}");
                            let body = message(&self.name, &element_nonce, pad);
                            (element_nonce, body)
                        })
                        .collect();
                    for (i, (element_nonce, body)) in elements.iter().enumerate() {
                        let id = keyed_id(&nonce, body, Some(i));
                        self.record.attempts.insert(element_nonce.clone(), Some(id));
                    }
                    let batch = Value::Array(elements.iter().map(|(_, b)| b.clone()).collect());
                    let largest = pad >= LARGEST_PAD;
                    if largest {
                        self.largest_in_flight.fetch_add(1, Ordering::Relaxed);
                    }
                    let ids = self
                        .until_accepted("/message/publish/batch", &nonce, &batch, &mut target)
                        .await;
                    if largest {
                        self.largest_in_flight.fetch_sub(1, Ordering::Relaxed);
                    }
                    for ((element_nonce, _), id) in elements.iter().zip(ids.unwrap_or_default()) {
                        self.record.answered(element_nonce, id);
                    }
                    tokio::time::sleep(Duration::from_millis(500)).await;
                }
                Kind::Unkeyed => {
                    let body = message(&self.name, &nonce, 0);
                    self.record.attempts.insert(nonce.clone(), None);
                    target += 1;
                    let url = format!("{}/message/publish", self.publishers[target % 2]);
                    if let (202, Some(ids)) = self.send(&url, None, &body).await {
                        self.record.answered(&nonce, ids[0]);
                    } else {
                        tokio::time::sleep(Duration::from_millis(100)).await;
                    }
                }
            }
        }
        self.record
    }

    /// Sends `body` under `key` until it is answered 202, moving to the other publisher after each
    /// failure; gives up only once the soak is over and `RETRY_AFTER_STOP` has passed.
    async fn until_accepted(
        &mut self,
        path: &str,
        key: &str,
        body: &Value,
        target: &mut usize,
    ) -> Option<Vec<Uuid>> {
        let mut give_up_at = None;
        loop {
            let url = format!("{}{path}", self.publishers[*target % self.publishers.len()]);
            match self.send(&url, Some(key), body).await {
                (202, Some(ids)) => return Some(ids),
                (status @ 400..=499, _) if status != 408 && status != 429 => {
                    eprintln!("chaos: {url} answered {status} to key {key}: not retried");
                    return None;
                }
                _ => {}
            }
            if self.stop.load(Ordering::Relaxed) {
                let at = *give_up_at.get_or_insert(Instant::now() + RETRY_AFTER_STOP);
                if Instant::now() >= at {
                    self.record.abandoned += 1;
                    return None;
                }
            }
            *target += 1;
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// One request: its status (0: no answer) and, for a 202, the ids answered.
    async fn send(
        &mut self,
        url: &str,
        key: Option<&str>,
        body: &Value,
    ) -> (u16, Option<Vec<Uuid>>) {
        let mut request = self
            .http
            .post(url)
            .json(body)
            .timeout(Duration::from_secs(30));
        if let Some(key) = key {
            request = request.header("Idempotency-Key", key);
        }
        let (status, ids) = match request.send().await {
            Ok(response) => {
                let status = response.status().as_u16();
                let ids = if status == 202 {
                    response
                        .json::<Value>()
                        .await
                        .ok()
                        .and_then(|answer| ids_of(&answer))
                } else {
                    None
                };
                // A 202 whose body did not arrive is no answer the client can act on.
                (
                    if status == 202 && ids.is_none() {
                        0
                    } else {
                        status
                    },
                    ids,
                )
            }
            Err(_) => (0, None),
        };
        *self.record.statuses.entry(status).or_default() += 1;
        (status, ids)
    }
}

fn ids_of(answer: &Value) -> Option<Vec<Uuid>> {
    let ids = match answer.get("ids") {
        Some(ids) => ids.as_array()?.iter().collect::<Vec<_>>(),
        None => vec![answer.get("id")?],
    };
    ids.into_iter()
        .map(|id| id.as_str()?.parse().ok())
        .collect()
}
