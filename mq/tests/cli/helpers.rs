//! Running the `mq` binary against a test's stack, input files that clean up after themselves, and
//! waits on what the services report.

use std::{
    path::PathBuf,
    process::{Command, Output, Stdio},
    time::Duration,
};

use end_to_end::{eventually, TestStack};

/// `mq` pointed at `stack`'s services, with no token or URL inherited from the environment.
pub fn mq(stack: &TestStack) -> Command {
    let mut command = bare_mq();
    command
        .env("MQ_PUBLISHER_URL", stack.publisher_url())
        .env("MQ_CONSUMER_URL", stack.consumer_url());
    command
}

/// `mq` with none of its variables set.
pub fn bare_mq() -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_mq"));
    for name in [
        "MQ_PUBLISHER_URL",
        "MQ_CONSUMER_URL",
        "MQ_TOKEN",
        "MQ_TOKEN_FILE",
    ] {
        command.env_remove(name);
    }
    command.stdin(Stdio::null());
    command
}

/// Runs `command` to its end off the async runtime, which keeps serving the in-process services.
pub async fn run(mut command: Command) -> Output {
    tokio::task::spawn_blocking(move || command.output().expect("mq runs"))
        .await
        .expect("mq's runner")
}

/// Standard error as text, for assertions and failure messages.
pub fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

/// A file in the temporary directory, removed when dropped.
pub struct TempFile(pub PathBuf);

impl TempFile {
    pub fn with_lines(lines: impl IntoIterator<Item = String>) -> Self {
        let file = Self::named("jsonl");
        let mut text = lines.into_iter().collect::<Vec<_>>().join("\n");
        text.push('\n');
        std::fs::write(&file.0, text).expect("write the input");
        file
    }

    /// A path no file has yet.
    pub fn named(extension: &str) -> Self {
        Self(std::env::temp_dir().join(format!(
            "mq-test-{}.{extension}",
            uuid::Uuid::new_v4().simple()
        )))
    }

    pub fn path(&self) -> &str {
        self.0.to_str().expect("a UTF-8 path")
    }
}

impl Drop for TempFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// One message of a test input: the sender and its line number in `messageAttributes.line`, so the
/// rows can be traced back to lines.
pub fn line_message(line: usize) -> String {
    serde_json::json!({
        "sender": format!("sender-{}", line % 7),
        "messageAttributes": { "line": line },
    })
    .to_string()
}

/// Waits until the consumer has settled every message the publisher accepted (stored, found already
/// stored, or dead-lettered), so that counting rows afterwards counts everything there will be.
pub async fn wait_settled(stack: &TestStack) {
    eventually(
        Duration::from_secs(120),
        "every accepted message settled",
        || async {
            let accepted = stack
                .metric(stack.publisher_url(), "publisher_messages_accepted_total")
                .await;
            let consumer = stack.consumer_url();
            let settled = stack
                .metric(consumer, "consumer_messages_stored_total")
                .await
                + stack
                    .metric(consumer, "consumer_messages_duplicate_total")
                    .await
                + stack
                    .metric(consumer, "consumer_messages_dead_lettered_total")
                    .await;
            (accepted > 0.0 && settled >= accepted).then_some(())
        },
    )
    .await;
}

/// `(rows, distinct lines)` of the test's `messages` table.
pub async fn rows_and_lines(stack: &TestStack) -> (i64, i64) {
    sqlx::query_as("SELECT count(*), count(DISTINCT message_attributes->>'line') FROM messages")
        .fetch_one(&stack.db)
        .await
        .expect("count rows")
}

/// The `line` attribute of every stored row, sorted.
pub async fn stored_lines(stack: &TestStack) -> Vec<i64> {
    sqlx::query_scalar(
        "SELECT (message_attributes->>'line')::bigint AS line FROM messages ORDER BY line",
    )
    .fetch_all(&stack.db)
    .await
    .expect("read lines")
}

/// Runs `command` for at most `limit`, killing it then, with how long it ran: for commands that may
/// never end by themselves (`tail`, or a bug).
pub async fn run_for(mut command: Command, limit: Duration) -> (Output, Duration) {
    tokio::task::spawn_blocking(move || {
        use std::io::Read;
        command.stdout(Stdio::piped()).stderr(Stdio::piped());
        let started = std::time::Instant::now();
        let mut child = command.spawn().expect("mq starts");
        let drain = |mut pipe: Box<dyn Read + Send>| {
            std::thread::spawn(move || {
                let mut bytes = Vec::new();
                let _ = pipe.read_to_end(&mut bytes);
                bytes
            })
        };
        let stdout = drain(Box::new(child.stdout.take().expect("piped stdout")));
        let stderr = drain(Box::new(child.stderr.take().expect("piped stderr")));
        let status = loop {
            if let Some(status) = child.try_wait().expect("poll mq") {
                break status;
            }
            if started.elapsed() > limit {
                let _ = child.kill();
                break child.wait().expect("reap mq");
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        let elapsed = started.elapsed();
        let output = Output {
            status,
            stdout: stdout.join().expect("stdout reader"),
            stderr: stderr.join().expect("stderr reader"),
        };
        (output, elapsed)
    })
    .await
    .expect("mq's runner")
}
