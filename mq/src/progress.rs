//! `mq publish`'s progress on standard error: a bar of accepted messages with what was sent and the
//! rate, drawn only on a terminal (a log file or a pipe gets the notes and the summary alone).

use std::{
    io::IsTerminal,
    sync::atomic::{AtomicU64, Ordering},
    time::{Duration, Instant},
};

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

/// Counts of one publish run, and the bar that shows them.
pub struct Progress {
    bar: ProgressBar,
    sent: AtomicU64,
    started: Instant,
    quiet: bool,
}

impl Progress {
    /// A bar for `total` messages, hidden when `quiet` or when standard error is not a terminal.
    pub fn new(total: u64, quiet: bool) -> Self {
        let target = if quiet || !std::io::stderr().is_terminal() {
            ProgressDrawTarget::hidden()
        } else {
            ProgressDrawTarget::stderr()
        };
        let bar = ProgressBar::with_draw_target(Some(total), target);
        bar.set_style(
            ProgressStyle::with_template(
                "{spinner} [{elapsed_precise}] {wide_bar} {pos}/{len} accepted, {msg}",
            )
            .expect("a valid template"),
        );
        bar.set_message("0 sent, 0 msg/s");
        bar.enable_steady_tick(Duration::from_millis(200));
        Self {
            bar,
            sent: AtomicU64::new(0),
            started: Instant::now(),
            quiet,
        }
    }

    /// `count` messages went out in a request for the first time.
    pub fn sent(&self, count: usize) {
        self.sent.fetch_add(count as u64, Ordering::Relaxed);
        self.show();
    }

    /// `count` messages were answered 202.
    pub fn accepted(&self, count: usize) {
        self.bar.inc(count as u64);
        self.show();
    }

    /// The bar's message: what was sent, and the rate of acceptance since the start.
    fn show(&self) {
        let seconds = self.started.elapsed().as_secs_f64().max(0.001);
        self.bar.set_message(format!(
            "{} sent, {:.0} msg/s",
            self.sent.load(Ordering::Relaxed),
            self.bar.position() as f64 / seconds
        ));
    }

    /// Prints a line on standard error above the bar; errors are printed even when quiet.
    pub fn error(&self, line: &str) {
        let line = crate::output::printable(line);
        self.bar.suspend(|| eprintln!("{line}"));
    }

    /// Prints a line on standard error above the bar, unless quiet.
    pub fn note(&self, line: &str) {
        if !self.quiet {
            self.error(line);
        }
    }

    /// Removes the bar, leaving the terminal to the summary.
    pub fn finish(&self) {
        self.bar.finish_and_clear();
    }
}
