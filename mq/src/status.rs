//! `mq status`: whether each service is ready (`/readyz`), the backlog of every queue and the rates,
//! all from what the services themselves export at `/metrics`.

use std::{
    collections::BTreeMap,
    io::Write,
    time::{Duration, Instant},
};

use reqwest::Method;
use serde::Serialize;

use crate::{
    cli::{Output, StatusArgs},
    client::{Client, Failure, Service},
    metrics::{self, Sample},
    output::printable,
    ExitStatus,
};

/// Longest wait for a probe or a scrape: a service slower than this is not healthy anyway.
const PROBE_TIMEOUT: Duration = Duration::from_secs(5);

/// What `mq status` found out.
#[derive(Debug, Serialize)]
struct Report {
    publisher: ServiceReport,
    consumer: ServiceReport,
    /// By queue: `ready` and `unacknowledged` messages, consumers, and the consumer's rates.
    queues: BTreeMap<String, QueueReport>,
}

#[derive(Debug, Serialize)]
struct ServiceReport {
    url: String,
    ready: bool,
    /// Why it is not ready: its problem, or why it did not answer.
    #[serde(skip_serializing_if = "Option::is_none")]
    problem: Option<String>,
    /// Totals of its counters, by metric name.
    counters: BTreeMap<&'static str, f64>,
    /// Messages accepted per second between the two scrapes (publisher only).
    #[serde(skip_serializing_if = "Option::is_none")]
    accepted_per_second: Option<f64>,
}

#[derive(Debug, Default, Serialize)]
struct QueueReport {
    ready: f64,
    unacknowledged: f64,
    consumers: Option<f64>,
    drain_per_second: Option<f64>,
    inflow_per_second: Option<f64>,
}

/// Counters shown for each service, by the names `publisher/src/metrics.rs` and
/// `consumer/src/metrics.rs` register.
const PUBLISHER_COUNTERS: &[&str] = &[
    "publisher_messages_accepted_total",
    "publisher_requests_refused_total",
    "publisher_messages_republished_total",
    "publisher_broker_connected",
];
const CONSUMER_COUNTERS: &[&str] = &[
    "consumer_messages_stored_total",
    "consumer_messages_duplicate_total",
    "consumer_messages_dead_lettered_total",
    "consumer_key_conflicts_total",
    "consumer_broker_connected",
    "consumer_database_up",
    "consumer_feed_followers",
];
const ACCEPTED: &str = "publisher_messages_accepted_total";

/// Reports on both services; 0 when both are ready, 1 otherwise.
pub async fn run(client: &Client, args: &StatusArgs) -> anyhow::Result<ExitStatus> {
    let (publisher, consumer) = tokio::join!(
        service(client, Service::Publisher, PUBLISHER_COUNTERS),
        service(client, Service::Consumer, CONSUMER_COUNTERS),
    );
    let (mut publisher, _) = publisher;
    let (consumer, consumer_samples) = consumer;
    if args.interval > 0.0 {
        if let Some(before) = publisher.counters.get(ACCEPTED).copied() {
            let started = Instant::now();
            tokio::time::sleep(Duration::from_secs_f64(args.interval)).await;
            if let Ok(after) = scrape(client, Service::Publisher).await {
                if let Some(after) = metrics::total(&after, ACCEPTED) {
                    publisher.accepted_per_second =
                        Some((after - before).max(0.0) / started.elapsed().as_secs_f64());
                }
            }
        }
    }
    let report = Report {
        queues: queues(&consumer_samples),
        publisher,
        consumer,
    };
    let mut stdout = std::io::stdout().lock();
    match args.output {
        Output::Json => writeln!(stdout, "{}", serde_json::to_string_pretty(&report)?)?,
        Output::Table => print_table(&mut stdout, &report)?,
    }
    Ok(if report.publisher.ready && report.consumer.ready {
        ExitStatus::Success
    } else {
        ExitStatus::Failed
    })
}

