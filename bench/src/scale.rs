//! Scaling out: publish, drain and end to end with 1, 2 and 4 shards, on the machine's broker and on the
//! three-node cluster of `scripts/cluster`, each beside a raw client at the same shard count, with the CPU
//! each component spent per message: the inputs of the capacity model in BENCHMARKS.md.

use std::{collections::HashMap, time::Instant};

use consumer::MessageStore;

use crate::{
    ceilings,
    fixture::Scratch,
    services::{self, cpu_seconds, per_10k, Service},
    Plan, Table,
};

/// A broker the services are measured on.
pub struct Broker {
    pub label: &'static str,
    pub amqp_url: String,
}

/// The processes whose CPU is counted as one component's, read from `/proc`.
enum Processes {
    /// Processes known up front: the broker's Erlang VMs.
    Fixed(Vec<String>),
    /// PostgreSQL: the server and its backends, which come and go, so they are looked for each time.
    Postgres,
}

impl Processes {
    /// The broker's Erlang VMs: the cluster's nodes (their pid files), or every other `beam.smp`.
    fn broker(scratch: &Scratch) -> Self {
        let cluster: Vec<String> = (1..=3)
            .filter_map(|n| {
                std::fs::read_to_string(format!(
                    "{}/../.run/cluster/node{n}/pid",
                    env!("CARGO_MANIFEST_DIR")
                ))
                .ok()
            })
            .map(|pid| pid.trim().to_owned())
            .collect();
        if scratch.nodes() > 1 {
            return Self::Fixed(cluster);
        }
        Self::Fixed(
            named("beam.smp")
                .into_iter()
                .filter(|pid| !cluster.contains(pid))
                .collect(),
        )
    }

    fn cpu(&self) -> HashMap<String, f64> {
        let pids = match self {
            Self::Fixed(pids) => pids.clone(),
            Self::Postgres => named("postgres"),
        };
        pids.into_iter()
            .map(|pid| {
                let cpu = cpu_seconds(&pid);
                (pid, cpu)
            })
            .collect()
    }
}

/// The pids of processes whose command is `name`.
fn named(name: &str) -> Vec<String> {
    std::fs::read_dir("/proc")
        .into_iter()
        .flatten()
        .filter_map(|entry| entry.ok()?.file_name().into_string().ok())
        .filter(|pid| pid.bytes().all(|b| b.is_ascii_digit()))
        .filter(|pid| {
            std::fs::read_to_string(format!("/proc/{pid}/comm"))
                .is_ok_and(|comm| comm.trim() == name)
        })
        .collect()
}

/// CPU seconds a group of processes spends between [`Meter::start`] and [`Meter::seconds`]. Processes
/// that start meanwhile (new PostgreSQL backends) count from zero; those that end are not counted.
struct Meter {
    group: Processes,
    before: HashMap<String, f64>,
}

impl Meter {
    fn start(group: Processes) -> Self {
        let before = group.cpu();
        Self { group, before }
    }

    fn seconds(&self) -> f64 {
        self.group
            .cpu()
            .iter()
            .map(|(pid, now)| now - self.before.get(pid).copied().unwrap_or(0.0))
            .sum()
    }
}

/// The shard counts measured.
pub fn shard_counts(plan: &Plan) -> &'static [u16] {
    if plan.quick {
        &[1, 4]
    } else {
        &[1, 2, 4]
    }
}

/// The name of a figure measured on `broker` with `shards`.
pub fn name(broker: &Broker, shards: u16, what: &str) -> String {
    format!(
        "{}, {shards} shard{}: {what}",
        broker.label,
        if shards == 1 { "" } else { "s" }
    )
}

pub const RAW_PUBLISH: &str = "raw publish";
pub const RAW_DRAIN: &str = "raw pipeline drain (consume, insert, ack)";
pub const RAW_END_TO_END: &str = "raw pipeline end to end (publish, consume, insert, ack)";
pub const PUBLISH: &str = "publisher batches of 100, 64 clients";
pub const DRAIN: &str = "consumer drain of that backlog";
pub const END_TO_END: &str = "end to end, queue not growing";

