//! `bench --production`: the services run with the settings the production overlay gives them, on the
//! broker of `CLUSTER_AMQP_URL` (the three-node cluster of `scripts/cluster`), so that the overlay's
//! CPU and memory requests can be set from what its own settings cost, not from a development run.
//!
//! The settings are read from `kubectl kustomize kube/overlays/production`: each Deployment's ConfigMaps
//! and the literal values of its container's environment. What only makes sense inside a cluster (hosts,
//! ports, certificate files, tokens, who declares the topology) is left to the benchmark.

use std::{
    collections::BTreeMap,
    path::Path,
    process::Command,
    time::{Duration, Instant},
};

use anyhow::Context;
use serde_json::Value;

use crate::{
    fixture::Scratch,
    services::{self, Service},
    Plan, Table,
};

/// Variables the benchmark sets itself: where the peers and the listener are, and what the cluster's
/// setup step and Secrets would provide. Everything else is taken as the overlay gives it.
const LEFT_TO_THE_BENCHMARK: &[&str] = &[
    "AMQP_URL",
    "AMQP_CA_FILE",
    "DATABASE_URL",
    "HTTP_HOST",
    "HTTP_PORT",
    "QUEUE_NAME",
    "QUEUE_TYPE",
    "DELIVERY_LIMIT",
    "DECLARE_TOPOLOGY",
    "REQUIRE_TOKENS",
    "RUST_LOG",
    "LOG_FORMAT",
];

/// One service's settings and resources as the production overlay renders them.
pub struct Rendered {
    pub env: BTreeMap<String, String>,
    /// `requests.cpu`, `limits.cpu`, `requests.memory`, `limits.memory`, as written.
    pub resources: BTreeMap<String, String>,
}

/// Both services' settings, from one rendering of the production overlay.
pub struct Settings {
    publisher: Rendered,
    consumer: Rendered,
}

impl Settings {
    /// Renders the production overlay (`kubectl kustomize`) and reads both Deployments' settings.
    pub fn render() -> anyhow::Result<Self> {
        let objects = render_overlay()?;
        Ok(Self {
            publisher: rendered(&objects, "message-publisher")?,
            consumer: rendered(&objects, "message-consumer")?,
        })
    }
}

