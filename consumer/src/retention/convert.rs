//! Turning the unpartitioned `messages` table of a live system into a partitioned one, without copying a
//! row and without holding a lock for longer than a few catalog changes take.
//!
//! The table becomes the first partition, `messages_legacy`, covering everything before a cutoff two
//! periods ahead (rows keep going to it until then), and is dropped whole once that cutoff is past
//! retention. The steps, each resumed by the next round if it stops:
//! 1. a unique index on (`id`, `received_at`), built concurrently: the partitioned table's key;
//! 2. a `CHECK (received_at < cutoff)` added `NOT VALID` and then validated, which reads the table but
//!    blocks no reader or writer, so that attaching it needs no scan;
//! 3. in one short transaction: the table's key becomes that index, the table is renamed, the
//!    partitioned `messages` is created with the same columns, defaults, checks and indexes, the old table
//!    attached, and a default partition added.
//!
//! Releases before this one insert with `ON CONFLICT (id)`, which a partitioned table cannot take: once
//! converted, they cannot store (docs/upgrades.md).

use chrono::{DateTime, Utc};
use sqlx::{Connection, PgConnection};

use super::partitions::{self, Width};
use crate::migrations;

/// The indexes of `messages` other than its key: the partitioned table gets the same ones.
const INDEXES: &[(&str, &str)] = &[
    ("messages_newest_first", "(received_at DESC, id DESC)"),
    (
        "messages_by_sender_newest_first",
        "(sender, received_at DESC, id DESC)",
    ),
    ("messages_feed", "(xid NULLS FIRST, id)"),
    ("messages_feed_by_sender", "(sender, xid NULLS FIRST, id)"),
];

/// Converts `messages` if it is not partitioned yet. Returns whether this call finished a conversion.
pub(super) async fn partition(
    connection: &mut PgConnection,
    now: DateTime<Utc>,
    width: Width,
) -> anyhow::Result<bool> {
    if partitions::is_partitioned(connection).await? {
        return Ok(false);
    }
    tracing::info!("RETENTION is set and messages is not partitioned: converting it");
    migrations::drop_invalid_indexes(connection).await?;
    sqlx::query(
        "CREATE UNIQUE INDEX CONCURRENTLY IF NOT EXISTS messages_id_received_at \
         ON messages (id, received_at)",
    )
    .execute(&mut *connection)
    .await?;
    let cutoff = cutoff(connection, now, width).await?;
    let mut transaction = connection.begin().await?;
    let cutoff_text = cutoff.to_rfc3339();
    let mut steps = vec![
        "ALTER TABLE messages DROP CONSTRAINT messages_pkey".to_owned(),
        "ALTER TABLE messages ADD CONSTRAINT messages_legacy_pkey PRIMARY KEY \
         USING INDEX messages_id_received_at"
            .to_owned(),
        "ALTER TABLE messages RENAME TO messages_legacy".to_owned(),
    ];
    for (name, _) in INDEXES {
        steps.push(format!(
            "ALTER INDEX IF EXISTS {name} RENAME TO {}",
            name.replacen("messages_", "messages_legacy_", 1)
        ));
    }
    steps.extend([
        "CREATE TABLE messages (LIKE messages_legacy INCLUDING DEFAULTS INCLUDING CONSTRAINTS) \
         PARTITION BY RANGE (received_at)"
            .to_owned(),
        "ALTER TABLE messages DROP CONSTRAINT messages_before_partitions".to_owned(),
        "ALTER TABLE messages ADD CONSTRAINT messages_pkey PRIMARY KEY (id, received_at)"
            .to_owned(),
    ]);
    for (name, columns) in INDEXES {
        steps.push(format!("CREATE INDEX {name} ON messages {columns}"));
    }
    steps.extend([
        format!(
            "ALTER TABLE messages ATTACH PARTITION messages_legacy \
             FOR VALUES FROM (MINVALUE) TO ('{cutoff_text}')"
        ),
        "CREATE TABLE messages_default PARTITION OF messages DEFAULT".to_owned(),
    ]);
    for step in steps {
        sqlx::query(&step).execute(&mut *transaction).await?;
    }
    transaction.commit().await?;
    tracing::info!(%cutoff, "messages is partitioned by received_at; the rows before the cutoff are messages_legacy");
    Ok(true)
}

/// The cutoff of the table that predates partitioning: that of a check an earlier round validated if it
/// is still at least a period ahead, else a new one two periods ahead, added and validated.
async fn cutoff(
    connection: &mut PgConnection,
    now: DateTime<Utc>,
    width: Width,
) -> anyhow::Result<DateTime<Utc>> {
    let existing: Option<(Option<DateTime<Utc>>, bool)> = sqlx::query_as(
        "SELECT (regexp_match(pg_get_constraintdef(oid), '''([^'']+)'''))[1]::timestamptz, convalidated \
         FROM pg_constraint \
         WHERE conrelid = 'messages'::regclass AND conname = 'messages_before_partitions'",
    )
    .fetch_optional(&mut *connection)
    .await?;
    if let Some((Some(cutoff), validated)) = existing {
        if cutoff >= now + width.delta() {
            if !validated {
                sqlx::query("ALTER TABLE messages VALIDATE CONSTRAINT messages_before_partitions")
                    .execute(&mut *connection)
                    .await?;
            }
            return Ok(cutoff);
        }
    }
    if existing.is_some() {
        sqlx::query("ALTER TABLE messages DROP CONSTRAINT messages_before_partitions")
            .execute(&mut *connection)
            .await?;
    }
    let cutoff = width.start_of(now) + width.delta() * 2;
    sqlx::query(&format!(
        "ALTER TABLE messages ADD CONSTRAINT messages_before_partitions \
         CHECK (received_at < '{}') NOT VALID",
        cutoff.to_rfc3339()
    ))
    .execute(&mut *connection)
    .await?;
    sqlx::query("ALTER TABLE messages VALIDATE CONSTRAINT messages_before_partitions")
        .execute(&mut *connection)
        .await?;
    Ok(cutoff)
}
