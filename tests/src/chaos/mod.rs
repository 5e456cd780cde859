//! The chaos soak: setup, load, faults, recovery, and the exactly-once check.
//!
//! Layout: [`world`] starts and holds everything (the database pair of [`postgres`], the broker nodes of
//! [`broker`], the services of [`services`] in the namespaces of [`net`], reached through [`relay`]);
//! [`clients`] is the load; [`faults`] the table of faults and their scheduler; [`checker`] the final
//! accounting.

mod broker;
mod checker;
mod clients;
mod faults;
mod net;
mod postgres;
mod readers;
mod relay;
mod rng;
mod services;
mod world;

use std::{
    path::PathBuf,
    process::ExitCode,
    sync::Arc,
    time::{Duration, Instant},
};

use anyhow::Context;
use clients::{Clients, Kind, LARGEST_PAD};
use lapin::options::{ExchangeDeleteOptions, QueueDeleteOptions};
use world::{Setup, World, DATABASE};

/// `--minutes N [--seed S] --repo DIR --bin-dir DIR --run-dir DIR`
struct Options {
    minutes: f64,
    seed: u64,
    setup: Setup,
}

fn options() -> anyhow::Result<Options> {
    let mut args = std::env::args().skip(1);
    let (mut minutes, mut seed) = (None, None);
    let (mut repo, mut bin_dir, mut run_dir) = (None, None, None);
    while let Some(flag) = args.next() {
        let mut value = || args.next().with_context(|| format!("{flag} needs a value"));
        match flag.as_str() {
            "--minutes" => minutes = Some(value()?.parse().context("--minutes: a number")?),
            "--seed" => seed = Some(value()?.parse().context("--seed: a whole number")?),
            "--repo" => repo = Some(PathBuf::from(value()?)),
            "--bin-dir" => bin_dir = Some(PathBuf::from(value()?)),
            "--run-dir" => run_dir = Some(PathBuf::from(value()?)),
            other => anyhow::bail!("unknown argument {other}"),
        }
    }
    let seed = seed.unwrap_or_else(|| {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(1, |t| t.as_secs())
    });
    Ok(Options {
        minutes: minutes.context("--minutes N is required")?,
        seed,
        setup: Setup {
            repo: repo.context("--repo")?,
            bin_dir: bin_dir.context("--bin-dir")?,
            run_dir: run_dir.context("--run-dir")?,
            queue: format!(
                "chaos-{seed}-{}",
                &uuid::Uuid::new_v4().simple().to_string()[..8]
            ),
            pg_ports: [55441, 55442],
        },
    })
}

/// The clients: keyed ones retry, unkeyed ones do not, and two send the largest batches.
const CLIENTS: &[Kind] = &[
    Kind::Keyed,
    Kind::Keyed,
    Kind::Keyed,
    Kind::Keyed,
    Kind::Unkeyed,
    Kind::Unkeyed,
    Kind::Batch { pad: LARGEST_PAD },
    Kind::Batch { pad: 0 },
];

pub fn main() -> ExitCode {
    let options = match options() {
        Ok(options) => options,
        Err(error) => {
            eprintln!("chaos: {error:#}");
            return ExitCode::from(2);
        }
    };
    let runtime = tokio::runtime::Runtime::new().expect("a runtime");
    let code = runtime.block_on(async {
        let world = match World::build(&options.setup).await {
            Ok(world) => Arc::new(world),
            Err(error) => {
                eprintln!("chaos: setting up: {error:#}");
                return ExitCode::from(2);
            }
        };
        let code = tokio::select! {
            code = soak(world.clone(), &options) => code,
            signal = interrupted() => {
                eprintln!("chaos: {signal}: restoring and stopping");
                ExitCode::from(130)
            }
        };
        let ending = world.clone();
        let _ = tokio::task::spawn_blocking(move || {
            let _ = ending.broker.restore();
            ending.tear_down();
        })
        .await;
        delete_queues(&world.queue).await;
        code
    });
    runtime.shutdown_timeout(Duration::from_secs(5));
    code
}

async fn interrupted() -> &'static str {
    use tokio::signal::unix::{signal, SignalKind};
    let (mut int, mut term) = (
        signal(SignalKind::interrupt()).expect("SIGINT handler"),
        signal(SignalKind::terminate()).expect("SIGTERM handler"),
    );
    tokio::select! {
        _ = int.recv() => "interrupted",
        _ = term.recv() => "terminated",
    }
}