/// One service's readiness and counters, and its samples for the caller to read more from.
async fn service(
    client: &Client,
    which: Service,
    counters: &[&'static str],
) -> (ServiceReport, Vec<Sample>) {
    let probe = client
        .request(which, Method::GET, "/readyz")
        .timeout(PROBE_TIMEOUT);
    let (ready, problem) = match client.send(probe).await {
        Ok(_) => (true, None),
        Err(failure) => (false, Some(failure.to_string())),
    };
    let samples = scrape(client, which).await.unwrap_or_default();
    let report = ServiceReport {
        url: client.base(which).to_owned(),
        ready,
        problem,
        counters: counters
            .iter()
            .filter_map(|&name| Some((name, metrics::total(&samples, name)?)))
            .collect(),
        accepted_per_second: None,
    };
    (report, samples)
}

async fn scrape(client: &Client, which: Service) -> Result<Vec<Sample>, Failure> {
    let request = client
        .request(which, Method::GET, "/metrics")
        .timeout(PROBE_TIMEOUT);
    let answer = client.send(request).await?;
    Ok(metrics::parse(&String::from_utf8_lossy(&answer.body)))
}

/// The backlog by queue from `consumer_queue_messages{queue,state}`, with the consumers and rates the
/// consumer exports for the same queues.
fn queues(samples: &[Sample]) -> BTreeMap<String, QueueReport> {
    let mut queues: BTreeMap<String, QueueReport> = BTreeMap::new();
    for sample in samples {
        let Some(queue) = sample.label("queue") else {
            continue;
        };
        let entry = || queue.to_owned();
        match sample.name.as_str() {
            "consumer_queue_messages" => {
                let report = queues.entry(entry()).or_default();
                match sample.label("state") {
                    Some("ready") => report.ready += sample.value,
                    Some("unacknowledged") => report.unacknowledged += sample.value,
                    _ => {}
                }
            }
            "consumer_queue_consumers" => {
                queues.entry(entry()).or_default().consumers = Some(sample.value)
            }
            "consumer_queue_drain_per_second" => {
                queues.entry(entry()).or_default().drain_per_second = Some(sample.value)
            }
            "consumer_queue_inflow_per_second" => {
                queues.entry(entry()).or_default().inflow_per_second = Some(sample.value)
            }
            _ => {}
        }
    }
    queues
}

fn print_table(out: &mut impl Write, report: &Report) -> std::io::Result<()> {
    for (name, service) in [
        ("publisher", &report.publisher),
        ("consumer", &report.consumer),
    ] {
        let state = match &service.problem {
            None => "ready".to_owned(),
            Some(problem) => format!("NOT READY ({})", printable(problem)),
        };
        writeln!(out, "{name:<10} {:<28} {state}", printable(&service.url))?;
        for (counter, value) in &service.counters {
            writeln!(out, "  {counter:<42} {value}")?;
        }
        if let Some(rate) = service.accepted_per_second {
            writeln!(out, "  {:<42} {rate:.1}", "accepted per second (now)")?;
        }
    }
    if !report.queues.is_empty() {
        writeln!(
            out,
            "\n{:<40} {:>10} {:>10} {:>9} {:>9} {:>9}",
            "QUEUE", "READY", "UNACKED", "CONSUMERS", "DRAIN/S", "INFLOW/S"
        )?;
        let show = |value: Option<f64>| value.map_or("-".to_owned(), |v| format!("{v:.1}"));
        for (queue, q) in &report.queues {
            writeln!(
                out,
                "{:<40} {:>10} {:>10} {:>9} {:>9} {:>9}",
                printable(queue),
                q.ready,
                q.unacknowledged,
                q.consumers.map_or("-".to_owned(), |c| c.to_string()),
                show(q.drain_per_second),
                show(q.inflow_per_second),
            )?;
        }
    }
    Ok(())
}
