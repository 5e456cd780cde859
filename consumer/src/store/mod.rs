//! The `messages` table: batched idempotent inserts for ingestion, and the reads behind the HTTP API
//! (the newest-first pages here, the feed in [`feed`]).

mod feed;

pub use feed::{feed_query, FeedCursor, FeedRequest, Phase};

use futures::TryStreamExt;
use std::net::IpAddr;
use tokio::sync::watch;

use chrono::{DateTime, Utc};
use common::QueuedMessage;
use serde::Serialize;
use serde_json::value::RawValue;
use sqlx::{PgPool, Postgres, QueryBuilder};
use uuid::Uuid;

/// Stores a batch in one statement, each id once:
/// - a message without an `Idempotency-Key` is skipped when its row is there, by the table's key: its
///   copies (redeliveries, republishing, replays) carry its first `received_at`, so they meet in one
///   partition even when the table is partitioned by it;
/// - a keyed message first claims its id in `message_keys` for this hour and the next. A retry of it has
///   a new `received_at`, which a partitioned table's key does not catch, so it is stored only if it won
///   both claims (no insert of that id is running or ran within the hour) and no row has its id. Two
///   inserts running at once always share an hour, so the second waits for the first's claim and loses.
///
/// Within the batch the first copy of an id wins.
const INSERT: &str = "\
    WITH batch AS ( \
        SELECT * FROM UNNEST($1::uuid[], $2::text[], $3::text[], $4::text[], $5::inet[], \
                             $6::smallint[], $7::timestamptz[], $8::text[]) \
             WITH ORDINALITY \
             AS batch(id, sender, ts, attributes, ip, priority, received_at, fingerprint, n) \
    ), first AS ( \
        SELECT DISTINCT ON (id) * FROM batch ORDER BY id, n \
    ), claimed AS ( \
        INSERT INTO message_keys (id, period) \
        SELECT first.id, floor(extract(epoch FROM now()) / 3600)::bigint + step \
        FROM first, generate_series(0, 1) AS step \
        WHERE first.fingerprint IS NOT NULL \
        ON CONFLICT DO NOTHING \
        RETURNING id \
    ) \
    INSERT INTO messages \
        (id, sender, ts, message_attributes, sent_from_ip, priority, received_at, fingerprint) \
    SELECT id, sender, ts, attributes::json, ip, priority, received_at, fingerprint FROM first \
    WHERE fingerprint IS NULL \
       OR (id IN (SELECT id FROM claimed GROUP BY id HAVING count(*) = 2) \
           AND NOT EXISTS (SELECT 1 FROM messages stored WHERE stored.id = first.id)) \
    ON CONFLICT DO NOTHING \
    RETURNING id";

/// Columns in the order every read selects them.
const COLUMNS: &str =
    "id, sender, ts, message_attributes, sent_from_ip, priority, received_at, stored_at";

/// A message as stored, served by the HTTP API with the contract's field names.
#[derive(Debug, Clone, Serialize, sqlx::FromRow)]
pub(crate) struct StoredMessage {
    pub id: Uuid,
    pub sender: String,
    pub ts: Option<String>,
    /// The JSON text that was sent, served as PostgreSQL returns it from its `json` column: never parsed
    /// into floats and back, so every number keeps its exact value and spelling.
    #[serde(rename = "messageAttributes")]
    #[sqlx(json)]
    pub message_attributes: Box<RawValue>,
    pub sent_from_ip: Option<IpAddr>,
    pub priority: i16,
    pub received_at: DateTime<Utc>,
    pub stored_at: DateTime<Utc>,
}

/// Where a page of messages starts and what it keeps.
#[derive(Debug, Clone, Default)]
pub struct PageRequest {
    /// Keep only this sender's messages.
    pub sender: Option<String>,
    /// Continue after this message, newest first.
    pub after: Option<Cursor>,
    /// Rows to return.
    pub limit: u32,
}

/// A position in the newest-first order: the sort key of the last message of a page.
#[derive(Debug, Clone, Copy)]
pub struct Cursor {
    pub received_at: DateTime<Utc>,
    pub id: Uuid,
}

