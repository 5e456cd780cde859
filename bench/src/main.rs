//! `cargo run --release -p bench` measures the pipeline against this machine's own ceilings in one run, and
//! prints a table and the ratios between them. `-- --quick` is a short smoke run with small counts.
//!
//! The release binaries of both services must be built first (`cargo build --release`); RabbitMQ and
//! PostgreSQL must run on their standard local ports. Every measurement uses a queue and a database of its
//! own, removed afterwards, and is repeated (three times by default) to report the median. With
//! `CLUSTER_AMQP_URL` set (`scripts/cluster start`, then `CLUSTER_AMQP_URL=$(scripts/cluster url)`), the
//! shard figures are measured on the three-node cluster too. `--publisher` measures the publisher alone;
//! `--production` the services with the production overlay's settings on that cluster.

mod ceilings;
mod fixture;
mod http_load;
mod latency;
mod production;
mod scale;
mod services;
mod writers;

use std::time::{Duration, Instant};

use consumer::store::MessageStore;
use fixture::Scratch;
use services::Service;

/// Sizes of one run.
pub struct Plan {
    quick: bool,
    /// `--publisher`: only the publisher's figures, for comparing its settings (`AMQP_CONNECTIONS=2
    /// bench --publisher`; the services inherit the environment).
    publisher_only: bool,
    /// `--writers`: only the consumer's batch-writer scaler against one writer.
    writers_only: bool,
    /// `--production`: only the services with the production overlay's settings, on the broker of
    /// `CLUSTER_AMQP_URL`.
    production_only: bool,
    runs: usize,
    raw_messages: usize,
    backlog: usize,
    http_duration: Duration,
}

impl Plan {
    fn from_args() -> Self {
        let publisher_only = std::env::args().any(|arg| arg == "--publisher");
        let writers_only = std::env::args().any(|arg| arg == "--writers");
        let production_only = std::env::args().any(|arg| arg == "--production");
        if std::env::args().any(|arg| arg == "--quick") {
            Self {
                quick: true,
                publisher_only,
                writers_only,
                production_only,
                runs: 1,
                raw_messages: 5_000,
                backlog: 5_000,
                http_duration: Duration::from_secs(2),
            }
        } else {
            Self {
                quick: false,
                publisher_only,
                writers_only,
                production_only,
                runs: 3,
                raw_messages: 50_000,
                backlog: 200_000,
                http_duration: Duration::from_secs(10),
            }
        }
    }
}

/// One figure of the table: the median of its runs.
struct Figure {
    name: String,
    unit: &'static str,
    runs: Vec<f64>,
}

impl Figure {
    fn median(&self) -> f64 {
        let mut sorted = self.runs.clone();
        sorted.sort_by(f64::total_cmp);
        sorted[sorted.len() / 2]
    }
}

#[derive(Default)]
pub struct Table(Vec<Figure>);

impl Table {
    fn record(&mut self, name: impl Into<String>, unit: &'static str, value: f64) {
        let name = name.into();
        match self.0.iter_mut().find(|f| f.name == name) {
            Some(figure) => figure.runs.push(value),
            None => self.0.push(Figure {
                name,
                unit,
                runs: vec![value],
            }),
        }
    }

    fn median(&self, name: &str) -> f64 {
        self.0
            .iter()
            .find(|f| f.name == name)
            .map_or(f64::NAN, Figure::median)
    }