async fn soak(world: Arc<World>, options: &Options) -> ExitCode {
    let http = reqwest::Client::new();
    let seed = options.seed;
    println!(
        "chaos soak: {} min, seed {seed}, queue {}, logs in {}",
        options.minutes,
        world.queue,
        options.setup.run_dir.display()
    );
    if let Err(what) = all_ready(&http, &world, Duration::from_secs(120)).await {
        eprintln!("chaos: {what} did not become ready at start");
        return ExitCode::from(2);
    }
    let started = Instant::now();
    let until = started + Duration::from_secs_f64(options.minutes * 60.0);
    let clients = Clients::start(&world.queue, world.publisher_urls(), CLIENTS);
    let readers = readers::Readers::start(world.consumer_urls());
    let scheduler = faults::Scheduler::new(world.clone(), seed, started);
    let tally = scheduler.run(until, &clients).await;
    tokio::time::sleep(until.saturating_duration_since(Instant::now())).await;
    println!(
        "[{:>4}s] soak over: restoring everything",
        started.elapsed().as_secs()
    );

    readers.stop_replaying();
    let restoring = world.clone();
    let restored = tokio::task::spawn_blocking(move || restoring.restore()).await;
    let recovery = Instant::now();
    let mut trouble: Vec<String> = Vec::new();
    if let Ok(Err(error)) | Err(error) = restored.map_err(anyhow::Error::from) {
        trouble.push(format!("restoring: {error:#}"));
    }
    if let Err(what) = all_ready(&http, &world, Duration::from_secs(120)).await {
        trouble.push(format!("{what} not ready 120 s after the faults ended"));
    }
    let ready_after = recovery.elapsed();
    let mut record = clients.stop().await;
    // Each publisher must take a message again: recovered, not only answering /readyz.
    for (i, url) in world.publisher_urls().iter().enumerate() {
        let nonce = format!("{}-probe{i}", world.queue);
        let body = clients::message("probe", &nonce, 0);
        let id = clients::keyed_id(&nonce, &body, None);
        record.attempts.insert(nonce.clone(), Some(id));
        match probe(&http, url, &nonce, &body).await {
            Some(answered) => {
                record.accepted.insert(nonce, answered);
            }
            None => trouble.push(format!("{url} did not accept a message within 60 s")),
        }
    }
    let drained = drain(&world, Duration::from_secs(300)).await;
    if let Err(what) = &drained {
        trouble.push(what.clone());
    }
    let url = world.db.lock().unwrap().url(DATABASE);
    let rows = match checker::rows(&url).await {
        Ok(rows) => rows,
        Err(error) => {
            eprintln!("chaos: reading the table: {error:#}");
            return ExitCode::from(1);
        }
    };
    let outcome = checker::check(&record, &rows);
    let order = match checker::feed_order(&url).await {
        Ok(order) => order,
        Err(error) => {
            eprintln!("chaos: reading the feed order: {error:#}");
            return ExitCode::from(1);
        }
    };
    let (readings, replays) = readers.finish(rows.len(), Duration::from_secs(120)).await;
    let mut feed_exact = true;
    println!(
        "dead-letter replays: {} answered, {} messages put back",
        replays.0, replays.1
    );
    for reading in &readings {
        let compared = readers::compare(&reading.ids, &order);
        let polling = !reading.name.starts_with("feed");
        if !polling && !compared.exact() {
            feed_exact = false;
        }
        println!(
            "reader {}: {} served, {} twice, {} of {} stored never served, {} unknown, {} out of order; \
             {} failures, {} resumes{}",
            reading.name,
            reading.ids.len(),
            compared.twice,
            compared.missing,
            order.len(),
            compared.unknown,
            compared.backwards,
            reading.failures,
            reading.resumes,
            if polling { " (newest-first polling: misses are expected)" } else { "" }
        );
    }
    if !feed_exact {
        trouble.push("a feed reader did not see every stored row exactly once in order".into());
    }
    print_report(
        &record,
        &tally,
        &outcome,
        ready_after,
        drained.ok(),
        &trouble,
    );
    if outcome.exact() && record.unstable == 0 && trouble.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    }
}

