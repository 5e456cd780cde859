//! The feed's reads: stored messages in commit order, where a row committed later always comes after
//! every row already served.
//!
//! Why not `received_at`, `stored_at` or a sequence: each is assigned before the row's transaction
//! commits, so a reader can pass a position whose row is still uncommitted and never look back at it.
//! Each row records instead the transaction that stored it (`xid`, a `xid8` defaulting to
//! `pg_current_xact_id()`), and a read serves only rows of transactions older than the oldest one still
//! running (`pg_snapshot_xmin(pg_current_snapshot())`, of the read's own snapshot): every such
//! transaction has ended, and every transaction that ends later has a larger id. Rows are served by
//! (`xid`, `id`), so the last row served is a cursor that nothing committed later can fall behind.
//!
//! Rows stored before the column existed have no `xid`; they were all committed before it was added,
//! and are served first, by `id`.

use std::{fmt, str::FromStr};

use futures::TryStreamExt;
use sqlx::{Postgres, QueryBuilder};
use uuid::Uuid;

use super::{MessageStore, StoreError, StoredMessage, COLUMNS};

/// A position in the feed: the last message served, or the start.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum FeedCursor {
    /// Before every retained message.
    #[default]
    Start,
    /// After the row `id` among those stored before transaction ids were recorded.
    Legacy(Uuid),
    /// After the row (`xid`, `id`).
    At { xid: u64, id: Uuid },
}

/// Shown as the `after` value of a feed link: `0` for the start, else `<xid>-<id>` (`0-<id>` for rows
/// without an `xid`). Clients treat it as opaque.
impl fmt::Display for FeedCursor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Start => f.write_str("0"),
            Self::Legacy(id) => write!(f, "0-{}", id.simple()),
            Self::At { xid, id } => write!(f, "{xid}-{}", id.simple()),
        }
    }
}

/// A cursor that this service did not write.
#[derive(Debug, thiserror::Error)]
#[error("not a feed cursor: use the after= value of a feed link, or an event's id")]
pub struct InvalidCursor;

impl FromStr for FeedCursor {
    type Err = InvalidCursor;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        if text == "0" {
            return Ok(Self::Start);
        }
        let (xid, id) = text.split_once('-').ok_or(InvalidCursor)?;
        // Digits only: `u64::from_str` also takes a leading `+`, which would give one cursor two spellings.
        if xid.is_empty() || xid.len() > 20 || !xid.bytes().all(|b| b.is_ascii_digit()) {
            return Err(InvalidCursor);
        }
        let xid: u64 = xid.parse().map_err(|_| InvalidCursor)?;
        if id.len() != 32 {
            return Err(InvalidCursor);
        }
        let id = Uuid::try_parse(id).map_err(|_| InvalidCursor)?;
        Ok(if xid == 0 {
            Self::Legacy(id)
        } else {
            Self::At { xid, id }
        })
    }
}

/// What a feed read asks for.
#[derive(Debug, Clone)]
pub struct FeedRequest {
    /// Continue after this position.
    pub after: FeedCursor,
    /// Keep only this sender's messages.
    pub sender: Option<String>,
    /// Rows to return at most.
    pub limit: u32,
}

/// A page of the feed: the rows, and the cursor to continue from (the request's when no row came).
#[derive(Debug)]
pub struct FeedPage {
    pub messages: Vec<(FeedCursor, StoredMessage)>,
    pub next: FeedCursor,
}

/// A stored message with the transaction that stored it (as text: sqlx has no `xid8` type).
#[derive(sqlx::FromRow)]
struct FeedRow {
    #[sqlx(flatten)]
    message: StoredMessage,
    /// Named apart from the column: an output column called `xid` would be what `ORDER BY xid` sorts,
    /// as text.
    feed_xid: Option<String>,
}

impl MessageStore {
    /// A cursor after every row stored before now (of `sender`, if given): the last row the read's
    /// snapshot sees, in feed order (a row without an `xid` only when no row has one). One backward scan
    /// of `messages_feed` (or `messages_feed_by_sender`) that stops at its first row.
    ///
    /// Why every row the snapshot sees, and not only those the feed serves now: a row whose transaction
    /// ended after an older one still running (in any database on the server) is stored but not yet
    /// served, and would be served to a client that asked to skip it. Why a row, and not the snapshot's
    /// `xmax`: a row's commit is on disk (and on a synchronous standby), so no transaction begun after a
    /// crash or a failover can be given a smaller id; the last id a server completed may be an aborted
    /// or asynchronous one that it forgets. Rows of transactions older than that row and still running
    /// at the request are skipped too: they were being stored as the request came.
    pub(crate) async fn feed_end(&self, sender: Option<&str>) -> Result<FeedCursor, StoreError> {
        // Named apart from the column, as in `FeedRow`: an output column `xid` would be what `ORDER BY
        // xid` sorts, as text (`9` after `10`) and by a sort of every row.
        let mut query =
            QueryBuilder::<Postgres>::new("SELECT xid::text AS feed_xid, id FROM messages");
        if let Some(sender) = sender {
            query.push(" WHERE sender = ").push_bind(sender);
        }
        query.push(" ORDER BY xid DESC NULLS LAST, id DESC LIMIT 1");
        let last: Option<(Option<String>, Uuid)> =
            query.build_query_as().fetch_optional(&self.reads).await?;
        last.map_or(Ok(FeedCursor::Start), |(xid, id)| row_cursor(xid, id))
    }

