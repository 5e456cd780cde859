//! Pacing of retries against a peer (broker or database) that is down, and the one loop that retries.

use std::{
    fmt::Display,
    future::Future,
    time::{Duration, Instant},
};

use backon::{BackoffBuilder, ExponentialBackoff, ExponentialBuilder};

/// The longest pause between two attempts.
const MAX_DELAY: Duration = Duration::from_secs(2);
/// An attempt that ran this long before failing found its peer healthy for a while: the next wait starts
/// again from the shortest delay.
const HEALTHY_ATTEMPT: Duration = Duration::from_secs(10);

/// Delays between reconnection attempts: from 100 ms doubling up to 2 s, jittered so that many
/// replicas do not hammer a peer that has just come back, and never giving up. Start a new one to
/// begin again from 100 ms.
pub struct Backoff(ExponentialBackoff);

impl Backoff {
    pub fn new() -> Self {
        Self::starting_at(Duration::from_millis(100))
    }

    /// Delays from `first` doubling up to 2 s, jittered, for retries that are worth making sooner.
    pub fn starting_at(first: Duration) -> Self {
        Self(
            ExponentialBuilder::default()
                .with_min_delay(first)
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

/// Calls `attempt` until it succeeds or fails in a way `is_final` says no retry can cure, waiting a
/// [`Backoff`] delay between attempts and logging each failure as `what`, with its cause chain and the
/// delay. `cancelled` ends the waiting, never an attempt in progress (each attempt decides itself what
/// to finish first): then the answer is `None`.
pub async fn retry<T, E, Fut>(
    what: &str,
    cancelled: impl Future<Output = ()>,
    mut attempt: impl FnMut() -> Fut,
    is_final: impl Fn(&E) -> bool,
) -> Option<Result<T, E>>
where
    E: Display,
    Fut: Future<Output = Result<T, E>>,
{
    tokio::pin!(cancelled);
    let mut backoff = Backoff::new();
    loop {
        let started = Instant::now();
        let error = match attempt().await {
            Ok(value) => return Some(Ok(value)),
            Err(error) if is_final(&error) => return Some(Err(error)),
            Err(error) => error,
        };
        if started.elapsed() >= HEALTHY_ATTEMPT {
            backoff = Backoff::new();
        }
        let delay = backoff.next_delay();
        tracing::warn!(error = format!("{error:#}"), retry_in = ?delay, "{what}");
        tokio::select! {
            () = &mut cancelled => return None,
            () = tokio::time::sleep(delay) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn retry_goes_on_until_success_stops_at_a_final_error_and_at_cancellation() {
        let mut calls = 0;
        let succeeded = retry(
            "t",
            std::future::pending(),
            || {
                calls += 1;
                let n = calls;
                async move {
                    if n < 4 {
                        Err(n)
                    } else {
                        Ok(n)
                    }
                }
            },
            |_| false,
        )
        .await;
        assert_eq!(succeeded, Some(Ok(4)));

        let stopped = retry(
            "t",
            std::future::pending(),
            || async { Err::<(), _>("no") },
            |e| *e == "no",
        )
        .await;
        assert_eq!(stopped, Some(Err("no")));

        let cancelled = retry(
            "t",
            tokio::time::sleep(Duration::from_secs(5)),
            || async { Err::<(), _>("down") },
            |_| false,
        )
        .await;
        assert_eq!(cancelled, None);
    }

    #[test]
    fn delays_grow_but_stay_under_the_cap_however_many_attempts() {
        let mut backoff = Backoff::new();
        let delays: Vec<Duration> = (0..50).map(|_| backoff.next_delay()).collect();
        assert!(delays[0] < Duration::from_millis(250), "{:?}", delays[0]);
        assert!(delays.iter().all(|d| *d <= MAX_DELAY * 2), "{delays:?}");
        assert!(delays[49] >= Duration::from_secs(1), "{:?}", delays[49]);
    }
}