/// Publishes `body` under the key `nonce` to the publisher at `url` until it is answered 202 (60 s at
/// most); returns the id answered.
async fn probe(
    http: &reqwest::Client,
    url: &str,
    nonce: &str,
    body: &serde_json::Value,
) -> Option<uuid::Uuid> {
    let deadline = Instant::now() + Duration::from_secs(60);
    while Instant::now() < deadline {
        let answer = http
            .post(format!("{url}/message/publish"))
            .header("Idempotency-Key", nonce)
            .json(body)
            .timeout(Duration::from_secs(10))
            .send()
            .await;
        if let Ok(response) = answer.and_then(|r| r.error_for_status()) {
            if response.status() == 202 {
                let answer: serde_json::Value = response.json().await.ok()?;
                return answer["id"].as_str()?.parse().ok();
            }
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    None
}

/// Waits until every service answers `/readyz` with 200; names the first that did not in time.
async fn all_ready(http: &reqwest::Client, world: &World, within: Duration) -> Result<(), String> {
    let deadline = Instant::now() + within;
    for (name, url) in world.urls() {
        while end_to_end::readiness(http, &url).await != 200 {
            if Instant::now() > deadline {
                return Err(name);
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }
    Ok(())
}

/// Waits until the shard queues hold nothing, ready or unacknowledged; returns how long it took and the
/// messages left in the dead-letter queue.
async fn drain(world: &Arc<World>, within: Duration) -> Result<(Duration, u64), String> {
    let started = Instant::now();
    let prefix = format!("{}.", world.queue);
    loop {
        let listing = world.clone();
        let prefix = prefix.clone();
        let queues = tokio::task::spawn_blocking(move || listing.broker.queue_messages(&prefix))
            .await
            .map_err(|e| e.to_string())
            .and_then(|r| r.map_err(|e| format!("{e:#}")));
        if let Ok(queues) = &queues {
            let dead = queues
                .iter()
                .filter(|(name, _)| name.ends_with(".dead"))
                .map(|(_, n)| n)
                .sum();
            let waiting: u64 = queues
                .iter()
                .filter(|(name, _)| !name.ends_with(".dead"))
                .map(|(_, n)| n)
                .sum();
            if waiting == 0 && queues.len() > 1 {
                return Ok((started.elapsed(), dead));
            }
        }
        if started.elapsed() > within {
            return Err(format!(
                "the queues did not drain within {within:?}: {queues:?}"
            ));
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

fn print_report(
    record: &clients::Record,
    tally: &faults::Tally,
    outcome: &checker::Outcome,
    ready_after: Duration,
    drained: Option<(Duration, u64)>,
    trouble: &[String],
) {
    let answers: Vec<String> = record
        .statuses
        .iter()
        .map(|(status, n)| match status {
            0 => format!("no answer {n}"),
            status => format!("{status} {n}"),
        })
        .collect();
    let faults: Vec<String> = tally
        .by_kind
        .iter()
        .map(|(kind, n)| format!("{kind} {n}"))
        .collect();
    let total: u64 = tally.by_kind.values().sum();
    println!("---- chaos soak result");
    println!(
        "messages: attempted {}, accepted {}, stored {} ({} stored without a 202: answer lost or outcome unknown)",
        record.attempts.len(),
        record.accepted.len(),
        outcome.stored,
        outcome.stored_unanswered
    );
    println!(
        "requests: {}; keys abandoned after the soak: {}",
        answers.join(", "),
        record.abandoned
    );
    println!(
        "faults: {total} ({}); two at once {}, during a largest batch {}",
        faults.join(", "),
        tally.two_at_once,
        tally.during_largest_batch
    );
    for error in &tally.errors {
        println!("fault error: {error}");
    }
    match drained {
        Some((took, dead)) => println!(
            "recovery: ready {:.1} s after the faults ended, queues drained in {:.1} s, dead letters {dead}",
            ready_after.as_secs_f64(),
            took.as_secs_f64()
        ),
        None => println!("recovery: queues not drained"),
    }
    for what in trouble {
        println!("NOT RECOVERED: {what}");
    }
    println!(
        "lost {}, doubled {}, stray {}, unstable key ids {}",
        outcome.lost, outcome.doubled, outcome.stray, record.unstable
    );
    println!(
        "verdict: {}",
        if outcome.exact() && record.unstable == 0 && trouble.is_empty() {
            "PASS"
        } else {
            "FAIL"
        }
    );
}

/// Deletes the run's queues and exchanges from the cluster.
async fn delete_queues(queue: &str) {
    let urls: Vec<String> = broker::NODES
        .iter()
        .map(|&n| {
            format!(
                "amqp://guest:guest@127.0.0.1:{}/%2f",
                broker::Broker::port(n)
            )
        })
        .collect();
    let Ok(connection) = common::amqp::BrokerAddress::new(urls.join(","))
        .connect(lapin::ConnectionProperties::default())
        .await
    else {
        return;
    };
    if let Ok(channel) = connection.create_channel().await {
        let suffixes = ["", ".dead", ".unrouted", ".0", ".1", ".2", ".3"];
        for suffix in suffixes {
            let name = format!("{queue}{suffix}");
            let _ = channel
                .queue_delete(name.as_str().into(), QueueDeleteOptions::default())
                .await;
        }
        for suffix in [".exchange", ".dlx", ".shards"] {
            let name = format!("{queue}{suffix}");
            let _ = channel
                .exchange_delete(name.as_str().into(), ExchangeDeleteOptions::default())
                .await;
        }
    }
    let _ = connection.close(200, "done".into()).await;
}
