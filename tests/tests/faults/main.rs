//! The delivery guarantee under faults, against the machine's real RabbitMQ and PostgreSQL and the
//! release binaries as processes. Each scenario runs concurrent clients, records every id answered 202,
//! injects a fault, then proves that every accepted id is stored exactly once, that nothing is stored that
//! was never attempted, and that the services recovered by themselves.
//!
//! These stop the machine's broker and database, so they are ignored by a plain `cargo test` and run one
//! at a time by `scripts/fault-suite` (`--include-ignored --test-threads=1`).

mod frozen;
mod harness;
mod kills;
mod memory;
mod outages;
mod overload;
mod shards;

use std::time::Duration;

use harness::Pipeline;

const CLIENTS: usize = 16;
/// The publisher's default `CONFIRM_TIMEOUT_MS`: how long an in-doubt request is republished before its 503.
const CONFIRM_DEADLINE: Duration = Duration::from_secs(5);

fn summary(scenario: &str, report: &harness::LoadReport, caught_up: Duration, extra: &str) {
    println!(
        "{scenario}: accepted {} ({} attempts, {} unanswered, statuses {:?}); stored once, duplicates 0; \
         caught up {caught_up:.1?} after the load stopped{extra}",
        report.accepted.len(),
        report.attempted.len(),
        report.unanswered,
        report.statuses
    );
}

/// Connections the broker has from this system's services, by name.
fn broker_connections() -> Vec<String> {
    let output = std::process::Command::new("rabbitmqctl")
        .args([
            "list_connections",
            "-q",
            "--no-table-headers",
            "client_properties",
        ])
        .output()
        .expect("rabbitmqctl");
    String::from_utf8_lossy(&output.stdout)
        .lines()
        .filter_map(|line| {
            [
                "message-publisher",
                "message-consumer-dead-letters",
                "message-consumer",
            ]
            .into_iter()
            .find(|name| line.contains(name))
            .map(str::to_owned)
        })
        .collect()
}

async fn database_connections(pipeline: &Pipeline) -> i64 {
    sqlx::query_scalar("SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()")
        .fetch_one(&pipeline.db)
        .await
        .expect("count connections")
}
