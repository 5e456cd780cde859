//! `mq publish`: the input checked line by line, cut into batches within the publisher's limits, each
//! sent under its idempotency key (see `keys`) and retried until accepted or given up.

use std::{
    collections::VecDeque,
    io::Write,
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc, Mutex,
    },
    time::{Duration, Instant},
};

use anyhow::Context;
use reqwest::Method;

use crate::{
    batches::{body_of, cut, Batch},
    cli::PublishArgs,
    client::{Answer, Client, Failure, Service},
    input::{self, Reject},
    keys,
    progress::Progress,
    retry::retrying,
    ExitStatus, UsageError,
};

/// The run-wide give-up: once no batch has been accepted for `--give-up-after` (counted from the
/// start), retries stop and no new batch is taken, instead of every batch spending its tries in turn.
struct Stall {
    last_accepted: Mutex<Instant>,
    limit: Duration,
    given_up: AtomicBool,
}

impl Stall {
    fn new(limit: Duration) -> Self {
        Self {
            last_accepted: Mutex::new(Instant::now()),
            limit,
            given_up: AtomicBool::new(false),
        }
    }

    fn accepted(&self) {
        *self.last_accepted.lock().expect("stall lock") = Instant::now();
    }

    /// Whether a retry after `wait` may still be made; once it may not, the whole run has given up.
    fn may_retry_after(&self, wait: Duration) -> bool {
        let idle = self.last_accepted.lock().expect("stall lock").elapsed();
        if idle + wait > self.limit {
            self.given_up.store(true, Ordering::Relaxed);
        }
        !self.given_up()
    }

    fn given_up(&self) -> bool {
        self.given_up.load(Ordering::Relaxed)
    }
}

/// Publishes the input, and says how the run went: 0 every message accepted, 3 some malformed or
/// invalid ones left out and every other accepted, 1 some not accepted (run again).
pub async fn run(client: &Client, args: &PublishArgs, quiet: bool) -> anyhow::Result<ExitStatus> {
    if let Some(rejects) = &args.rejects {
        refuse_overwriting_input(&args.input, rejects)?;
    }
    let bytes = Arc::new(input::read(&args.input)?);
    let parsed = input::parse(&bytes, args.max_message_bytes as usize)?;
    if parsed.sizes.is_empty() {
        anyhow::ensure!(
            args.allow_empty,
            "no messages in the input {} (--allow-empty accepts that)",
            args.input
        );
        if !quiet {
            eprintln!("0 messages: nothing to publish");
        }
        return Ok(ExitStatus::Success);
    }
    let identity = keys::input_identity(args.key_prefix.as_deref(), &bytes);
    let batches = cut(&parsed, args.batch_size as usize, args.batch_bytes as usize);
    let (total, elements) = (parsed.entries.len(), parsed.sizes.len());
    let progress = Arc::new(Progress::new(total as u64, quiet));
    for reject in &parsed.rejects {
        progress.error(&format!("line {}: {}", reject.line, reject.reason));
    }
    let started = Instant::now();
    let tally = Arc::new(Mutex::new(Outcome {
        rejects: parsed.rejects,
        ..Outcome::default()
    }));
    let queue = Arc::new(Mutex::new(VecDeque::from(batches)));
    let stall = Arc::new(Stall::new(Duration::from_secs(args.give_up_after.into())));
    let mut workers = tokio::task::JoinSet::new();
    for _ in 0..args.concurrency {
        let sender = BatchSender {
            client: client.clone(),
            bytes: bytes.clone(),
            identity: identity.clone(),
            tries: args.tries,
            progress: progress.clone(),
            stall: stall.clone(),
        };
        let (queue, tally) = (queue.clone(), tally.clone());
        workers.spawn(async move {
            loop {
                if sender.stall.given_up() {
                    break;
                }
                let next = queue.lock().expect("queue lock").pop_front();
                let Some(batch) = next else { break };
                let outcome = sender.send(batch).await;
                if tally.lock().expect("tally lock").absorb(outcome) {
                    queue.lock().expect("queue lock").clear();
                }
            }
        });
    }
    while let Some(joined) = workers.join_next().await {
        joined.context("a publishing task failed")?;
    }
    progress.finish();
    let mut tally = std::mem::take(&mut *tally.lock().expect("tally lock"));
    // Messages of batches never sent because the run gave up (see [`Stall`]).
    let unsent: usize = (queue.lock().expect("queue lock").drain(..))
        .map(|batch| batch.entries.len())
        .sum();
    tally.rejects.sort_by_key(|reject| reject.line);
    if let Some(path) = &args.rejects {
        write_rejects(path, &tally.rejects)?;
    }
    if let Some(fatal) = tally.fatal {
        return Err(anyhow::Error::new(fatal).context(format!(
            "publishing stopped after {} of {total} messages were accepted",
            tally.accepted
        )));
    }
    if stall.given_up() {
        eprintln!(
            "gave up: no batch was accepted for {} s (--give-up-after); {} messages not accepted, \
             {} of them never sent. Run the same command again once the publisher takes requests",
            args.give_up_after,
            tally.failed + unsent,
            unsent,
        );
    }
    tally.failed += unsent;
    if !quiet {
        eprintln!(
            "{} message{}: {} accepted, {} left out as malformed or invalid, {} not accepted ({:.1?})",
            elements,
            if elements == 1 { "" } else { "s" },
            tally.accepted,
            tally.rejects.len(),
            tally.failed,
            started.elapsed(),
        );
    }
    Ok(if tally.failed > 0 {
        ExitStatus::Failed
    } else if !tally.rejects.is_empty() {
        ExitStatus::Partial
    } else {
        ExitStatus::Success
    })
}

