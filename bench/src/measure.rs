//! The single-queue figures: the machine's own ceilings (raw publish, consume, ingest, and a pipeline with
//! no HTTP and no service code), then the publisher, the consumer and both end to end against them.

use std::time::{Duration, Instant};

use crate::{
    ceilings, feed,
    fixture::Scratch,
    services::{self, Service},
};
use consumer::MessageStore;

use crate::table::{Plan, Table};

pub const RAW_PUBLISH: &str = "raw publish (persistent, confirmed, quorum queue)";
pub const RAW_PUBLISH_64: &str = "raw publish, 64 confirms in flight";
pub const RAW_CONSUME: &str = "raw consume (manual ack, prefetch 1000)";
pub const RAW_INGEST: &str = "raw PostgreSQL ingest (UNNEST, batches of 500)";
pub const RAW_PIPELINE: &str = "raw pipeline drain (consume, insert, ack)";
pub const RAW_PIPELINE_FLOWING: &str = "raw pipeline end to end (publish, consume, insert, ack)";
/// The consumer's counter of rows it has inserted.
pub const STORED_METRIC: &str = "consumer_messages_stored_total";
pub const PUB_SINGLE: &str = "publisher /message/publish, 64 clients";
pub const PUB_BATCH: &str = "publisher /message/publish/batch (100), 64 clients";
pub const CONSUMER_DRAIN: &str = "consumer drain of a backlog";
pub const CONSUMER_DRAIN_FOLLOWED: &str = "consumer drain of a backlog, 8 feed streams following";
pub const CONSUMER_DRAIN_PARTITIONED: &str =
    "consumer drain of a backlog, partitioned (RETENTION=7d)";
pub const CONSUMER_DRAIN_KEYED: &str =
    "consumer drain of a backlog, partitioned, every message keyed";
pub const E2E_RATE: &str = "end to end (batches of 100), queue not growing";

pub async fn measure_ceilings(plan: &Plan, table: &mut Table) -> anyhow::Result<()> {
    let scratch = Scratch::new().await?;
    let messages = ceilings::messages(plan.raw_messages);
    let payloads: Vec<Vec<u8>> = messages.iter().map(|m| m.to_payload()).collect();
    table.record(
        RAW_PUBLISH,
        "msg/s",
        ceilings::publish(&scratch, &payloads, ceilings::WIDE_WINDOW).await?,
    );
    table.record(
        RAW_PUBLISH_64,
        "msg/s",
        ceilings::publish(&scratch, &payloads, ceilings::CLIENT_WINDOW).await?,
    );
    // Both publishes above are in the queue now.
    table.record(
        RAW_CONSUME,
        "msg/s",
        ceilings::drain(&scratch, 2 * payloads.len(), None).await?,
    );
    let store = MessageStore::new(
        scratch.migrated_pool(1).await?,
        std::time::Duration::from_secs(60),
    );
    table.record(
        RAW_INGEST,
        "rows/s",
        ceilings::ingest(&store, &messages).await?,
    );
    // The same messages again through a pipeline with no HTTP and no service code: new ids, empty table.
    sqlx::query("TRUNCATE messages")
        .execute(store.pool())
        .await?;
    let fresh = ceilings::payloads(plan.raw_messages);
    ceilings::publish(&scratch, &fresh, ceilings::WIDE_WINDOW).await?;
    table.record(
        RAW_PIPELINE,
        "msg/s",
        ceilings::drain(&scratch, fresh.len(), Some(&store)).await?,
    );
    // And once more with publishing and draining at the same time, as the two services run: the rate is
    // what was stored over the time from the first publish to the last ack.
    let flowing = ceilings::payloads(plan.raw_messages);
    table.record(
        RAW_PIPELINE_FLOWING,
        "msg/s",
        ceilings::publish_and_drain(&scratch, &flowing, &store).await?,
    );
    store.pool().close().await;
    scratch.remove().await
}

pub async fn measure_publisher(plan: &Plan, table: &mut Table) -> anyhow::Result<()> {
    let scratch = Scratch::new().await?;
    let publisher = Service::start("publisher", &scratch).await?;
    table.record("publisher idle RSS", "MiB", publisher.rss_mib());
    let cpu_before = publisher.cpu_seconds();
    let single = services::load(&publisher, 64, 1, plan.http_duration, None).await?;
    let cpu = publisher.cpu_seconds() - cpu_before;
    table.record(PUB_SINGLE, "msg/s", single.rate);
    table.record("  p50 latency", "ms", single.p50.as_secs_f64() * 1e3);
    table.record("  p99 latency", "ms", single.p99.as_secs_f64() * 1e3);
    table.record(
        "  publisher CPU per 10,000 messages",
        "s",
        services::per_10k(cpu, single.accepted),
    );
    table.record(
        "  load generator CPU per 10,000 messages",
        "s",
        single.generator_cpu_per_10k,
    );
    let cpu_before = publisher.cpu_seconds();
    let batch = services::load(&publisher, 64, 100, plan.http_duration, None).await?;
    let cpu = publisher.cpu_seconds() - cpu_before;
    table.record(PUB_BATCH, "msg/s", batch.rate);
    table.record(
        "  publisher CPU per 10,000 messages (batches)",
        "s",
        services::per_10k(cpu, batch.accepted),
    );
    table.record(
        "  load generator CPU per 10,000 messages (batches)",
        "s",
        batch.generator_cpu_per_10k,
    );
    table.record(
        "  p50 latency (a request of 100)",
        "ms",
        batch.p50.as_secs_f64() * 1e3,
    );
    table.record(
        "  p99 latency (a request of 100)",
        "ms",
        batch.p99.as_secs_f64() * 1e3,
    );
    let half = services::load(
        &publisher,
        64,
        1,
        plan.http_duration,
        Some(single.rate / 2.0),
    )
    .await?;
    table.record(
        "publisher single at half its maximum: p99 latency",
        "ms",
        half.p99.as_secs_f64() * 1e3,
    );
    table.record("publisher peak RSS", "MiB", publisher.peak_rss_mib());
    drop(publisher);
    scratch.remove().await
}