/// What an insert did: rows that were new, and the messages that reuse a stored id for other content.
#[derive(Debug, Default)]
pub struct Inserted {
    pub new: u64,
    /// Indexes of messages whose `Idempotency-Key` names a stored message with other content.
    pub conflicting: Vec<usize>,
}

/// Why the store could not do what was asked. Knows nothing of HTTP: [`crate::error`] gives each its
/// status, and ingestion decides from it whether to retry, split or dead-letter.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// An insert did not finish within `DB_WRITE_TIMEOUT_MS`; its connection was closed.
    #[error("the write did not finish within {0:?}; its connection is closed")]
    WriteTimedOut(std::time::Duration),
    /// What PostgreSQL or sqlx reported.
    #[error(transparent)]
    Database(#[from] sqlx::Error),
}

impl StoreError {
    /// Whether the data itself was refused (bad value, constraint, too large), so that retrying the
    /// same rows cannot help: SQLSTATE classes 22 (data exceptions), 23 (integrity constraints) and 54
    /// (program limits), or a value that would not encode. Anything else is about the database, and
    /// passes.
    pub(crate) fn refused(&self) -> bool {
        match self {
            Self::Database(sqlx::Error::Database(db)) => {
                matches!(
                    db.code().as_deref().map(|code| &code[..2]),
                    Some("22" | "23" | "54")
                )
            }
            Self::Database(
                sqlx::Error::Encode(_) | sqlx::Error::ColumnDecode { .. } | sqlx::Error::Decode(_),
            ) => true,
            _ => false,
        }
    }

    /// Whether PostgreSQL cancelled the statement (SQLSTATE 57014), as it does at `statement_timeout`:
    /// the batch took too long, which a smaller batch may not, so it is split rather than retried whole.
    pub(crate) fn is_statement_timeout(&self) -> bool {
        matches!(self, Self::Database(sqlx::Error::Database(db)) if db.code().as_deref() == Some("57014"))
    }

    /// Whether a row that was stored could not be read back: the store's fault, not the database's
    /// availability.
    pub(crate) fn is_unreadable_row(&self) -> bool {
        matches!(
            self,
            Self::Database(
                sqlx::Error::ColumnDecode { .. }
                    | sqlx::Error::Decode(_)
                    | sqlx::Error::ColumnNotFound(_)
            )
        )
    }
}

/// Whether `error` leaves its connection unfit for more writes, so that it must be closed rather than
/// returned to the pool: a read-only server (25006, as a standby is during a failover), a backend shut
/// down by an administrator or a crash (57P01, 57P02, 57P03), a broken connection (class 08) or I/O.
/// A pooled connection to a server that became read-only would otherwise keep failing long after a
/// writable primary answers at the same address.
pub fn poisons_connection(error: &sqlx::Error) -> bool {
    match error {
        sqlx::Error::Database(db) => db.code().is_some_and(|code| {
            matches!(code.as_ref(), "25006" | "57P01" | "57P02" | "57P03") || code.starts_with("08")
        }),
        sqlx::Error::Io(_) | sqlx::Error::Tls(_) | sqlx::Error::Protocol(_) => true,
        _ => false,
    }
}

/// Access to the `messages` table.
#[derive(Clone)]
pub struct MessageStore {
    pool: PgPool,
    /// The pool `GET /message` reads from: separate, so that readers can never take the connections
    /// ingestion needs (and a statement timeout of its own bounds every read).
    reads: PgPool,
    write_timeout: std::time::Duration,
    /// Marked each time an insert here stores new rows, so that feed readers of this process look again
    /// at once rather than at their next poll.
    commits: std::sync::Arc<watch::Sender<()>>,
}

impl MessageStore {
    /// `write_timeout` bounds every insert: past it the connection is closed and the write reported
    /// failed, so a database that hangs (a lock, a partition) never holds a batch for the operating
    /// system's TCP timeout.
    pub fn new(pool: PgPool, write_timeout: std::time::Duration) -> Self {
        Self {
            reads: pool.clone(),
            pool,
            write_timeout,
            commits: std::sync::Arc::new(watch::channel(()).0),
        }
    }