    fn print(&self) {
        println!(
            "\n{:<66} {:>12}  {:<10} runs",
            "measurement", "median", "unit"
        );
        for figure in &self.0 {
            let runs: Vec<String> = figure.runs.iter().map(|r| format!("{r:.2}")).collect();
            println!(
                "{:<66} {:>12.2}  {:<10} {}",
                figure.name,
                figure.median(),
                figure.unit,
                runs.join(" / ")
            );
        }
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let plan = Plan::from_args();
    let started = Instant::now();
    let mut table = Table::default();
    let brokers = brokers(&plan);
    for run in 1..=plan.runs {
        eprintln!("run {run} of {}", plan.runs);
        if plan.publisher_only {
            measure_publisher(&plan, &mut table).await?;
            continue;
        }
        if plan.writers_only {
            writers::measure(&plan, &mut table).await?;
            continue;
        }
        if plan.production_only {
            let cluster = std::env::var("CLUSTER_AMQP_URL").map_err(|_| {
                anyhow::anyhow!("--production needs CLUSTER_AMQP_URL=$(scripts/cluster url)")
            })?;
            production::measure(&plan, &cluster, &mut table).await?;
            continue;
        }
        measure_ceilings(&plan, &mut table).await?;
        measure_publisher(&plan, &mut table).await?;
        measure_consumer(&plan, &mut table).await?;
        measure_end_to_end(&plan, &mut table).await?;
        writers::measure(&plan, &mut table).await?;
        for broker in &brokers {
            for &shards in scale::shard_counts(&plan) {
                scale::measure(&plan, broker, shards, &mut table).await?;
            }
        }
    }
    table.print();
    if plan.publisher_only {
        return Ok(());
    }
    if plan.writers_only {
        writers::print_ratios(&table);
        return Ok(());
    }
    if plan.production_only {
        return production::print_summary(&table);
    }
    let ratio = |a: &str, b: &str| 100.0 * table.median(a) / table.median(b);
    println!("\nratios (medians):");
    println!(
        "  publisher single / raw publish:        {:>5.1} %",
        ratio(PUB_SINGLE, RAW_PUBLISH)
    );
    println!(
        "  publisher single / raw publish at 64:  {:>5.1} %   (the same confirms in flight)",
        ratio(PUB_SINGLE, RAW_PUBLISH_64)
    );
    println!(
        "  publisher batch / raw publish:         {:>5.1} %",
        ratio(PUB_BATCH, RAW_PUBLISH)
    );
    println!(
        "  consumer drain / raw pipeline drain:   {:>5.1} %",
        ratio(CONSUMER_DRAIN, RAW_PIPELINE)
    );
    println!(
        "  end to end / raw pipeline end to end:  {:>5.1} %",
        ratio(E2E_RATE, RAW_PIPELINE_FLOWING)
    );
    scale::print_ratios(&table, &brokers, &plan);
    writers::print_ratios(&table);
    println!("\nbenchmark took {:.0?}", started.elapsed());
    Ok(())
}

/// The machine's broker, and the cluster of `scripts/cluster` when `CLUSTER_AMQP_URL` names it (not in
/// a quick run).
fn brokers(plan: &Plan) -> Vec<scale::Broker> {
    let mut brokers = vec![scale::Broker {
        label: "one broker",
        amqp_url: fixture::AMQP_URL.to_owned(),
    }];
    match std::env::var("CLUSTER_AMQP_URL") {
        Ok(url) if !plan.quick => brokers.push(scale::Broker {
            label: "three-node cluster",
            amqp_url: url,
        }),
        Ok(_) => {}
        Err(_) => eprintln!(
            "no CLUSTER_AMQP_URL: measuring one broker only (CLUSTER_AMQP_URL=$(scripts/cluster url) after scripts/cluster start)"
        ),
    }
    brokers
}

const RAW_PUBLISH: &str = "raw publish (persistent, confirmed, quorum queue)";
const RAW_PUBLISH_64: &str = "raw publish, 64 confirms in flight";
const RAW_CONSUME: &str = "raw consume (manual ack, prefetch 1000)";
const RAW_INGEST: &str = "raw PostgreSQL ingest (UNNEST, batches of 500)";
const RAW_PIPELINE: &str = "raw pipeline drain (consume, insert, ack)";
const RAW_PIPELINE_FLOWING: &str = "raw pipeline end to end (publish, consume, insert, ack)";
/// The consumer's counter of rows it has inserted.
pub const STORED_METRIC: &str = "consumer_messages_stored_total";
const PUB_SINGLE: &str = "publisher /message/publish, 64 clients";
const PUB_BATCH: &str = "publisher /message/publish/batch (100), 64 clients";
const CONSUMER_DRAIN: &str = "consumer drain of a backlog";
const E2E_RATE: &str = "end to end (batches of 100), queue not growing";

async fn measure_ceilings(plan: &Plan, table: &mut Table) -> anyhow::Result<()> {
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
    let started = Instant::now();
    let (published, drained) = tokio::join!(
        ceilings::publish(&scratch, &flowing, ceilings::WIDE_WINDOW),
        ceilings::drain(&scratch, flowing.len(), Some(&store)),
    );
    published?;
    drained?;
    table.record(
        RAW_PIPELINE_FLOWING,
        "msg/s",
        flowing.len() as f64 / started.elapsed().as_secs_f64(),
    );
    store.pool().close().await;
    scratch.remove().await
}

async fn measure_publisher(plan: &Plan, table: &mut Table) -> anyhow::Result<()> {
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

async fn measure_consumer(plan: &Plan, table: &mut Table) -> anyhow::Result<()> {
    let scratch = Scratch::new().await?;
    let pool = scratch.migrated_pool(1).await?;
    let payloads = ceilings::payloads(plan.backlog);
    ceilings::publish(&scratch, &payloads, ceilings::WIDE_WINDOW).await?;
    let consumer = Service::start("consumer", &scratch).await?;
    // Timed from readiness, so that start-up (connections, migrations) does not count as draining. Progress
    // is read from the consumer's own counter: counting rows would load the database being measured.
    let started = Instant::now();
    let cpu_before = consumer.cpu_seconds();
    let at_start = consumer.metric(STORED_METRIC).await? as usize;
    while (consumer.metric(STORED_METRIC).await? as usize) < plan.backlog {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let rate = (plan.backlog - at_start) as f64 / started.elapsed().as_secs_f64();
    anyhow::ensure!(
        count_rows(&pool).await? == plan.backlog,
        "the consumer's counter and the table disagree"
    );
    table.record(CONSUMER_DRAIN, "msg/s", rate);
    table.record(
        "  consumer CPU per 10,000 messages",
        "s",
        services::per_10k(consumer.cpu_seconds() - cpu_before, plan.backlog),
    );
    table.record("consumer peak RSS", "MiB", consumer.peak_rss_mib());
    drop(consumer);
    pool.close().await;
    scratch.remove().await
}

async fn measure_end_to_end(plan: &Plan, table: &mut Table) -> anyhow::Result<()> {
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
