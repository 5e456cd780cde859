//! Pacing of retries against a peer (broker or database) that is down.

use std::time::Duration;

use backon::{BackoffBuilder, ExponentialBackoff, ExponentialBuilder};

/// The longest pause between two attempts.
const MAX_DELAY: Duration = Duration::from_secs(2);

/// Delays between reconnection attempts: from 100 ms doubling up to 2 s, jittered so that many
/// replicas do not hammer a peer that has just come back, and never giving up. Start a new one to
/// begin again from 100 ms.
pub struct Backoff(ExponentialBackoff);

impl Backoff {
    pub fn new() -> Self {
        Self(
            ExponentialBuilder::default()
                .with_min_delay(Duration::from_millis(100))
                .with_max_delay(MAX_DELAY)
                .with_jitter()
                .without_max_times()
                .build(),
        )
    }

    /// How long to wait before the next attempt.
    pub fn next_delay(&mut self) -> Duration {
        // Without a maximum number of attempts the sequence never ends; the fallback only names the cap.
        self.0.next().unwrap_or(MAX_DELAY)
    }
}

impl Default for Backoff {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delays_grow_but_stay_under_the_cap_however_many_attempts() {
        let mut backoff = Backoff::new();
        let delays: Vec<Duration> = (0..50).map(|_| backoff.next_delay()).collect();
        assert!(delays[0] < Duration::from_millis(250), "{:?}", delays[0]);
        assert!(delays.iter().all(|d| *d <= MAX_DELAY * 2), "{delays:?}");
        assert!(delays[49] >= Duration::from_secs(1), "{:?}", delays[49]);
    }
}
