//! `RETENTION`: the table partitioned by `received_at`, partitions made ahead and dropped whole once past
//! retention, a keyed message stored once whatever partition its retries land in, and reads that stay
//! index scans.

use std::time::Duration;

use chrono::{DateTime, TimeDelta, Utc};
use common::{model::fingerprint, Message, QueuedMessage};
use consumer::{feed_query, maintenance_round, page_query, FeedCursor, FeedPhase, PageRequest};
use end_to_end::{eventually, spawn_consumer, StackConfig, TestStack};
use serde_json::json;
use uuid::Uuid;

/// A maintenance round as of `now`, again until it is this one that holds the lock (the service's own
/// rounds take it too).
async fn round(config: &consumer::Config, now: DateTime<Utc>) -> consumer::MaintenanceRound {
    eventually(Duration::from_secs(30), "a maintenance round", || async {
        let round = maintenance_round(config, now).await.unwrap();
        round.ran.then_some(round)
    })
    .await
}

async fn partitioned(stack: &TestStack) {
    eventually(
        Duration::from_secs(60),
        "messages to be partitioned",
        || async {
            let kind: String = sqlx::query_scalar(
                "SELECT relkind::text FROM pg_class WHERE oid = 'messages'::regclass",
            )
            .fetch_one(&stack.db)
            .await
            .unwrap();
            (kind == "p").then_some(())
        },
    )
    .await;
}

/// A keyed message, and copies of it as a client's retries reach the queue: the same id and content,
/// each with its own `received_at`.
fn keyed_copies(id: Uuid, times: &[DateTime<Utc>]) -> Vec<QueuedMessage> {
    let message: Message =
        serde_json::from_value(json!({"sender": "retrying", "messageAttributes": {"n": 1}}))
            .unwrap();
    times
        .iter()
        .map(|&received_at| QueuedMessage {
            id,
            received_at,
            fingerprint: Some(fingerprint(&message)),
            message: message.clone(),
        })
        .collect()
}

/// Retries of keyed messages whose `received_at` fall in five different hourly partitions (the table's
/// key, which holds `received_at`, does not catch them), delivered all at once to two consumer processes
/// of four batch writers each: every message is stored once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_keyed_message_is_stored_once_whatever_partitions_its_retries_fall_in() {
    // Arrange
    let mut config = StackConfig::unique();
    config.consumer.retention.retention = "12h".into();
    config.consumer.scaling.writers_min = 4;
    config.consumer.scaling.writers_max = 4;
    config.consumer.ingest.batch_size = 5;
    config.consumer.ingest.prefetch = 5;
    let stack = TestStack::start_with(config).await;
    partitioned(&stack).await;
    let second = spawn_consumer(&stack.consumer_config);
    stack.wait_ready(&second.url).await;
    let now = Utc::now();
    let hours: Vec<DateTime<Utc>> = (-2..3).map(|h| now + TimeDelta::hours(h)).collect();
    let ids: Vec<Uuid> = (0..40).map(|_| Uuid::now_v7()).collect();

    // Act: each message five times over, interleaved so that copies land in concurrent batches.
    for round in 0..hours.len() {
        for id in &ids {
            let copy = &keyed_copies(*id, &hours)[round];
            stack.publish_raw(&copy.to_payload()).await;
        }
    }
    let copies = (ids.len() * hours.len()) as f64;
    let consumers = [stack.consumer_url().to_owned(), second.url.clone()];
    eventually(
        Duration::from_secs(60),
        "every copy to be handled",
        || async {
            let mut handled = 0.0;
            for url in &consumers {
                handled += stack.metric(url, "consumer_messages_stored_total").await;
                handled += stack.metric(url, "consumer_messages_duplicate_total").await;
            }
            (handled >= copies).then_some(())
        },
    )
    .await;
    let partitions: i64 = sqlx::query_scalar(
        "SELECT count(DISTINCT tableoid) FROM messages WHERE sender = 'retrying'",
    )
    .fetch_one(&stack.db)
    .await
    .unwrap();
    drop(second);

    // Assert
    assert_eq!(stack.rows_for(&ids).await, (40, 40));
    assert!(partitions >= 1, "no row stored");
}

