//! Pacing of retries against a peer (broker or database) that is down.

use std::time::Duration;

use backon::{BackoffBuilder, ExponentialBuilder};

/// Delays between reconnection attempts: from 100 ms doubling up to 2 s, jittered so that many
/// replicas do not hammer a peer that has just come back, and never giving up.
pub fn reconnect_delays() -> impl Iterator<Item = Duration> + Send {
    ExponentialBuilder::default()
        .with_min_delay(Duration::from_millis(100))
        .with_max_delay(Duration::from_secs(2))
        .with_jitter()
        .without_max_times()
        .build()
}
