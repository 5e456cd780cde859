//! What every request handler of the consumer can reach, in a module of its own so that the routes and
//! the start-up that builds it do not import each other.

use std::{sync::Arc, time::Duration};

use crate::{
    config::ReadConfig, dead_letters::DeadLetterQueue, feed::Feed, metrics::Metrics,
    monitor::Board, status::PeerStatus, store::MessageStore,
};

/// What every request handler can reach.
pub(crate) struct AppState {
    pub store: MessageStore,
    pub status: Arc<PeerStatus>,
    pub metrics: Arc<Metrics>,
    /// `<QUEUE_NAME>.dead`, for the admin routes.
    pub dead_letters: DeadLetterQueue,
    /// The queue watch's figures, for the worker monitor.
    pub board: Arc<Board>,
    /// A write running longer than this makes the consumer unready.
    pub stuck_write: Duration,
    /// How pages of `GET /message` are bounded and linked.
    pub reads: ReadConfig,
    /// The followers of `GET /message/feed`.
    pub feed: Feed,
}
