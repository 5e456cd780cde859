//! Storing a batch that PostgreSQL cancelled at its statement timeout: the same batch would run into
//! the same timeout for ever, so it is stored in halves, and halves of the halves that time out again,
//! down to single messages.
//!
//! A timeout is the message's fault only while the database is working: while a write is committed
//! meanwhile, or the table takes an empty insert. A message that times out on its own while the
//! database works is tried a few more times with backoff, then dead-lettered with the reason. When
//! the database holds every write (a lock), the batch goes back to the outer retry unacknowledged,
//! and is not split further.

use std::time::Instant;

use common::{backoff::Backoff, QueuedMessage};
use futures::{future::BoxFuture, FutureExt};

use super::storing::Writer;
use crate::store::StoreError;

/// How many times a message that times out on its own is tried before it is dead-lettered.
const ALONE_ATTEMPTS: u32 = 3;

impl Writer {
    /// Stores `messages`, which together ran into the statement timeout, half by half. Returns the
    /// indexes (into `messages`) to dead-letter, with the reason, as the other ways of storing do.
    /// `since` is when the timeout was first seen.
    pub(super) fn store_split<'a>(
        &'a self,
        messages: &'a [QueuedMessage],
        since: Instant,
    ) -> BoxFuture<'a, Result<Vec<(usize, String)>, StoreError>> {
        async move {
            if messages.len() == 1 {
                return self.store_alone(&messages[0], since).await;
            }
            let (left, right) = messages.split_at(messages.len() / 2);
            let mut refused = Vec::new();
            let mut timed_out = Vec::new();
            for (half, offset) in [(left, 0), (right, left.len())] {
                let outcome = match self.insert(half).await {
                    Ok(conflicts) => conflicts,
                    Err(error) if error.is_statement_timeout() => {
                        timed_out.push((half, offset, error));
                        continue;
                    }
                    Err(error) if error.refused() => self.store_one_by_one(half).await?,
                    Err(error) => return Err(error),
                };
                refused.extend(shifted(outcome, offset));
            }
            // Both halves timing out while nothing is committed is a database that holds every write
            // (a lock): splitting further would only wait out more timeouts.
            if timed_out.len() == 2 && !self.database_stores(since).await {
                let (_, _, error) = timed_out.pop().expect("two halves");
                return Err(error);
            }
            for (half, offset, _) in timed_out {
                refused.extend(shifted(self.store_split(half, since).await?, offset));
            }
            Ok(refused)
        }
        .boxed()
    }

    /// Stores one message that timed out in every batch it was in.
    async fn store_alone(
        &self,
        message: &QueuedMessage,
        since: Instant,
    ) -> Result<Vec<(usize, String)>, StoreError> {
        let mut backoff = Backoff::new();
        let mut attempts = 0;
        loop {
            attempts += 1;
            let error = match self.insert(std::slice::from_ref(message)).await {
                Ok(conflicts) => return Ok(conflicts),
                Err(error) if error.refused() => {
                    tracing::warn!(id = %message.id, error = %error, "the database refused a message; dead-lettering");
                    return Ok(vec![(0, format!("refused by PostgreSQL: {error}"))]);
                }
                Err(error) if error.is_statement_timeout() => error,
                Err(error) => return Err(error),
            };
            if attempts >= ALONE_ATTEMPTS {
                if !self.database_stores(since).await {
                    // Nothing else is committed either: the database, not this message, is slow.
                    return Err(error);
                }
                tracing::warn!(id = %message.id, error = %error, attempts, "a message alone keeps running into the statement timeout; dead-lettering");
                return Ok(vec![(
                    0,
                    format!(
                        "storing it alone ran into PostgreSQL's statement timeout \
                         (DB_STATEMENT_TIMEOUT_MS) {attempts} times while other messages were \
                         stored: {error}"
                    ),
                )]);
            }
            tokio::time::sleep(backoff.next_delay()).await;
        }
    }
}

impl Writer {
    /// Whether the database stores while these messages time out: a write committed since `since`, or
    /// the table taking a write now.
    async fn database_stores(&self, since: Instant) -> bool {
        self.status.stored_since(since) || self.store.writable().await
    }
}

/// `refused`, with its indexes moved by `offset`.
fn shifted(refused: Vec<(usize, String)>, offset: usize) -> impl Iterator<Item = (usize, String)> {
    refused
        .into_iter()
        .map(move |(index, reason)| (offset + index, reason))
}
