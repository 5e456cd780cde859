//! The worker monitor: `GET /` serves one self-contained page (no external assets, no build step) and
//! `GET /monitor/status` the figures it shows, kept here by the queue watch: each queue's backlog,
//! consumers, writers and rates, the dead letters, and the latest scaling decisions. The latest messages
//! come from `GET /message`, with the page's sender filter.

use std::{collections::VecDeque, sync::Mutex};

use actix_web::{web, HttpResponse};
use chrono::{DateTime, Utc};
use serde::Serialize;

use crate::state::AppState;

/// The page, inline CSS and script included.
const PAGE: &str = include_str!("monitor.html");

/// How many scaling decisions the page can show.
const RECENT_DECISIONS: usize = 20;

/// One drained queue, as of the last look.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub(crate) struct QueueFigures {
    pub queue: String,
    pub ready: u64,
    /// Held by this process, not yet settled.
    pub unacknowledged: u64,
    pub consumers: u64,
    pub writers: usize,
    pub drain_per_second: f64,
    pub inflow_per_second: f64,
}

/// A change of a queue's writer count.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub(crate) struct DecisionRecord {
    pub at: DateTime<Utc>,
    pub queue: String,
    pub from: usize,
    pub to: usize,
    pub reason: &'static str,
    pub backlog: u64,
}

/// What the page shows, as `GET /monitor/status` returns it.
#[derive(Debug, Clone, Default, Serialize)]
pub(crate) struct Snapshot {
    /// When the queues were last looked at; `None` before the first look.
    pub looked_at: Option<DateTime<Utc>>,
    pub queues: Vec<QueueFigures>,
    /// Messages in the dead-letter queue.
    pub dead_letters: Option<u64>,
    /// Newest first.
    pub decisions: VecDeque<DecisionRecord>,
    /// Rows this process has inserted since it started (`consumer_messages_stored_total`).
    pub stored_total: u64,
}

/// The figures the queue watch keeps for the page.
#[derive(Debug, Default)]
pub(crate) struct Board {
    snapshot: Mutex<Snapshot>,
}

impl Board {
    /// The queues as just looked at, and the dead-letter depth if it could be read.
    pub(crate) fn update_queues(&self, queues: Vec<QueueFigures>, dead_letters: Option<u64>) {
        let mut snapshot = self.snapshot.lock().expect("board lock poisoned");
        snapshot.looked_at = Some(Utc::now());
        snapshot.queues = queues;
        if dead_letters.is_some() {
            snapshot.dead_letters = dead_letters;
        }
    }

    /// Keeps a writer-count change, dropping the oldest beyond [`RECENT_DECISIONS`].
    pub(crate) fn record(&self, decision: DecisionRecord) {
        let mut snapshot = self.snapshot.lock().expect("board lock poisoned");
        snapshot.decisions.push_front(decision);
        snapshot.decisions.truncate(RECENT_DECISIONS);
    }

    fn snapshot(&self) -> Snapshot {
        self.snapshot.lock().expect("board lock poisoned").clone()
    }
}

/// `GET /`: the worker monitor page.
pub(crate) async fn page() -> HttpResponse {
    HttpResponse::Ok()
        .content_type("text/html; charset=utf-8")
        // The page runs its own inline script and reaches this service only.
        .insert_header((
            "Content-Security-Policy",
            "default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; \
             connect-src 'self'; img-src 'self' data:; base-uri 'none'; form-action 'none'",
        ))
        .insert_header(("X-Content-Type-Options", "nosniff"))
        .body(PAGE)
}

/// `GET /monitor/status`: what the page shows, as JSON.
pub(crate) async fn status(state: web::Data<AppState>) -> HttpResponse {
    let mut snapshot = state.board.snapshot();
    snapshot.stored_total = state.metrics.messages_stored.get();
    HttpResponse::Ok()
        .insert_header(("Cache-Control", "no-store"))
        .json(snapshot)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decision(to: usize) -> DecisionRecord {
        DecisionRecord {
            at: Utc::now(),
            queue: "q".into(),
            from: 1,
            to,
            reason: "drain_slower_than_target",
            backlog: 10,
        }
    }

    #[test]
    fn the_board_keeps_the_latest_decisions_newest_first() {
        let board = Board::default();
        for to in 0..30 {
            board.record(decision(to));
        }
        let decisions = board.snapshot().decisions;
        assert_eq!(decisions.len(), RECENT_DECISIONS);
        assert_eq!(decisions[0].to, 29);
    }

    #[test]
    fn a_failed_dead_letter_count_keeps_the_last_one() {
        let board = Board::default();
        board.update_queues(Vec::new(), Some(3));
        board.update_queues(Vec::new(), None);
        assert_eq!(board.snapshot().dead_letters, Some(3));
    }

    #[test]
    fn the_page_loads_nothing_from_elsewhere() {
        for outside in ["http://", "https://", "//cdn", "src=\"http"] {
            assert!(!PAGE.contains(outside), "the page refers to {outside}");
        }
        assert!(
            !PAGE.contains("innerHTML"),
            "text is set as text, never as markup"
        );
    }
}
