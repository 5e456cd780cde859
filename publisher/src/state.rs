//! What every request handler of the publisher can reach, in a module of its own so that the routes
//! and the start-up that builds it do not import each other.

use std::{sync::Arc, time::Duration};

use crate::{body::InflightBytes, broker::Broker, metrics::Metrics};

/// What every request handler can reach.
pub struct AppState {
    pub broker: Arc<Broker>,
    pub metrics: Arc<Metrics>,
    pub max_message_bytes: usize,
    pub max_batch_messages: usize,
    pub max_batch_bytes: usize,
    pub body_timeout: Duration,
    /// `MAX_JSON_DEPTH`: deepest nesting a message may hold.
    pub max_json_depth: usize,
    /// The cap on request bytes held at once, shared by every worker.
    pub inflight: InflightBytes,
}