/// Measures every figure of `broker` with `shards` and records it in `table`.
pub async fn measure(
    plan: &Plan,
    broker: &Broker,
    shards: u16,
    table: &mut Table,
) -> anyhow::Result<()> {
    let figure = |what: &str| name(broker, shards, what);
    let scratch = Scratch::on(&broker.amqp_url, shards).await?;

    // The raw client: publish, then consume, insert and ack what it published.
    let payloads = ceilings::payloads(plan.raw_messages);
    let meter = Meter::start(Processes::broker(&scratch));
    table.record(
        figure(RAW_PUBLISH),
        "msg/s",
        ceilings::publish(&scratch, &payloads, ceilings::WIDE_WINDOW).await?,
    );
    table.record(
        figure("  broker CPU per 10,000 (raw publish)"),
        "s",
        per_10k(meter.seconds(), payloads.len()),
    );
    let store = MessageStore::new(
        scratch.migrated_pool(shards.into()).await?,
        std::time::Duration::from_secs(60),
    );
    table.record(
        figure(RAW_DRAIN),
        "msg/s",
        ceilings::drain(&scratch, payloads.len(), Some(&store)).await?,
    );
    // And both at once, as the two services run: stored over the time from the first publish to the
    // last ack.
    let flowing = ceilings::payloads(plan.raw_messages);
    table.record(
        figure(RAW_END_TO_END),
        "msg/s",
        ceilings::publish_and_drain(&scratch, &flowing, &store).await?,
    );
    store.pool().close().await;

    // The publisher alone, so that what it accepts waits in the shards.
    let publisher = Service::start("publisher", &scratch).await?;
    let (publisher_cpu, broker_meter) = (
        publisher.cpu_seconds(),
        Meter::start(Processes::broker(&scratch)),
    );
    let published = services::load(&publisher, 64, 100, plan.http_duration, None).await?;
    table.record(figure(PUBLISH), "msg/s", published.rate);
    table.record(
        figure("  publisher CPU per 10,000"),
        "s",
        per_10k(publisher.cpu_seconds() - publisher_cpu, published.accepted),
    );
    table.record(
        figure("  broker CPU per 10,000 (publisher)"),
        "s",
        per_10k(broker_meter.seconds(), published.accepted),
    );

    // The consumer drains that backlog.
    let backlog = scratch.queue_depth().await? as usize;
    let postgres = Meter::start(Processes::Postgres);
    let started = Instant::now();
    let consumer = Service::start("consumer", &scratch).await?;
    let consumer_cpu = consumer.cpu_seconds();
    while scratch.queue_depth().await? > 0 {
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    let drained_in = started.elapsed().as_secs_f64();
    table.record(figure(DRAIN), "msg/s", backlog as f64 / drained_in);
    table.record(
        figure("  consumer CPU per 10,000"),
        "s",
        per_10k(consumer.cpu_seconds() - consumer_cpu, backlog),
    );
    table.record(
        figure("  PostgreSQL CPU per 10,000 rows"),
        "s",
        per_10k(postgres.seconds(), backlog),
    );

    // Both at once: the rate at which the queue does not grow.
    let before = scratch.queue_depth().await? as f64;
    let flowing = services::load(&publisher, 64, 100, plan.http_duration, None).await?;
    let grown = scratch.queue_depth().await? as f64 - before;
    let sustained = (flowing.accepted as f64 - grown) / plan.http_duration.as_secs_f64();
    table.record(figure(END_TO_END), "msg/s", sustained.min(flowing.rate));
    while scratch.queue_depth().await? > 0 {
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    drop((publisher, consumer));
    scratch.remove().await
}

/// The ratios of the scale-out figures to the raw client at the same shard count.
pub fn print_ratios(table: &Table, brokers: &[Broker], plan: &Plan) {
    println!("\nscale-out ratios (medians; each against the raw client at the same shard count):");
    for broker in brokers {
        for &shards in shard_counts(plan) {
            let median = |what: &str| table.median(&name(broker, shards, what));
            println!(
                "  {:<34} publish {:>5.1} %   drain {:>5.1} %   end to end {:>5.1} %   broker CPU {:.3} s per 10,000 messages",
                format!("{}, {shards} shards:", broker.label),
                100.0 * median(PUBLISH) / median(RAW_PUBLISH),
                100.0 * median(DRAIN) / median(RAW_DRAIN),
                100.0 * median(END_TO_END) / median(RAW_END_TO_END),
                median("  broker CPU per 10,000 (publisher)"),
            );
        }
    }
}