    /// Reads from `reads` instead of the ingestion pool.
    pub(crate) fn with_read_pool(mut self, reads: PgPool) -> Self {
        self.reads = reads;
        self
    }

    /// Marked each time an insert of this store commits new rows.
    pub(crate) fn commits(&self) -> watch::Receiver<()> {
        self.commits.subscribe()
    }

    /// The pool reads use.
    pub(crate) fn read_pool(&self) -> &PgPool {
        &self.reads
    }

    /// Stores `messages` as `MessageStore::insert_on` does, on a pooled connection, within the write
    /// timeout. A connection that timed out or failed in a way that [`poisons_connection`] is closed
    /// instead of going back to the pool.
    pub async fn insert(&self, messages: &[QueuedMessage]) -> Result<Inserted, StoreError> {
        let mut connection = self.pool.acquire().await?;
        match tokio::time::timeout(
            self.write_timeout,
            Self::insert_on(&mut connection, messages),
        )
        .await
        {
            Ok(Ok(inserted)) => {
                if inserted.new > 0 {
                    self.commits.send_replace(());
                }
                Ok(inserted)
            }
            Ok(Err(error)) => {
                if poisons_connection(&error) {
                    tracing::warn!(error = %error, "closing a database connection that cannot write");
                    connection.close_on_drop();
                }
                Err(error.into())
            }
            Err(_) => {
                connection.close_on_drop();
                Err(StoreError::WriteTimedOut(self.write_timeout))
            }
        }
    }

    /// Whether the table takes writes now: an insert of no row, which needs the lock every insert
    /// takes but fires no trigger and checks no value. One that passes while a message keeps timing
    /// out shows the message, not the database, is what is slow.
    pub(crate) async fn writable(&self) -> bool {
        let probe = sqlx::query("INSERT INTO messages SELECT * FROM messages WHERE false")
            .execute(&self.pool);
        matches!(
            tokio::time::timeout(self.write_timeout, probe).await,
            Ok(Ok(_))
        )
    }

    pub fn pool(&self) -> &PgPool {
        &self.pool
    }

    /// Inserts every message in one statement and one transaction on `connection` ([`INSERT`]); ids
    /// already stored are skipped, so a redelivered or retried message is stored once, partitions or not. Returns how many rows were new, and which
    /// messages (by index) carry a fingerprint that differs from the row already stored under their id:
    /// an `Idempotency-Key` reused for another message, which must not pass for a retry.
    #[tracing::instrument(name = "insert batch", skip_all, fields(count = messages.len()))]
    pub(crate) async fn insert_on(
        connection: &mut sqlx::PgConnection,
        messages: &[QueuedMessage],
    ) -> Result<Inserted, sqlx::Error> {
        let mut ids = Vec::with_capacity(messages.len());
        let mut senders = Vec::with_capacity(messages.len());
        let mut timestamps = Vec::with_capacity(messages.len());
        let mut attributes = Vec::with_capacity(messages.len());
        let mut ips = Vec::with_capacity(messages.len());
        let mut priorities = Vec::with_capacity(messages.len());
        let mut received = Vec::with_capacity(messages.len());
        let mut fingerprints = Vec::with_capacity(messages.len());
        for queued in messages {
            let message = &queued.message;
            ids.push(queued.id);
            senders.push(message.sender().as_str());
            timestamps.push(message.ts().map(|ts| ts.as_str()));
            // The text as the client sent it, borrowed: PostgreSQL checks it is JSON and keeps it as is.
            attributes.push(message.attributes().as_json());
            ips.push(message.sent_from_ip());
            priorities.push(i16::from(message.priority().value()));
            received.push(queued.received_at);
            fingerprints.push(queued.fingerprint.as_deref());
        }
        let inserted: Vec<Uuid> = sqlx::query_scalar(INSERT)
            .bind(&ids)
            .bind(&senders)
            .bind(&timestamps)
            .bind(&attributes)
            .bind(&ips)
            .bind(&priorities)
            .bind(&received)
            .bind(&fingerprints)
            .fetch_all(&mut *connection)
            .await?;
        let new = inserted.len() as u64;
        // Every keyed message is compared with the row that holds its id, new or not: a batch may hold
        // several copies of one id, of which only the first was inserted.
        let keyed: Vec<Uuid> = messages
            .iter()
            .filter(|m| m.fingerprint.is_some())
            .map(|m| m.id)
            .collect();
        let mut conflicting = Vec::new();
        if !keyed.is_empty() {
            let stored: Vec<(Uuid, Option<String>)> =
                sqlx::query_as("SELECT id, fingerprint FROM messages WHERE id = ANY($1)")
                    .bind(&keyed)
                    .fetch_all(&mut *connection)
                    .await?;
            let stored: std::collections::HashMap<Uuid, Option<String>> =
                stored.into_iter().collect();
            for (index, message) in messages.iter().enumerate() {
                // A row stored without a fingerprint predates them: it cannot be compared, so it counts
                // as the same message.
                if let (Some(mine), Some(Some(theirs))) =
                    (&message.fingerprint, stored.get(&message.id))
                {
                    if mine != theirs {
                        conflicting.push(index);
                    }
                }
            }
        }
        Ok(Inserted { new, conflicting })
    }

