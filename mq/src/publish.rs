//! `mq publish`: the input checked line by line, cut into batches within the publisher's limits, each
//! sent under its idempotency key (see `keys`) and retried until accepted or given up.

use std::{
    collections::VecDeque,
    io::Write,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use anyhow::Context;
use reqwest::Method;

use crate::{
    cli::PublishArgs,
    client::{Client, Failure, Service},
    input::{self, Entry, Reject},
    keys,
    progress::Progress,
    retry::retrying,
    ExitStatus,
};

/// Longest a batch request may take: the publisher answers within its confirm timeout (5 s) and body
/// timeout (10 s), so this only catches a connection that went silent.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(60);

/// What one run ends with.
#[derive(Default)]
struct Tally {
    accepted: usize,
    rejects: Vec<Reject>,
    /// Messages of batches given up after their tries, with the last reason.
    failed: usize,
    /// A refusal that no other batch can escape (a token refused, say): the run stops.
    fatal: Option<Failure>,
}

/// Publishes the input, and says how the run went: 0 every message accepted, 3 some malformed or
/// invalid ones left out and every other accepted, 1 some not accepted (run again).
pub async fn run(client: &Client, args: &PublishArgs, quiet: bool) -> anyhow::Result<ExitStatus> {
    if let Some(prefix) = &args.key_prefix {
        let valid =
            (1..=100).contains(&prefix.len()) && prefix.bytes().all(|b| (0x21..=0x7e).contains(&b));
        anyhow::ensure!(
            valid,
            "--key-prefix must be 1 to 100 visible ASCII characters"
        );
    }
    let bytes = Arc::new(input::read(&args.input)?);
    let parsed = input::parse(&bytes, args.max_message_bytes as usize)?;
    let identity = keys::input_identity(args.key_prefix.as_deref(), &bytes);
    let batches = cut(
        &parsed.entries,
        args.batch_size as usize,
        args.batch_bytes as usize,
    );
    let (total, read_rejects) = (parsed.entries.len(), parsed.rejects.len());
    let progress = Arc::new(Progress::new(total as u64, quiet));
    for reject in &parsed.rejects {
        progress.error(&format!("line {}: {}", reject.line, reject.reason));
    }
    let started = Instant::now();
    let tally = Arc::new(Mutex::new(Tally {
        rejects: parsed.rejects,
        ..Tally::default()
    }));
    let queue = Arc::new(Mutex::new(VecDeque::from(batches)));
    let mut workers = tokio::task::JoinSet::new();
    for _ in 0..args.concurrency {
        let sender = BatchSender {
            client: client.clone(),
            bytes: bytes.clone(),
            identity: identity.clone(),
            tries: args.tries,
            progress: progress.clone(),
        };
        let (queue, tally) = (queue.clone(), tally.clone());
        workers.spawn(async move {
            loop {
                let next = queue.lock().expect("queue lock").pop_front();
                let Some(batch) = next else { break };
                let outcome = sender.send(batch).await;
                let mut tally = tally.lock().expect("tally lock");
                tally.accepted += outcome.accepted;
                tally.failed += outcome.failed;
                tally.rejects.extend(outcome.rejects);
                if let Some(fatal) = outcome.fatal {
                    tally.fatal.get_or_insert(fatal);
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
    if !quiet {
        eprintln!(
            "{} message{}: {} accepted, {} left out as malformed or invalid, {} not accepted ({:.1?})",
            total + read_rejects,
            if total + read_rejects == 1 { "" } else { "s" },
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

/// Cuts the messages into batches in input order: each at most `size` messages and `max_bytes` of
/// body (`[`, the texts, commas, `]`). The same input with the same limits is always cut the same way,
/// which is what keeps a re-run's keys the same.
fn cut(entries: &[Entry], size: usize, max_bytes: usize) -> Vec<Vec<Entry>> {
    let mut batches = Vec::new();
    let mut batch: Vec<Entry> = Vec::new();
    let mut body = 2;
    for entry in entries {
        let len = entry.span.len();
        let grown = body + len + usize::from(!batch.is_empty());
        if !batch.is_empty() && (batch.len() == size || grown > max_bytes) {
            batches.push(std::mem::take(&mut batch));
            body = 2;
        }
        body += len + usize::from(!batch.is_empty());
        batch.push(entry.clone());
    }
    if !batch.is_empty() {
        batches.push(batch);
    }
    batches
}

/// The body of a batch request: the messages' own texts in a JSON array.
fn body_of(bytes: &[u8], entries: &[Entry]) -> Vec<u8> {
    let mut body = Vec::with_capacity(2 + entries.iter().map(|e| e.span.len() + 1).sum::<usize>());
    body.push(b'[');
    for (index, entry) in entries.iter().enumerate() {
        if index > 0 {
            body.push(b',');
        }
        body.extend_from_slice(&bytes[entry.span.clone()]);
    }
    body.push(b']');
    body
}

/// What became of one batch.
#[derive(Default)]
struct Outcome {
    accepted: usize,
    failed: usize,
    rejects: Vec<Reject>,
    fatal: Option<Failure>,
}

/// Everything a worker needs to send batches.
struct BatchSender {
    client: Client,
    bytes: Arc<Vec<u8>>,
    identity: String,
    tries: u32,
    progress: Arc<Progress>,
}

impl BatchSender {
    /// Sends one batch until it is accepted, given up, or refused. A refusal that names one element
    /// (`message at index 3: …`, a rule this client does not check itself, such as a lower limit the
    /// publisher was configured with) sets that message aside and sends the rest again: under a new
    /// key, since nothing of a refused batch was stored, and the same new key on every run.
    async fn send(&self, mut entries: Vec<Entry>) -> Outcome {
        let mut outcome = Outcome::default();
        self.progress.sent(entries.len());
        while !entries.is_empty() {
            let key = keys::batch_key(&self.identity, &self.bytes, &entries);
            let body = body_of(&self.bytes, &entries);
            let attempt = || {
                let request = self
                    .client
                    .request(Service::Publisher, Method::POST, "/message/publish/batch")
                    .header("Content-Type", "application/json")
                    .header("Idempotency-Key", key.as_str())
                    .timeout(REQUEST_TIMEOUT)
                    .body(body.clone());
                self.client.send(request)
            };
            let first_line = entries[0].line;
            let on_retry = |failure: &Failure, wait: Duration| {
                self.progress.note(&format!(
                    "batch from line {first_line}: {failure}; trying again in {wait:.1?}"
                ));
            };
            match retrying(Some(self.tries), attempt, on_retry).await {
                Ok(_) => {
                    self.progress.accepted(entries.len());
                    outcome.accepted += entries.len();
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
                        let last_line = entries.last().map_or(first_line, |e| e.line);
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn batches_keep_to_the_count_and_the_byte_limit() {
        let bytes = b"{\"sender\":\"a\"}\n{\"sender\":\"b\"}\n{\"sender\":\"c\"}\n";
        let entries = input::parse(bytes, 65536).unwrap().entries;
        let sizes = |batches: Vec<Vec<Entry>>| batches.iter().map(Vec::len).collect::<Vec<_>>();
        assert_eq!(sizes(cut(&entries, 2, 1 << 20)), vec![2, 1]);
        // Each text is 14 bytes: `[a,b]` is 31 bytes, `[a]` 16.
        assert_eq!(sizes(cut(&entries, 10, 31)), vec![2, 1]);
        assert_eq!(sizes(cut(&entries, 10, 30)), vec![1, 1, 1]);
        let batch = &cut(&entries, 2, 1 << 20)[0];
        assert_eq!(body_of(bytes, batch).len(), 31);
        assert_eq!(
            body_of(bytes, batch),
            b"[{\"sender\":\"a\"},{\"sender\":\"b\"}]"
        );
    }
}