    /// The rows after `request.after` in feed order that every reader will see in the same place,
    /// reading at most `max_bytes` of senders and attributes (at least one row): first those without an
    /// `xid`, then those of ended transactions.
    pub(crate) async fn feed_page(
        &self,
        request: &FeedRequest,
        max_bytes: usize,
    ) -> Result<FeedPage, StoreError> {
        let limit = usize::try_from(request.limit).unwrap_or(usize::MAX);
        let mut page = FeedPage {
            messages: Vec::new(),
            next: request.after,
        };
        let mut bytes = 0;
        let phases: &[Phase] = match request.after {
            FeedCursor::Start | FeedCursor::Legacy(_) => &[Phase::Legacy, Phase::Committed],
            FeedCursor::At { .. } => &[Phase::Committed],
        };
        for &phase in phases {
            let cursor = page.next;
            let left = limit - page.messages.len();
            let mut query = feed_query(phase, cursor, request.sender.as_deref(), left);
            let mut rows = query.build_query_as::<FeedRow>().fetch(&self.reads);
            let mut read = 0;
            while let Some(row) = rows.try_next().await? {
                read += 1;
                let size = row.message.message_attributes.get().len() + row.message.sender.len();
                if !page.messages.is_empty() && bytes + size > max_bytes {
                    return Ok(page);
                }
                bytes += size;
                let position = row_cursor(row.feed_xid, row.message.id)?;
                page.next = position;
                page.messages.push((position, row.message));
            }
            if read == left {
                // The page is full: the next phase starts on the next page.
                break;
            }
        }
        Ok(page)
    }
}

/// The cursor of a row: its (`xid`, `id`), or its `id` alone if it was stored before `xid`s were
/// recorded.
fn row_cursor(xid: Option<String>, id: Uuid) -> Result<FeedCursor, StoreError> {
    Ok(match xid {
        None => FeedCursor::Legacy(id),
        Some(xid) => FeedCursor::At {
            xid: parse_xid(&xid)?,
            id,
        },
    })
}

/// A transaction id read as text (sqlx has no `xid8` type).
fn parse_xid(text: &str) -> Result<u64, StoreError> {
    text.parse().map_err(|_| {
        StoreError::Database(sqlx::Error::Decode(
            format!("xid {text:?} is not a number").into(),
        ))
    })
}

/// The two parts of the feed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// Rows stored before transaction ids were recorded, by `id`.
    Legacy,
    /// Rows of transactions older than every one still running, by (`xid`, `id`).
    Committed,
}

/// The SQL of one phase of a feed page after `cursor`, reading at most `rows`: each walks
/// `messages_feed` (or `messages_feed_by_sender`) in its order from the cursor, and stops at the limit.
pub fn feed_query(
    phase: Phase,
    cursor: FeedCursor,
    sender: Option<&str>,
    rows: usize,
) -> QueryBuilder<'_, Postgres> {
    let mut query = QueryBuilder::new(format!(
        "SELECT {COLUMNS}, xid::text AS feed_xid FROM messages WHERE "
    ));
    match phase {
        Phase::Legacy => {
            query.push("xid IS NULL");
            if let FeedCursor::Legacy(id) = cursor {
                query.push(" AND id > ").push_bind(id);
            }
        }
        Phase::Committed => {
            query.push("xid < pg_snapshot_xmin(pg_current_snapshot())");
            if let FeedCursor::At { xid, id } = cursor {
                query
                    .push(" AND (xid, id) > (")
                    .push_bind(xid.to_string())
                    .push("::xid8, ")
                    .push_bind(id)
                    .push(")");
            }
        }
    }
    if let Some(sender) = sender {
        query.push(" AND sender = ").push_bind(sender);
    }
    query
        .push(" ORDER BY xid NULLS FIRST, id LIMIT ")
        .push_bind(i64::try_from(rows).unwrap_or(i64::MAX));
    query
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_cursor_reads_back_as_itself_and_nothing_else_is_a_cursor() {
        let id = Uuid::now_v7();
        for cursor in [
            FeedCursor::Start,
            FeedCursor::Legacy(id),
            FeedCursor::At { xid: 1, id },
            FeedCursor::At { xid: u64::MAX, id },
        ] {
            assert_eq!(cursor.to_string().parse::<FeedCursor>().unwrap(), cursor);
        }
        let simple = id.simple().to_string();
        for bad in [
            String::new(),
            "00".into(),
            "-".into(),
            format!("-{simple}"),
            format!("+5-{simple}"),
            format!("5-{id}"),
            format!("5-{}", &simple[1..]),
            format!("18446744073709551616-{simple}"),
            format!("5 -{simple}"),
            "5-".into(),
        ] {
            assert!(bad.parse::<FeedCursor>().is_err(), "{bad:?}");
        }
    }
}