/// Partitions are made ahead as time passes, without a gap even when the width changes between
/// restarts (hours for `RETENTION=12h`, then days for `2d`), so no row lands in the default partition;
/// those past retention are dropped whole, and the rows inside them with them; reads of the
/// partitioned table stay index scans.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn partitions_are_made_ahead_dropped_whole_past_retention_and_read_through_indexes() {
    // Arrange
    let stack = TestStack::start().await;
    let mut config = stack.consumer_config.clone();
    let start: DateTime<Utc> = Utc::now() - TimeDelta::days(4);
    config.retention.retention = "12h".into();
    let first = round(&config, start).await;
    config.retention.retention = "2d".into();
    let mut rounds = Vec::new();
    // A day's rounds, then a row every 10 seconds of that day, as time passes: 34,561 rows over four days
    // (enough that a page is cheaper read through an index than sorted).
    for day in 0..=4 {
        rounds.push(round(&config, start + TimeDelta::days(day)).await);
        sqlx::query(
            "INSERT INTO messages (id, sender, received_at) \
             SELECT gen_random_uuid(), 'sender-' || (n % 7), $1 + n * interval '10 seconds' \
             FROM generate_series($2, $3) AS n",
        )
        .bind(start)
        .bind(day as i32 * 8640)
        .bind((day as i32 * 8640 + 8639).min(34_560))
        .execute(&stack.db)
        .await
        .unwrap();
    }
    let in_default: i64 = sqlx::query_scalar("SELECT count(*) FROM messages_default")
        .fetch_one(&stack.db)
        .await
        .unwrap();
    sqlx::query("ANALYZE messages")
        .execute(&stack.db)
        .await
        .unwrap();
    let plans = [
        page_query(
            &PageRequest {
                sender: None,
                after: None,
                limit: 101,
            },
            101,
        )
        .sql()
        .to_owned(),
        feed_query(FeedPhase::Committed, FeedCursor::Start, None, 101)
            .sql()
            .to_owned(),
    ];
    let mut explained = Vec::new();
    for sql in plans {
        let plan = sqlx::query_scalar::<_, String>(&format!("EXPLAIN {sql}"))
            .bind(101_i64)
            .fetch_all(&stack.db)
            .await
            .unwrap()
            .join("\n");
        explained.push(plan);
    }

    // Act: two days later, with 2d kept.
    let now = start + TimeDelta::days(6);
    let last = round(&config, now).await;
    let (oldest, rows): (Option<DateTime<Utc>>, i64) =
        sqlx::query_as("SELECT min(received_at), count(*) FROM messages")
            .fetch_one(&stack.db)
            .await
            .unwrap();

    // Assert
    assert!(first.converted && first.ran, "{first:?}");
    assert!(rounds.iter().all(|r| r.ran && !r.converted), "{rounds:?}");
    let listing: Vec<(String, String)> = sqlx::query_as(
        "SELECT c.relname::text, pg_get_expr(c.relpartbound, c.oid) FROM pg_inherits i \
         JOIN pg_class c ON c.oid = i.inhrelid WHERE i.inhparent = 'messages'::regclass ORDER BY 1",
    )
    .fetch_all(&stack.db)
    .await
    .unwrap();
    assert_eq!(
        in_default, 0,
        "rows fell outside the partitions made: {listing:#?}"
    );
    for plan in &explained {
        println!("{plan}\n");
        // Every partition that holds rows is read through its index, in order, and nothing sorts the
        // merged rows; an empty partition may be scanned whole, which reads nothing.
        assert!(
            plan.contains("Merge Append") && plan.contains("Index Scan"),
            "{plan}"
        );
        assert!(
            !plan.lines().nth(1).unwrap_or("").contains("Sort"),
            "{plan}"
        );
        for line in plan.lines().filter(|line| line.contains("Seq Scan on ")) {
            let table = line
                .split("Seq Scan on ")
                .nth(1)
                .unwrap()
                .split(' ')
                .next()
                .unwrap();
            let rows: i64 = sqlx::query_scalar(&format!("SELECT count(*) FROM {table}"))
                .fetch_one(&stack.db)
                .await
                .unwrap();
            assert_eq!(rows, 0, "{table} holds rows and is scanned whole:\n{plan}");
        }
    }
    assert!(last.dropped > 0, "{last:?}");
    let horizon = now - TimeDelta::days(2);
    let oldest = oldest.expect("rows kept");
    assert!(
        oldest >= horizon - TimeDelta::days(1),
        "{oldest} kept, horizon {horizon}"
    );
    let expected: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM generate_series(0, 34560) AS n WHERE $1 + n * interval '10 seconds' >= $2",
    )
    .bind(start)
    .bind(oldest)
    .fetch_one(&stack.db)
    .await
    .unwrap();
    assert_eq!(rows, expected, "a partition was dropped only in part");
}

/// Twenty inserts of the same ten keyed messages at once, each copy with a `received_at` in another
/// partition, every insert held at its start so that all of them look for an older copy before any
/// commits: each message is still stored once (without the claims, every insert finds none and stores
/// its copy).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_inserts_of_a_keyed_message_into_different_partitions_store_it_once() {
    // Arrange
    let stack = TestStack::start().await;
    let mut config = stack.consumer_config.clone();
    config.retention.retention = "12h".into();
    round(&config, Utc::now()).await;
    for statement in [
        "CREATE FUNCTION hold() RETURNS trigger LANGUAGE plpgsql AS \
         $$ BEGIN PERFORM pg_sleep(0.5); RETURN NULL; END $$",
        "CREATE TRIGGER hold BEFORE INSERT ON messages FOR EACH STATEMENT EXECUTE FUNCTION hold()",
    ] {
        sqlx::query(statement).execute(&stack.db).await.unwrap();
    }
    let pool = sqlx::postgres::PgPoolOptions::new()
        .max_connections(20)
        .connect(&stack.database_url)
        .await
        .unwrap();
    let store = consumer::MessageStore::new(pool, Duration::from_secs(60));
    let ids: Vec<Uuid> = (0..10).map(|_| Uuid::now_v7()).collect();
    let now = Utc::now();

    // Act
    let inserts = (0..20).map(|copy| {
        let store = store.clone();
        let batch: Vec<QueuedMessage> = ids
            .iter()
            .flat_map(|id| keyed_copies(*id, &[now + TimeDelta::hours(copy - 10)]))
            .collect();
        tokio::spawn(async move { store.insert(&batch).await.unwrap().new })
    });
    let stored: u64 = futures::future::join_all(inserts)
        .await
        .into_iter()
        .map(|inserted| inserted.unwrap())
        .sum();

    // Assert
    assert_eq!(stack.rows_for(&ids).await, (10, 10));
    assert_eq!(stored, 10);
}