/// What became of one batch, or of the run so far.
#[derive(Default)]
struct Outcome {
    accepted: usize,
    /// Messages of batches given up after their tries, with the last reason.
    failed: usize,
    rejects: Vec<Reject>,
    /// A refusal that no other batch can escape (a token refused, say): the run stops.
    fatal: Option<Failure>,
}

impl Outcome {
    /// Adds a batch's outcome to the run's; whether it stops the run (the first fatal refusal is kept).
    fn absorb(&mut self, batch: Outcome) -> bool {
        self.accepted += batch.accepted;
        self.failed += batch.failed;
        self.rejects.extend(batch.rejects);
        let Some(fatal) = batch.fatal else {
            return false;
        };
        self.fatal.get_or_insert(fatal);
        true
    }
}

/// Everything a worker needs to send batches.
struct BatchSender {
    client: Client,
    bytes: Arc<Vec<u8>>,
    identity: String,
    tries: u32,
    progress: Arc<Progress>,
    stall: Arc<Stall>,
}

impl BatchSender {
    /// Sends one batch until it is accepted, given up, or refused. A refusal that names one element
    /// (`message at index 3: …`, a rule this client does not check itself, such as a lower limit the
    /// publisher was configured with) sets that message aside and sends the rest again: under a new
    /// key, since nothing of a refused batch was stored, and the same new key on every run.
    async fn send(&self, batch: Batch) -> Outcome {
        let Batch { start, mut entries } = batch;
        let mut outcome = Outcome::default();
        self.progress.sent(entries.len());
        while !entries.is_empty() {
            let key = keys::batch_key(&self.identity, &self.bytes, start, &entries);
            let body = body_of(&self.bytes, &entries);
            let attempt = || {
                let request = self
                    .client
                    .request(Service::Publisher, Method::POST, "/message/publish/batch")
                    .header("Content-Type", "application/json")
                    .header("Idempotency-Key", key.as_str())
                    .body(body.clone());
                self.client.send(request)
            };
            let first_line = entries[0].line;
            let last_line = entries.last().map_or(first_line, |e| e.line);
            let on_retry = |failure: &Failure, wait: Duration| {
                if !self.stall.may_retry_after(wait) {
                    return false;
                }
                self.progress.note(&format!(
                    "batch from line {first_line}: {failure}; trying again in {wait:.1?}"
                ));
                true
            };
            match retrying(Some(self.tries), attempt, on_retry).await {
                Ok(answer) => {
                    match accepted_ids(&answer, entries.len()) {
                        Ok(()) => {
                            self.stall.accepted();
                            self.progress.accepted(entries.len());
                            outcome.accepted += entries.len();
                        }
                        Err(why) => {
                            self.progress.error(&format!(
                                "lines {first_line}-{last_line}: {} messages not accepted: the \
                                 publisher answered {why}",
                                entries.len()
                            ));
                            outcome.failed += entries.len();
                        }
                    }
                    break;
                }
                Err(failure) => {
                    let named = failure
                        .problem()
                        .filter(|p| p.status == 400 || p.status == 413)
                        .and_then(|p| p.element_index())
                        .filter(|&index| index < entries.len());
                    if let Some(index) = named {
                        let entry = entries.remove(index);
                        let reason = failure
                            .problem()
                            .and_then(|p| p.detail.clone())
                            .unwrap_or_default();
                        self.progress
                            .error(&format!("line {}: {reason}", entry.line));
                        outcome.rejects.push(Reject {
                            line: entry.line,
                            reason,
                            text: String::from_utf8_lossy(&self.bytes[entry.span]).into_owned(),
                        });
                        continue;
                    }
                    let status = failure.problem().map(|p| p.status);
                    if matches!(status, Some(401 | 403 | 404 | 405 | 415)) {
                        outcome.fatal = Some(failure);
                    } else {
                        self.progress.error(&format!(
                            "lines {first_line}-{last_line}: {} messages not accepted: {failure}",
                            entries.len()
                        ));
                        outcome.failed += entries.len();
                    }
                    break;
                }
            }
        }
        outcome
    }
}

