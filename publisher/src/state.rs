//! What every request handler of the publisher can reach, in a module of its own so that the routes
//! and the start-up that builds it do not import each other.

use std::sync::Arc;

use crate::{body::InflightBytes, broker::Broker, config::BodyConfig, metrics::Metrics};

/// What every request handler can reach.
pub(crate) struct AppState {
    pub broker: Arc<Broker>,
    pub metrics: Arc<Metrics>,
    /// What a request body may be.
    pub body: BodyConfig,
    /// The cap on request bytes held at once, shared by every worker.
    pub inflight: InflightBytes,
}
