//! The partitions themselves: which exist and what they cover (read from the catalog, never from their
//! names), making the ones ahead, and dropping the ones behind.

use chrono::{DateTime, DurationRound, TimeDelta, Utc};
use sqlx::PgConnection;

/// How much of `received_at` one partition of `messages` covers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Width {
    Hour,
    Day,
}

impl Width {
    /// Days, unless rows are kept less than two days: then hours, so that retention drops at most an
    /// hour more than it must.
    pub(crate) fn for_retention(kept: Option<std::time::Duration>) -> Self {
        match kept {
            Some(kept) if kept < std::time::Duration::from_secs(48 * 3600) => Self::Hour,
            _ => Self::Day,
        }
    }

    pub(crate) fn delta(self) -> TimeDelta {
        match self {
            Self::Hour => TimeDelta::hours(1),
            Self::Day => TimeDelta::days(1),
        }
    }

    /// The start of the period that holds `at`.
    pub(crate) fn start_of(self, at: DateTime<Utc>) -> DateTime<Utc> {
        at.duration_trunc(self.delta())
            .expect("a time within range")
    }
}

/// A partition of `messages`, as the catalog describes it.
#[derive(Debug, sqlx::FromRow)]
struct Partition {
    name: String,
    /// `None`: from `MINVALUE`.
    lower: Option<DateTime<Utc>>,
    /// `None`: the default partition.
    upper: Option<DateTime<Utc>>,
}

/// Every partition of `messages` but the default one, from the oldest.
async fn partitions(connection: &mut PgConnection) -> Result<Vec<Partition>, sqlx::Error> {
    sqlx::query_as(
        "SELECT c.relname AS name, \
                (regexp_match(pg_get_expr(c.relpartbound, c.oid), 'FROM \\(''([^'']+)''\\)'))[1]::timestamptz AS lower, \
                (regexp_match(pg_get_expr(c.relpartbound, c.oid), 'TO \\(''([^'']+)''\\)'))[1]::timestamptz AS upper \
         FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid \
         WHERE i.inhparent = 'messages'::regclass AND pg_get_expr(c.relpartbound, c.oid) <> 'DEFAULT' \
         ORDER BY upper",
    )
    .fetch_all(connection)
    .await
}

/// Whether `messages` is partitioned.
pub(crate) async fn is_partitioned(connection: &mut PgConnection) -> Result<bool, sqlx::Error> {
    sqlx::query_scalar("SELECT relkind = 'p' FROM pg_class WHERE oid = 'messages'::regclass")
        .fetch_one(connection)
        .await
}

/// The name of the partition covering `[lower, upper)`.
fn name_of(lower: DateTime<Utc>, upper: DateTime<Utc>) -> String {
    format!(
        "messages_{}_{}",
        lower.format("%Y%m%d%H"),
        upper.format("%Y%m%d%H")
    )
}

/// Makes a partition for each of the current period and the `ahead` after it, where no partition covers
/// it yet. Partitions follow each other without gaps: one starts where the newest ends, so a period partly
/// covered (after the width changed, or by the table that predates partitioning) gets the rest of it.
/// Returns how many were made.
pub(crate) async fn make_ahead(
    connection: &mut PgConnection,
    now: DateTime<Utc>,
    width: Width,
    ahead: i32,
) -> anyhow::Result<usize> {
    let existing = partitions(connection).await?;
    let mut covered_until = existing.iter().filter_map(|p| p.upper).max();
    let mut made = 0;
    let first = width.start_of(now);
    for step in 0..=ahead {
        let period_end = first + width.delta() * (step + 1);
        // From where the newest partition ends: a period partly covered gets the rest of it, and a gap
        // (the service was down for longer than the partitions ahead) is closed.
        let lower = match covered_until {
            Some(until) if until >= period_end => continue,
            Some(until) => until,
            None => first + width.delta() * step,
        };
        covered_until = Some(period_end);
        let sql = format!(
            "CREATE TABLE IF NOT EXISTS {} PARTITION OF messages FOR VALUES FROM ('{}') TO ('{}')",
            name_of(lower, period_end),
            lower.to_rfc3339(),
            period_end.to_rfc3339()
        );
        match sqlx::query(&sql).execute(&mut *connection).await {
            Ok(_) => made += 1,
            // Rows of that range wait in the default partition (their time was far ahead when stored): the
            // range stays there, and is reported, rather than stopping the rest of the round.
            Err(sqlx::Error::Database(db)) if db.code().as_deref() == Some("23514") => {
                tracing::warn!(
                    from = %lower,
                    to = %period_end,
                    "rows of this range are in messages_default; not partitioning it"
                );
            }
            Err(error) => return Err(error.into()),
        }
    }
    Ok(made)
}

