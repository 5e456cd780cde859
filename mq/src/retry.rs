//! When to try a request again and how long to wait first: exponential backoff with jitter, or the
//! service's own `Retry-After` when it sends one.

use std::{future::Future, time::Duration};

use crate::client::Failure;

/// First wait after a failure.
const FIRST: Duration = Duration::from_millis(200);
/// Longest wait between two tries: a service back after an outage is noticed within this.
const LONGEST: Duration = Duration::from_secs(10);

/// Waits that double from [`FIRST`] up to [`LONGEST`], each shortened by a random part of up to a
/// quarter so that many clients cut off at once do not come back in step.
#[derive(Debug, Default)]
pub struct Backoff {
    failures: u32,
}

impl Backoff {
    /// How long to wait after one more failure. A `Retry-After` the service sent wins: it knows when it
    /// expects to take requests again (bounded by [`LONGEST`] so a wrong header cannot stall us).
    pub fn next(&mut self, retry_after: Option<Duration>) -> Duration {
        self.failures = self.failures.saturating_add(1);
        if let Some(wait) = retry_after {
            return wait.min(LONGEST);
        }
        let doubled = FIRST.saturating_mul(1 << (self.failures - 1).min(16));
        let wait = doubled.min(LONGEST);
        let jitter = wait.mul_f64(random_fraction() / 4.0);
        wait - jitter
    }
}

/// A number in `[0, 1)` that differs between processes and calls; UUIDv4 already draws from the
/// operating system's generator, so no random crate is needed for jitter.
fn random_fraction() -> f64 {
    (uuid::Uuid::new_v4().as_u128() as u64 >> 11) as f64 / (1u64 << 53) as f64
}

/// Runs `attempt` until it succeeds, fails in a way a retry cannot fix, or has been tried `tries`
/// times (`None`: for ever). `on_retry` hears of each failure that may be retried and the wait before
/// the next try, and says whether to make it (`false` gives up with that failure).
pub async fn retrying<T, F, Fut>(
    tries: Option<u32>,
    mut attempt: F,
    mut on_retry: impl FnMut(&Failure, Duration) -> bool,
) -> Result<T, Failure>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, Failure>>,
{
    let mut backoff = Backoff::default();
    let mut tried = 0u32;
    loop {
        tried += 1;
        match attempt().await {
            Ok(value) => return Ok(value),
            Err(failure) if failure.is_transient() && tries.is_none_or(|n| tried < n) => {
                let wait = backoff.next(failure.retry_after());
                if !on_retry(&failure, wait) {
                    return Err(failure);
                }
                tokio::time::sleep(wait).await;
            }
            Err(failure) => return Err(failure),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn waits_double_up_to_the_cap_and_retry_after_wins() {
        let mut backoff = Backoff::default();
        let first = backoff.next(None);
        assert!(first <= FIRST && first >= FIRST.mul_f64(0.75), "{first:?}");
        let second = backoff.next(None);
        assert!(second <= FIRST * 2 && second >= (FIRST * 2).mul_f64(0.75));
        for _ in 0..20 {
            assert!(backoff.next(None) <= LONGEST);
        }
        assert_eq!(
            backoff.next(Some(Duration::from_secs(3))),
            Duration::from_secs(3)
        );
        assert_eq!(backoff.next(Some(Duration::from_secs(3600))), LONGEST);
    }
}