/// Whether `answer` says the whole batch of `count` messages was accepted: 202 with an `ids` array
/// of one id a message. Anything else (another 2xx, a body that is not that) is not taken on trust.
fn accepted_ids(answer: &Answer, count: usize) -> Result<(), String> {
    #[derive(serde::Deserialize)]
    struct Accepted {
        ids: Vec<serde::de::IgnoredAny>,
    }
    if answer.status != 202 {
        return Err(format!("{} instead of 202 Accepted", answer.status));
    }
    match serde_json::from_slice::<Accepted>(&answer.body) {
        Ok(accepted) if accepted.ids.len() == count => Ok(()),
        Ok(accepted) => Err(format!(
            "202 with {} ids for {count} messages",
            accepted.ids.len()
        )),
        Err(_) => Err("202 without the JSON {\"ids\": […]} it must send".into()),
    }
}

/// Refuses a `--rejects` file that is the input itself: writing it would destroy the input.
fn refuse_overwriting_input(input: &str, rejects: &std::path::Path) -> anyhow::Result<()> {
    use std::os::unix::fs::MetadataExt;
    if input == "-" {
        return Ok(());
    }
    let same = match (std::fs::metadata(input), std::fs::metadata(rejects)) {
        (Ok(a), Ok(b)) => a.dev() == b.dev() && a.ino() == b.ino(),
        _ => false,
    };
    if same {
        return Err(UsageError(format!(
            "--rejects {} is the input file: it would be overwritten; name another file",
            rejects.display()
        ))
        .into());
    }
    Ok(())
}

/// Writes the rejected messages' texts, one a line, for fixing and publishing on their own.
fn write_rejects(path: &std::path::Path, rejects: &[Reject]) -> anyhow::Result<()> {
    let mut file = std::io::BufWriter::new(
        std::fs::File::create(path)
            .with_context(|| format!("Failed to create {}", path.display()))?,
    );
    for reject in rejects {
        let one_line = reject.text.replace('\n', " ");
        writeln!(file, "{one_line}")
            .with_context(|| format!("Failed to write {}", path.display()))?;
    }
    file.flush()
        .with_context(|| format!("Failed to write {}", path.display()))
}