/// Drops every partition whose rows are all older than `horizon`. Returns how many.
pub(crate) async fn drop_before(
    connection: &mut PgConnection,
    horizon: DateTime<Utc>,
) -> anyhow::Result<usize> {
    let mut dropped = 0;
    for partition in partitions(connection).await? {
        if partition.upper.is_some_and(|upper| upper <= horizon) {
            sqlx::query(&format!("DROP TABLE IF EXISTS \"{}\"", partition.name))
                .execute(&mut *connection)
                .await?;
            tracing::info!(partition = %partition.name, lower = ?partition.lower, "dropped a partition past RETENTION");
            dropped += 1;
        }
    }
    Ok(dropped)
}

/// Deletes the rows of the default partition older than `horizon`: messages stored with a time that no
/// partition covered (older than the oldest one kept). Few, so deleted row by row.
pub(crate) async fn delete_stragglers(
    connection: &mut PgConnection,
    horizon: DateTime<Utc>,
) -> anyhow::Result<u64> {
    let deleted = sqlx::query("DELETE FROM messages_default WHERE received_at < $1")
        .bind(horizon)
        .execute(connection)
        .await?;
    Ok(deleted.rows_affected())
}

/// The partitions of `messages`, and those of them past retention by more than an hour (what
/// maintenance should have dropped already).
pub(crate) async fn census(
    connection: &mut PgConnection,
    kept: Option<std::time::Duration>,
    now: DateTime<Utc>,
) -> anyhow::Result<(i64, i64)> {
    let all = partitions(connection).await?;
    let expired = match kept {
        None => 0,
        Some(kept) => {
            let late = now - TimeDelta::from_std(kept)? - TimeDelta::hours(1);
            all.iter()
                .filter(|p| p.upper.is_some_and(|upper| upper <= late))
                .count()
        }
    };
    Ok((all.len() as i64, expired as i64))
}

/// The hour number (since the Unix epoch) that holds `at`, as inserts claim keys.
fn hour_of(at: DateTime<Utc>) -> i64 {
    at.timestamp().div_euclid(3600)
}

/// Makes `message_keys` partitions for the hours from two after the current one to `ahead` after it (the
/// current and next hours may already hold claims in the default partition), and drops those of hours
/// before the previous one, with their stragglers in the default partition: claims are only needed while
/// the inserts that made them run. Hours are the database's, as the claims'.
pub(crate) async fn keep_key_hours(
    connection: &mut PgConnection,
    ahead: i64,
) -> anyhow::Result<()> {
    // The database's clock, which the inserts' claims use.
    let now: DateTime<Utc> = sqlx::query_scalar("SELECT now()")
        .fetch_one(&mut *connection)
        .await?;
    let hour = hour_of(now);
    for next in hour + 2..=hour + ahead.max(2) {
        let made = sqlx::query(&format!(
            "CREATE TABLE IF NOT EXISTS message_keys_{next} PARTITION OF message_keys \
             FOR VALUES FROM ({next}) TO ({})",
            next + 1
        ))
        .execute(&mut *connection)
        .await;
        match made {
            Ok(_) => {}
            // Claims of that hour are in the default partition already (the database's clock is ahead of
            // this pod's): they stay there, and are deleted with the other stragglers.
            Err(sqlx::Error::Database(db)) if db.code().as_deref() == Some("23514") => {}
            Err(error) => return Err(error.into()),
        }
    }
    let old: Vec<String> = sqlx::query_scalar(
        "SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid \
         WHERE i.inhparent = 'message_keys'::regclass \
           AND pg_get_expr(c.relpartbound, c.oid) <> 'DEFAULT' \
           AND (regexp_match(pg_get_expr(c.relpartbound, c.oid), 'TO \\(''?([0-9]+)''?\\)'))[1]::bigint <= $1",
    )
    .bind(hour - 1)
    .fetch_all(&mut *connection)
    .await?;
    for name in old {
        sqlx::query(&format!("DROP TABLE IF EXISTS \"{name}\""))
            .execute(&mut *connection)
            .await?;
    }
    sqlx::query("DELETE FROM message_keys_default WHERE period < $1")
        .bind(hour - 1)
        .execute(&mut *connection)
        .await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn periods_start_on_whole_hours_and_days_and_the_width_follows_retention() {
        let at: DateTime<Utc> = "2026-12-07T13:45:12Z".parse().unwrap();
        assert_eq!(
            Width::Hour.start_of(at),
            "2026-12-07T13:00:00Z".parse::<DateTime<Utc>>().unwrap()
        );
        assert_eq!(
            Width::Day.start_of(at),
            "2026-12-07T00:00:00Z".parse::<DateTime<Utc>>().unwrap()
        );
        let hours = |h: u64| Some(std::time::Duration::from_secs(h * 3600));
        assert_eq!(Width::for_retention(hours(12)), Width::Hour);
        assert_eq!(Width::for_retention(hours(47)), Width::Hour);
        assert_eq!(Width::for_retention(hours(48)), Width::Day);
        assert_eq!(Width::for_retention(None), Width::Day);
        assert_eq!(hour_of(at), at.timestamp() / 3600);
    }
}
