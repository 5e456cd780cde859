//! `cargo run --release -p bench` measures the pipeline against this machine's own ceilings in one run, and
//! prints a table and the ratios between them. `-- --quick` is a short smoke run with small counts.
//!
//! The release binaries of both services must be built first (`cargo build --release`); RabbitMQ and
//! PostgreSQL must run on their standard local ports. Every measurement uses a queue and a database of its
//! own, removed afterwards, and is repeated (three times by default) to report the median. With
//! `CLUSTER_AMQP_URL` set (`scripts/cluster start`, then `CLUSTER_AMQP_URL=$(scripts/cluster url)`), the
//! shard figures are measured on the three-node cluster too. `--publisher` measures the publisher alone;
//! `--production` the services with the production overlay's settings on that cluster; `--traces` what
//! exporting traces costs.

mod ceilings;
mod feed;
mod fixture;
mod http_load;
mod latency;
mod measure;
mod production;
mod scale;
mod services;
mod table;
mod tracing_cost;
mod writers;

use std::time::Instant;

use measure::{
    measure_ceilings, measure_consumer, measure_end_to_end, measure_publisher, CONSUMER_DRAIN,
    CONSUMER_DRAIN_FOLLOWED, CONSUMER_DRAIN_KEYED, CONSUMER_DRAIN_PARTITIONED, E2E_RATE, PUB_BATCH,
    PUB_SINGLE, RAW_PIPELINE, RAW_PIPELINE_FLOWING, RAW_PUBLISH, RAW_PUBLISH_64,
};
use table::{Plan, Table};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let plan = Plan::from_args();
    let started = Instant::now();
    let mut table = Table::default();
    let brokers = brokers(&plan);
    let production = if plan.production_only {
        let cluster = std::env::var("CLUSTER_AMQP_URL").map_err(|_| {
            anyhow::anyhow!("--production needs CLUSTER_AMQP_URL=$(scripts/cluster url)")
        })?;
        Some((cluster, production::Settings::render()?))
    } else {
        None
    };
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
        if plan.traces_only {
            tracing_cost::measure(&plan, &mut table).await?;
            continue;
        }
        if let Some((cluster, settings)) = &production {
            production::measure(&plan, cluster, settings, &mut table).await?;
            continue;
        }
        measure_ceilings(&plan, &mut table).await?;
        measure_publisher(&plan, &mut table).await?;
        measure_consumer(&plan, &mut table).await?;
        measure_end_to_end(&plan, &mut table).await?;
        tracing_cost::measure(&plan, &mut table).await?;
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
    if plan.traces_only {
        tracing_cost::print_ratio(&table);
        return Ok(());
    }
    if let Some((_, settings)) = &production {
        production::print_summary(&table, settings);
        return Ok(());
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
        "  drain followed by 8 feed streams / drain: {:>5.1} %",
        ratio(CONSUMER_DRAIN_FOLLOWED, CONSUMER_DRAIN)
    );
    println!(
        "  drain partitioned / drain:             {:>5.1} %",
        ratio(CONSUMER_DRAIN_PARTITIONED, CONSUMER_DRAIN)
    );
    println!(
        "  drain partitioned and keyed / partitioned: {:>5.1} %",
        ratio(CONSUMER_DRAIN_KEYED, CONSUMER_DRAIN_PARTITIONED)
    );
    println!(
        "  end to end / raw pipeline end to end:  {:>5.1} %",
        ratio(E2E_RATE, RAW_PIPELINE_FLOWING)
    );
    tracing_cost::print_ratio(&table);
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