    /// One message by id.
    pub(crate) async fn find(&self, id: Uuid) -> Result<Option<StoredMessage>, StoreError> {
        Ok(
            sqlx::query_as(&format!("SELECT {COLUMNS} FROM messages WHERE id = $1"))
                .bind(id)
                .fetch_optional(&self.reads)
                .await?,
        )
    }

    /// The position of a message in the newest-first order, to continue a page after it.
    pub(crate) async fn cursor_of(&self, id: Uuid) -> Result<Option<Cursor>, StoreError> {
        let row: Option<(DateTime<Utc>, Uuid)> =
            sqlx::query_as("SELECT received_at, id FROM messages WHERE id = $1")
                .bind(id)
                .fetch_optional(&self.reads)
                .await?;
        Ok(row.map(|(received_at, id)| Cursor { received_at, id }))
    }

    /// A page of messages, newest first by (`received_at`, `id`). Keyset pagination: each page is the
    /// rows strictly after the cursor, so rows inserted meanwhile never shift what later pages return.
    ///
    /// Rows are read one at a time, and the page ends before the row that would take its attributes past
    /// `max_bytes` (it always holds at least one row): memory is set by the configuration, not by how
    /// large the stored messages are. Returns the rows and whether more follow them.
    pub(crate) async fn page(
        &self,
        request: &PageRequest,
        max_bytes: usize,
    ) -> Result<(Vec<StoredMessage>, bool), StoreError> {
        let limit = usize::try_from(request.limit).unwrap_or(usize::MAX);
        let mut query = page_query(request, request.limit.saturating_add(1));
        let mut rows = query.build_query_as::<StoredMessage>().fetch(&self.reads);
        let (mut page, mut bytes) = (Vec::new(), 0);
        while let Some(row) = rows.try_next().await? {
            let size = row.message_attributes.get().len() + row.sender.len();
            if page.len() == limit || (!page.is_empty() && bytes + size > max_bytes) {
                return Ok((page, true));
            }
            bytes += size;
            page.push(row);
        }
        Ok((page, false))
    }
}

/// The SQL of `MessageStore::page`, reading at most `rows`; one text per combination of filters, so
/// each gets its own plan.
pub fn page_query(request: &PageRequest, rows: u32) -> QueryBuilder<'_, Postgres> {
    let mut query = QueryBuilder::new(format!("SELECT {COLUMNS} FROM messages WHERE TRUE"));
    if let Some(sender) = &request.sender {
        query.push(" AND sender = ").push_bind(sender);
    }
    if let Some(cursor) = request.after {
        query
            .push(" AND (received_at, id) < (")
            .push_bind(cursor.received_at)
            .push(", ")
            .push_bind(cursor.id)
            .push(")");
    }
    query
        .push(" ORDER BY received_at DESC, id DESC LIMIT ")
        .push_bind(i64::from(rows));
    query
}
