//! The consumer's batch-writer scaler against a fixed single writer: the drain rate of one backlog,
//! against the local database and through a proxy adding 1 ms each way (2 ms a round trip), where
//! writing several batches at once hides the wait.

use std::time::{Duration, Instant};

use crate::{
    ceilings,
    fixture::Scratch,
    latency::LatencyProxy,
    measure::STORED_METRIC,
    services::{self, Service},
    Plan, Table,
};

/// The writer settings compared.
const MODES: [(&str, &str, &str); 2] = [("one writer", "1", "1"), ("scaler, 1 to 4", "1", "4")];

/// Where the database is reached.
const PATHS: [(&str, Option<Duration>); 2] = [
    ("local database", None),
    ("database 2 ms away", Some(Duration::from_millis(1))),
];

/// The figure's name in the table.
pub fn figure(path: &str, mode: &str) -> String {
    format!("drain, {path}, {mode}")
}

/// Drains a backlog with each mode on each path.
pub async fn measure(plan: &Plan, table: &mut Table) -> anyhow::Result<()> {
    for (path, one_way) in PATHS {
        for (mode, min, max) in MODES {
            let scratch = Scratch::new().await?;
            let pool = scratch.migrated_pool(1).await?;
            let backlog = plan.backlog / 2;
            ceilings::publish(
                &scratch,
                &ceilings::payloads(backlog),
                ceilings::WIDE_WINDOW,
            )
            .await?;
            let proxy = match one_way {
                Some(one_way) => {
                    Some(LatencyProxy::start("127.0.0.1:5432".parse()?, one_way).await?)
                }
                None => None,
            };
            let database_url = match &proxy {
                Some(proxy) => {
                    format!("postgres://postgres@{}/{}", proxy.address, scratch.database)
                }
                None => scratch.database_url(),
            };
            let env = [
                ("DATABASE_URL", database_url),
                ("WRITERS_MIN", min.to_owned()),
                ("WRITERS_MAX", max.to_owned()),
                ("QUEUE_WATCH_INTERVAL_MS", "500".to_owned()),
                ("SCALE_TARGET_DRAIN_SECS", "1".to_owned()),
            ];
            let consumer = Service::start_with("consumer", &scratch, &env).await?;
            let started = Instant::now();
            let cpu_before = consumer.cpu_seconds();
            let at_start = consumer.metric(STORED_METRIC).await? as usize;
            let mut writers_seen = 0.0_f64;
            while (consumer.metric(STORED_METRIC).await? as usize) < backlog {
                let writers = consumer
                    .metric(&format!("consumer_writers{{queue=\"{}\"}}", scratch.queue))
                    .await?;
                writers_seen = writers_seen.max(writers);
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            let rate = (backlog - at_start) as f64 / started.elapsed().as_secs_f64();
            table.record(figure(path, mode), "msg/s", rate);
            table.record(
                format!("  {path}, {mode}: most writers"),
                "writers",
                writers_seen,
            );
            table.record(
                format!("  {path}, {mode}: consumer CPU per 10,000"),
                "s",
                services::per_10k(consumer.cpu_seconds() - cpu_before, backlog),
            );
            drop(consumer);
            drop(proxy);
            pool.close().await;
            scratch.remove().await?;
        }
    }
    Ok(())
}

/// The scaler's drain rate as a share of the single writer's, on each path.
pub fn print_ratios(table: &Table) {
    println!("\nbatch-writer scaler (medians):");
    for (path, _) in PATHS {
        let fixed = table.median(&figure(path, MODES[0].0));
        let scaled = table.median(&figure(path, MODES[1].0));
        println!(
            "  {path}: scaler / one writer {:>6.1} %   ({scaled:.0} vs {fixed:.0} msg/s)",
            100.0 * scaled / fixed
        );
    }
}
