//! `mq`: a command-line client of the publisher and the consumer.
//!
//! Layout: `cli` (the command line), `client` (URLs, token, answers and failures), `problem` (the
//! services' errors made readable), `retry` (backoff and `Retry-After`), then one module a command:
//! `publish` (with `input`, `batches`, `keys` and `progress`), `tail`, `reads` (`get`,
//! `dead-letters`) and `status` (with `metrics`); `link` and `output` serve several of them.

mod batches;
mod cli;
mod client;
mod input;
mod keys;
mod link;
mod metrics;
mod output;
mod problem;
mod progress;
mod publish;
mod reads;
mod retry;
mod status;
mod tail;

use clap::Parser;

use cli::{Cli, Command, DeadLettersCommand};

/// How a command ended, as its exit code; scripts rely on these (see `docs/cli.md`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExitStatus {
    /// 0: everything asked was done.
    Success,
    /// 1: the command failed: a refusal, or a service unreachable after retries.
    Failed,
    /// 2: a usage error: clap's own, or a token or URL that no request could carry.
    Usage,
    /// 3: `publish` left out malformed or invalid messages; every other one was accepted.
    Partial,
}

/// A mistake in how `mq` was called that clap cannot see (a token with a newline, an `https://`
/// URL): reported at once, exit code 2.
#[derive(Debug)]
pub struct UsageError(pub String);

impl std::fmt::Display for UsageError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for UsageError {}

impl From<ExitStatus> for std::process::ExitCode {
    fn from(status: ExitStatus) -> Self {
        Self::from(match status {
            ExitStatus::Success => 0,
            ExitStatus::Failed => 1,
            ExitStatus::Usage => 2,
            ExitStatus::Partial => 3,
        })
    }
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("mq: error: Failed to start the async runtime: {error}");
            return ExitStatus::Failed.into();
        }
    };
    match runtime.block_on(run(&cli)) {
        Ok(status) => status.into(),
        Err(error) if is_broken_pipe(&error) => ExitStatus::Success.into(),
        Err(error) => {
            eprintln!("mq: error: {}", output::printable(&chain(&error)));
            if error.downcast_ref::<UsageError>().is_some() {
                ExitStatus::Usage.into()
            } else {
                ExitStatus::Failed.into()
            }
        }
    }
}

async fn run(cli: &Cli) -> anyhow::Result<ExitStatus> {
    let client = client::Client::new(&cli.global)?;
    let quiet = cli.global.quiet;
    match &cli.command {
        Command::Publish(args) => return publish::run(&client, args, quiet).await,
        Command::Status(args) => return status::run(&client, args).await,
        Command::Tail(args) => tail::run(&client, args, quiet).await?,
        Command::Get(args) => reads::get(&client, args).await?,
        Command::DeadLetters(DeadLettersCommand::List(args)) => {
            reads::dead_letters(&client, args).await?
        }
        Command::DeadLetters(DeadLettersCommand::Replay(args)) => {
            reads::replay(&client, args).await?
        }
    }
    Ok(ExitStatus::Success)
}

/// The error and its causes on one line, outermost first.
fn chain(error: &anyhow::Error) -> String {
    error
        .chain()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(": ")
}

/// Whether the reader of our standard output went away (`mq tail | head`): not an error of ours.
fn is_broken_pipe(error: &anyhow::Error) -> bool {
    error.chain().any(|cause| {
        cause
            .downcast_ref::<std::io::Error>()
            .is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe)
    })
}