pub async fn measure_consumer(plan: &Plan, table: &mut Table) -> anyhow::Result<()> {
    let plain = drain(plan, Drain::default()).await?;
    table.record(CONSUMER_DRAIN, "msg/s", plain.rate);
    table.record("  consumer CPU per 10,000 messages", "s", plain.cpu_per_10k);
    table.record("consumer peak RSS", "MiB", plain.peak_rss_mib);
    table.record(
        "  bytes on disk per row (table and indexes)",
        "B",
        plain.bytes_per_row,
    );
    // The same drain with event streams following the feed from the start: what followers cost ingestion.
    let followed = drain(
        plan,
        Drain {
            streams: FEED_STREAMS,
            ..Drain::default()
        },
    )
    .await?;
    table.record(CONSUMER_DRAIN_FOLLOWED, "msg/s", followed.rate);
    table.record(
        "  consumer CPU per 10,000 messages, followed",
        "s",
        followed.cpu_per_10k,
    );
    table.record("consumer peak RSS, followed", "MiB", followed.peak_rss_mib);
    // Into the partitioned table of RETENTION, unkeyed and then every message keyed (each claims its id).
    let partitioned = drain(
        plan,
        Drain {
            partitioned: true,
            ..Drain::default()
        },
    )
    .await?;
    table.record(CONSUMER_DRAIN_PARTITIONED, "msg/s", partitioned.rate);
    table.record(
        "  consumer CPU per 10,000 messages, partitioned",
        "s",
        partitioned.cpu_per_10k,
    );
    table.record(
        "  retention round dropping the drained rows",
        "ms",
        partitioned.drop_ms,
    );
    let keyed = drain(
        plan,
        Drain {
            partitioned: true,
            keyed: true,
            ..Drain::default()
        },
    )
    .await?;
    table.record(CONSUMER_DRAIN_KEYED, "msg/s", keyed.rate);
    table.record(
        "  consumer CPU per 10,000 messages, partitioned and keyed",
        "s",
        keyed.cpu_per_10k,
    );
    Ok(())
}

/// Event streams that follow the feed while it is measured.
const FEED_STREAMS: usize = 8;

/// How a drain is set up.
#[derive(Clone, Copy, Default)]
struct Drain {
    /// Event streams following the feed from the start.
    streams: usize,
    /// The table partitioned as `RETENTION=7d` makes it (before the drain).
    partitioned: bool,
    /// Every message with an `Idempotency-Key`'s fingerprint, as the publisher sends keyed ones.
    keyed: bool,
}

/// What a drain measured.
struct Drained {
    rate: f64,
    cpu_per_10k: f64,
    peak_rss_mib: f64,
    bytes_per_row: f64,
    /// How long a maintenance round a week later took to drop every drained row (partitioned only).
    drop_ms: f64,
}

/// The consumer's settings for `scratch`, with `RETENTION=7d`.
fn retained(scratch: &Scratch) -> anyhow::Result<consumer::Config> {
    use common::settings::Settings as _;
    consumer::Config::from_vars([
        ("DATABASE_URL".to_owned(), scratch.database_url()),
        ("RETENTION".to_owned(), "7d".to_owned()),
    ])
}