fn render_overlay() -> anyhow::Result<Vec<Value>> {
    let overlay = Path::new(env!("CARGO_MANIFEST_DIR")).join("../kube/overlays/production");
    let output = Command::new("kubectl")
        .arg("kustomize")
        .arg(&overlay)
        .output()
        .context("running kubectl kustomize (install kubectl)")?;
    anyhow::ensure!(
        output.status.success(),
        "kubectl kustomize: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let text = String::from_utf8(output.stdout)?;
    Ok(serde_yaml_ng::Deserializer::from_str(&text)
        .map(serde::Deserialize::deserialize)
        .collect::<Result<Vec<Value>, _>>()?)
}

/// `deployment`'s settings and resources among the rendered `objects`.
fn rendered(objects: &[Value], deployment: &str) -> anyhow::Result<Rendered> {
    let find = |kind: &str, name: &str| {
        objects
            .iter()
            .find(|o| o["kind"] == kind && o["metadata"]["name"] == name)
    };
    let container = &find("Deployment", deployment)
        .with_context(|| format!("no Deployment {deployment} in the production overlay"))?["spec"]
        ["template"]["spec"]["containers"][0];
    let mut env = BTreeMap::new();
    for source in container["envFrom"].as_array().into_iter().flatten() {
        let Some(name) = source["configMapRef"]["name"].as_str() else {
            continue;
        };
        let map = find("ConfigMap", name).with_context(|| format!("no ConfigMap {name}"))?;
        for (key, value) in map["data"].as_object().into_iter().flatten() {
            env.insert(key.clone(), value.as_str().unwrap_or_default().to_owned());
        }
    }
    for variable in container["env"].as_array().into_iter().flatten() {
        if let (Some(name), Some(value)) = (variable["name"].as_str(), variable["value"].as_str()) {
            env.insert(name.to_owned(), value.to_owned());
        }
    }
    env.retain(|name, _| {
        !LEFT_TO_THE_BENCHMARK.contains(&name.as_str()) && !name.contains("TOKENS")
    });
    let mut resources = BTreeMap::new();
    for kind in ["requests", "limits"] {
        for resource in ["cpu", "memory"] {
            if let Some(value) = container["resources"][kind][resource].as_str() {
                resources.insert(format!("{kind}.{resource}"), value.to_owned());
            }
        }
    }
    Ok(Rendered { env, resources })
}

/// The environment of `rendered`, as [`Service::start_with`] takes it.
fn env_of(rendered: &Rendered) -> Vec<(&str, String)> {
    rendered
        .env
        .iter()
        .map(|(name, value)| (name.as_str(), value.clone()))
        .collect()
}

/// CPU cores a process used over `elapsed`, from its CPU seconds before and after.
fn cores(before: f64, after: f64, elapsed: Duration) -> f64 {
    (after - before) / elapsed.as_secs_f64()
}

/// Measures both services with the production overlay's settings on the broker of `amqp_url`.
pub async fn measure(
    plan: &Plan,
    amqp_url: &str,
    settings: &Settings,
    table: &mut Table,
) -> anyhow::Result<()> {
    let (publisher_settings, consumer_settings) = (&settings.publisher, &settings.consumer);
    let shards: u16 = consumer_settings
        .env
        .get("QUEUE_SHARDS")
        .map_or(Ok(1), |value| value.parse())
        .context("QUEUE_SHARDS of the production consumer")?;
    let scratch = Scratch::on(amqp_url, shards).await?;
    let publisher = Service::start_with("publisher", &scratch, &env_of(publisher_settings)).await?;

    // The two services together: what a pod of each costs while the queue does not grow.
    let consumer = Service::start_with("consumer", &scratch, &env_of(consumer_settings)).await?;
    let (publisher_cpu, consumer_cpu) = (publisher.cpu_seconds(), consumer.cpu_seconds());
    let before = f64::from(scratch.queue_depth().await?);
    let started = Instant::now();
    let flowing = services::load(&publisher, 64, 100, plan.http_duration, None).await?;
    let elapsed = started.elapsed();
    let grown = f64::from(scratch.queue_depth().await?) - before;
    let sustained = (flowing.accepted as f64 - grown) / elapsed.as_secs_f64();
    table.record(FLOWING, "msg/s", sustained.min(flowing.rate));
    table.record(
        "  publisher CPU cores (batches of 100, flowing)",
        "cores",
        cores(publisher_cpu, publisher.cpu_seconds(), elapsed),
    );
    table.record(
        "  consumer CPU cores (flowing)",
        "cores",
        cores(consumer_cpu, consumer.cpu_seconds(), elapsed),
    );
    wait_until_drained(&scratch).await?;

    // Single messages: the publisher's costliest way in.
    let publisher_cpu = publisher.cpu_seconds();
    let started = Instant::now();
    let singles = services::load(&publisher, 64, 1, plan.http_duration, None).await?;
    table.record(SINGLES, "msg/s", singles.rate);
    table.record(
        "  publisher CPU cores (single messages)",
        "cores",
        cores(publisher_cpu, publisher.cpu_seconds(), started.elapsed()),
    );
    wait_until_drained(&scratch).await?;
    let flowing_peak = consumer.peak_rss_mib();
    drop(consumer);

    // A backlog drained by a consumer that starts on it: the consumer's heaviest memory.
    services::load(&publisher, 64, 100, plan.http_duration, None).await?;
    let backlog = scratch.queue_depth().await?;
    let started = Instant::now();
    let consumer = Service::start_with("consumer", &scratch, &env_of(consumer_settings)).await?;
    let consumer_cpu = consumer.cpu_seconds();
    wait_until_drained(&scratch).await?;
    let elapsed = started.elapsed();
    table.record(DRAIN, "msg/s", f64::from(backlog) / elapsed.as_secs_f64());
    table.record(
        "  consumer CPU cores (backlog)",
        "cores",
        cores(consumer_cpu, consumer.cpu_seconds(), elapsed),
    );
    table.record(PUBLISHER_PEAK, "MiB", publisher.peak_rss_mib());
    table.record(
        CONSUMER_PEAK,
        "MiB",
        consumer.peak_rss_mib().max(flowing_peak),
    );
    drop((publisher, consumer));
    scratch.remove().await
}

/// Waits until every shard is empty, for at most two minutes.
async fn wait_until_drained(scratch: &Scratch) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(120);
    while scratch.queue_depth().await? > 0 {
        anyhow::ensure!(
            Instant::now() < deadline,
            "the consumer did not drain the queue"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Ok(())
}

const FLOWING: &str = "production settings: end to end (batches of 100), queue not growing";
const SINGLES: &str = "production settings: publisher single messages, 64 clients";
const DRAIN: &str = "production settings: consumer drain of a backlog";
const PUBLISHER_PEAK: &str = "production settings: publisher peak RSS";
const CONSUMER_PEAK: &str = "production settings: consumer peak RSS (flowing, then a backlog)";

/// The settings measured, and the peaks beside the overlay's requests and limits.
pub fn print_summary(table: &Table, settings: &Settings) {
    for (deployment, settings, peak) in [
        ("message-publisher", &settings.publisher, PUBLISHER_PEAK),
        ("message-consumer", &settings.consumer, CONSUMER_PEAK),
    ] {
        let env: Vec<String> = settings
            .env
            .iter()
            .map(|(name, value)| format!("{name}={value}"))
            .collect();
        println!("\n{deployment}: {}", env.join(" "));
        println!(
            "  peak RSS {:.1} MiB; overlay {:?}",
            table.median(peak),
            settings.resources
        );
    }
}
