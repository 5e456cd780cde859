//! The `messages` table: batched idempotent inserts for ingestion, and the reads behind the HTTP API.

use std::net::IpAddr;

use chrono::{DateTime, Utc};
use common::QueuedMessage;
use serde::Serialize;
use serde_json::value::RawValue;
use sqlx::{types::Json, PgPool, Postgres, QueryBuilder};
use uuid::Uuid;

/// Columns in the order every read selects them.
const COLUMNS: &str =
    "id, sender, ts, message_attributes, sent_from_ip, priority, received_at, stored_at";

/// A message as stored, served by the HTTP API with the contract's field names.
#[derive(Debug, Clone, Serialize, sqlx::FromRow)]
pub struct StoredMessage {
    pub id: Uuid,
    pub sender: String,
    pub ts: Option<String>,
    /// Served as PostgreSQL returns it, never parsed into floats and back: `jsonb` keeps numbers exactly,
    /// and a number at the edge of `f64` must not turn one row (and every page holding it) into an error.
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

/// How a database failure should be handled.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FailureKind {
    /// The data itself was refused (bad value, constraint, too large): retrying cannot help.
    Refused,
    /// The database is unreachable or busy: retry later.
    Transient,
}

/// Sorts a failure into [`FailureKind`] by SQLSTATE class: data exceptions (22), integrity constraint
/// violations (23) and program limits (54) are about the row; anything else is about the database.
pub fn classify(error: &sqlx::Error) -> FailureKind {
    match error {
        sqlx::Error::Database(db) => match db.code().as_deref().map(|code| &code[..2]) {
            Some("22" | "23" | "54") => FailureKind::Refused,
            _ => FailureKind::Transient,
        },
        sqlx::Error::Encode(_) | sqlx::Error::ColumnDecode { .. } | sqlx::Error::Decode(_) => {
            FailureKind::Refused
        }
        _ => FailureKind::Transient,
    }
}

/// Access to the `messages` table.
#[derive(Clone)]
pub struct MessageStore {
    pool: PgPool,
}

impl MessageStore {
    pub fn new(pool: PgPool) -> Self {
        Self { pool }
    }

    pub fn pool(&self) -> &PgPool {
        &self.pool
    }

    /// Inserts every message in one statement and one transaction; ids already stored are skipped, so a
    /// redelivered message is stored once. Returns how many rows were new.
    #[tracing::instrument(name = "insert batch", skip_all, fields(count = messages.len()))]
    pub async fn insert(&self, messages: &[QueuedMessage]) -> Result<u64, sqlx::Error> {
        let mut ids = Vec::with_capacity(messages.len());
        let mut senders = Vec::with_capacity(messages.len());
        let mut timestamps = Vec::with_capacity(messages.len());
        let mut attributes = Vec::with_capacity(messages.len());
        let mut ips = Vec::with_capacity(messages.len());
        let mut priorities = Vec::with_capacity(messages.len());
        let mut received = Vec::with_capacity(messages.len());
        for queued in messages {
            let message = &queued.message;
            ids.push(queued.id);
            senders.push(message.sender().as_str());
            timestamps.push(message.ts().map(|ts| ts.as_str()));
            // Serialised straight from the message: no copy of the attributes per row.
            attributes.push(Json(message.attributes()));
            ips.push(message.sent_from_ip());
            priorities.push(i16::from(message.priority().value()));
            received.push(queued.received_at);
        }
        let result = sqlx::query(
            "INSERT INTO messages \
                 (id, sender, ts, message_attributes, sent_from_ip, priority, received_at) \
             SELECT * FROM UNNEST($1::uuid[], $2::text[], $3::text[], $4::jsonb[], $5::inet[], \
                                  $6::smallint[], $7::timestamptz[]) \
             ON CONFLICT (id) DO NOTHING",
        )
        .bind(&ids)
        .bind(&senders)
        .bind(&timestamps)
        .bind(&attributes)
        .bind(&ips)
        .bind(&priorities)
        .bind(&received)
        .execute(&self.pool)
        .await?;
        Ok(result.rows_affected())
    }

    /// One message by id.
    pub async fn find(&self, id: Uuid) -> Result<Option<StoredMessage>, sqlx::Error> {
        sqlx::query_as(&format!("SELECT {COLUMNS} FROM messages WHERE id = $1"))
            .bind(id)
            .fetch_optional(&self.pool)
            .await
    }

    /// The position of a message in the newest-first order, to continue a page after it.
    pub async fn cursor_of(&self, id: Uuid) -> Result<Option<Cursor>, sqlx::Error> {
        let row: Option<(DateTime<Utc>, Uuid)> =
            sqlx::query_as("SELECT received_at, id FROM messages WHERE id = $1")
                .bind(id)
                .fetch_optional(&self.pool)
                .await?;
        Ok(row.map(|(received_at, id)| Cursor { received_at, id }))
    }

    /// A page of messages, newest first by (`received_at`, `id`). Keyset pagination: each page is the
    /// rows strictly after the cursor, so rows inserted meanwhile never shift what later pages return.
    pub async fn page(&self, request: &PageRequest) -> Result<Vec<StoredMessage>, sqlx::Error> {
        let mut query = page_query(request);
        query.build_query_as().fetch_all(&self.pool).await
    }
}

/// The SQL of [`MessageStore::page`]; one text per combination of filters, so each gets its own plan.
pub fn page_query(request: &PageRequest) -> QueryBuilder<'_, Postgres> {
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
        .push_bind(i64::from(request.limit));
    query
}