/// Drains a backlog of `plan.backlog` messages as `case` says.
async fn drain(plan: &Plan, case: Drain) -> anyhow::Result<Drained> {
    let scratch = Scratch::new().await?;
    let pool = scratch.migrated_pool(1).await?;
    let mut env = Vec::new();
    if case.partitioned {
        consumer::maintenance_round(&retained(&scratch)?, chrono::Utc::now()).await?;
        env.push(("RETENTION", "7d".to_owned()));
    }
    let mut messages = ceilings::messages(plan.backlog);
    if case.keyed {
        for message in &mut messages {
            message.fingerprint = Some(common::model::fingerprint(&message.message));
        }
    }
    let payloads: Vec<Vec<u8>> = messages.iter().map(|m| m.to_payload()).collect();
    ceilings::publish(&scratch, &payloads, ceilings::WIDE_WINDOW).await?;
    let consumer = Service::start_with("consumer", &scratch, &env).await?;
    let followers =
        (case.streams > 0).then(|| feed::Followers::start(&consumer.address, case.streams, None));
    // Timed from readiness, so that start-up (connections, migrations) does not count as draining. Progress
    // is read from the consumer's own counter: counting rows would load the database being measured.
    let started = Instant::now();
    let cpu_before = consumer.cpu_seconds();
    let at_start = consumer.metric(STORED_METRIC).await? as usize;
    while (consumer.metric(STORED_METRIC).await? as usize) < plan.backlog {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let rate = (plan.backlog - at_start) as f64 / started.elapsed().as_secs_f64();
    let cpu_per_10k = services::per_10k(consumer.cpu_seconds() - cpu_before, plan.backlog);
    anyhow::ensure!(
        count_rows(&pool).await? == plan.backlog,
        "the consumer's counter and the table disagree"
    );
    if let Some(followers) = followers {
        followers.wait_for(case.streams * plan.backlog).await?;
        followers.stop().await?;
    }
    let peak_rss_mib = consumer.peak_rss_mib();
    drop(consumer);
    let bytes: i64 = sqlx::query_scalar(
        "SELECT coalesce(sum(pg_total_relation_size(c.oid)), 0)::bigint FROM pg_class c \
         WHERE c.oid = 'messages'::regclass \
            OR c.oid IN (SELECT inhrelid FROM pg_inherits WHERE inhparent = 'messages'::regclass)",
    )
    .fetch_one(&pool)
    .await?;
    let mut drop_ms = 0.0;
    if case.partitioned {
        let later = chrono::Utc::now() + chrono::Duration::days(9);
        let started = Instant::now();
        consumer::maintenance_round(&retained(&scratch)?, later).await?;
        drop_ms = started.elapsed().as_secs_f64() * 1e3;
        anyhow::ensure!(
            count_rows(&pool).await? == 0,
            "a retention round a week later left rows"
        );
    }
    pool.close().await;
    scratch.remove().await?;
    Ok(Drained {
        rate,
        cpu_per_10k,
        peak_rss_mib,
        bytes_per_row: bytes as f64 / plan.backlog as f64,
        drop_ms,
    })
}

pub async fn measure_end_to_end(plan: &Plan, table: &mut Table) -> anyhow::Result<()> {
    let scratch = Scratch::new().await?;
    let publisher = Service::start("publisher", &scratch).await?;
    let consumer = Service::start("consumer", &scratch).await?;
    table.record("consumer idle RSS", "MiB", consumer.rss_mib());
    let pool = scratch.pool().await?;
    // Batches of 100, so that the pipeline rather than per-request HTTP is what is measured.
    let full = services::load(&publisher, 64, 100, plan.http_duration, None).await?;
    let backlog = scratch.queue_depth().await? as f64;
    // The rate the pipeline sustained: what was accepted, less what piled up in the queue meanwhile.
    let sustained = (full.accepted as f64 - backlog) / plan.http_duration.as_secs_f64();
    table.record(E2E_RATE, "msg/s", sustained.min(full.rate));
    // Drain what is left, then measure publish-to-stored latency at half that rate.
    while scratch.queue_depth().await? > 0 {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let since = chrono::Utc::now();
    let followers = feed::Followers::start(
        &consumer.address,
        4,
        Some(feed::head(&consumer.address).await?),
    );
    let half = services::load(
        &publisher,
        64,
        100,
        plan.http_duration,
        Some(sustained / 200.0),
    )
    .await?;
    loop {
        let stored: i64 =
            sqlx::query_scalar("SELECT count(*) FROM messages WHERE received_at >= $1")
                .bind(since)
                .fetch_one(&pool)
                .await?;
        if stored as usize >= half.accepted {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let (p50, p99): (f64, f64) = sqlx::query_as(
        "SELECT percentile_cont(0.5) WITHIN GROUP (ORDER BY extract(epoch FROM stored_at - received_at)), \
                percentile_cont(0.99) WITHIN GROUP (ORDER BY extract(epoch FROM stored_at - received_at)) \
         FROM messages WHERE received_at >= $1",
    )
    .bind(since)
    .fetch_one(&pool)
    .await?;
    table.record(
        "end to end at half that rate: publish-to-stored p50",
        "ms",
        p50 * 1e3,
    );
    table.record(
        "end to end at half that rate: publish-to-stored p99",
        "ms",
        p99 * 1e3,
    );
    followers.wait_for(4 * half.accepted).await?;
    let mut delays = followers.stop().await?;
    table.record(
        "  feed at half that rate, 4 streams: stored-to-delivered p50",
        "ms",
        feed::quantile(&mut delays, 0.5),
    );
    table.record(
        "  feed at half that rate, 4 streams: stored-to-delivered p99",
        "ms",
        feed::quantile(&mut delays, 0.99),
    );
    drop((publisher, consumer));
    pool.close().await;
    scratch.remove().await
}

async fn count_rows(pool: &sqlx::PgPool) -> anyhow::Result<usize> {
    let rows: i64 = sqlx::query_scalar("SELECT count(*) FROM messages")
        .fetch_one(pool)
        .await?;
    Ok(rows as usize)
}
