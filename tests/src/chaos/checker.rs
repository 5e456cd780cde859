//! The exactly-once check: every message answered 202 is a row, no attempt is a row twice (a keyed
//! client's retries included), and no row comes from nowhere. Rows are matched to attempts by the nonce
//! each message carries, so an unkeyed request whose answer was lost is still recognised when stored.

use std::collections::{HashMap, HashSet};

use sqlx::postgres::PgPoolOptions;
use uuid::Uuid;

use super::clients::Record;

#[derive(Debug, Default)]
pub struct Outcome {
    pub stored: usize,
    /// Stored, though never answered 202 (the answer was lost or the outcome was unknown): allowed.
    pub stored_unanswered: usize,
    /// Answered 202 and not stored.
    pub lost: usize,
    /// Rows beyond the first for one attempt.
    pub doubled: usize,
    /// Rows of no attempt, or with another id than the one the attempt was given.
    pub stray: usize,
}

impl Outcome {
    pub fn exact(&self) -> bool {
        self.lost == 0 && self.doubled == 0 && self.stray == 0
    }
}

/// Every row of the `messages` table of `url`: its id and its nonce.
pub async fn rows(url: &str) -> anyhow::Result<Vec<(Uuid, Option<String>)>> {
    let pool = PgPoolOptions::new().max_connections(1).connect(url).await?;
    let rows = sqlx::query_as("SELECT id, message_attributes->>'nonce' FROM messages")
        .fetch_all(&pool)
        .await?;
    pool.close().await;
    Ok(rows)
}

/// Every row's place in the feed: the transaction that stored it, then its id.
pub async fn feed_order(url: &str) -> anyhow::Result<HashMap<Uuid, (u64, Uuid)>> {
    let pool = PgPoolOptions::new().max_connections(1).connect(url).await?;
    let rows: Vec<(Uuid, String)> = sqlx::query_as("SELECT id, xid::text FROM messages")
        .fetch_all(&pool)
        .await?;
    pool.close().await;
    rows.into_iter()
        .map(|(id, xid)| Ok((id, (xid.parse()?, id))))
        .collect()
}

pub fn check(record: &Record, rows: &[(Uuid, Option<String>)]) -> Outcome {
    let mut outcome = Outcome {
        stored: rows.len(),
        ..Outcome::default()
    };
    let mut seen: HashMap<&str, u32> = HashMap::new();
    for (id, nonce) in rows {
        let Some((nonce, given)) = nonce
            .as_deref()
            .and_then(|n| record.attempts.get_key_value(n))
        else {
            outcome.stray += 1;
            continue;
        };
        let times = seen.entry(nonce).or_default();
        *times += 1;
        if *times > 1 {
            outcome.doubled += 1;
        }
        let answered = record.accepted.get(nonce);
        if given
            .or(answered.copied())
            .is_some_and(|expected| expected != *id)
        {
            outcome.stray += 1;
        }
        if answered.is_none() {
            outcome.stored_unanswered += 1;
        }
    }
    let stored: HashSet<Uuid> = rows.iter().map(|(id, _)| *id).collect();
    outcome.lost = record
        .accepted
        .values()
        .filter(|id| !stored.contains(id))
        .count();
    outcome
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_lost_a_doubled_and_a_stray_row_are_each_counted() {
        let (a, b, c) = (Uuid::new_v4(), Uuid::new_v4(), Uuid::new_v4());
        let mut record = Record::default();
        record.attempts.insert("k1".into(), Some(a));
        record.attempts.insert("u1".into(), None);
        record.attempts.insert("u2".into(), None);
        record.accepted.insert("k1".into(), a);
        record.accepted.insert("u2".into(), c);
        let rows = vec![
            (a, Some("k1".into())),
            (b, Some("u1".into())),
            (Uuid::new_v4(), Some("u1".into())),
            (Uuid::new_v4(), Some("never".into())),
        ];
        let outcome = check(&record, &rows);
        assert_eq!((outcome.lost, outcome.doubled, outcome.stray), (1, 1, 1));
        assert_eq!(outcome.stored_unanswered, 2);
    }
}
