//! The services under measurement: the release binaries as processes, an HTTP load of keep-alive clients,
//! and what `/proc` says each process spent.

use std::{
    process::Command,
    time::{Duration, Instant},
};

pub use end_to_end::process::cpu_seconds;
use end_to_end::process::{release_binary, ServiceProcess, SERVICE_LOG};
use futures::future::join_all;

use crate::{
    fixture::{message, Scratch},
    http_load::{run_client, Client, Request},
};

/// A release binary of the workspace running as a child process.
pub struct Service {
    process: ServiceProcess,
    /// `127.0.0.1:<port>` of its HTTP server.
    pub address: String,
}

impl Service {
    pub async fn start(name: &str, scratch: &Scratch) -> anyhow::Result<Self> {
        Self::start_with(name, scratch, &[]).await
    }

    /// [`Service::start`] with `env` set on top of the scratch's settings (a `DATABASE_URL` through a
    /// proxy, a writer count). Returns once it answers `/readyz` with 200.
    pub async fn start_with(
        name: &str,
        scratch: &Scratch,
        env: &[(&str, String)],
    ) -> anyhow::Result<Self> {
        let mut command = Command::new(release_binary(name)?);
        command
            .env("AMQP_URL", &scratch.amqp_url)
            .env("QUEUE_SHARDS", scratch.shards.to_string())
            .env("QUEUE_NAME", &scratch.queue)
            .env("DATABASE_URL", scratch.database_url())
            .envs(env.iter().map(|(name, value)| (*name, value.as_str())));
        // The service says which port it took; reading that blocks, so not on the runtime's threads.
        let process =
            tokio::task::spawn_blocking(move || ServiceProcess::spawn(command, None, SERVICE_LOG))
                .await?;
        let service = Self {
            address: format!("127.0.0.1:{}", process.port()),
            process,
        };
        let readyz = Request::get(&service.address, "/readyz");
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Ok(200) = Client::new(&service.address).send(&readyz).await {
                return Ok(service);
            }
            anyhow::ensure!(Instant::now() < deadline, "{name} not ready");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// The value of a counter or gauge on the service's `/metrics` (0 if absent). Reading it costs the
    /// service far less than a query would cost the database it is measured against.
    pub async fn metric(&self, name: &str) -> anyhow::Result<f64> {
        let mut client = Client::new(&self.address);
        let (status, body) = client
            .fetch(&Request::get(&self.address, "/metrics"))
            .await?;
        anyhow::ensure!(status == 200, "/metrics answered {status}");
        let text = std::str::from_utf8(body)?;
        Ok(text
            .lines()
            .find_map(|line| line.strip_prefix(name)?.strip_prefix(' '))
            .and_then(|value| value.trim().parse().ok())
            .unwrap_or(0.0))
    }

    /// Resident memory now, in MiB.
    pub fn rss_mib(&self) -> f64 {
        self.process.proc_status_kib("VmRSS:").unwrap_or(0) as f64 / 1024.0
    }

    /// Highest resident memory so far, in MiB.
    pub fn peak_rss_mib(&self) -> f64 {
        self.process.proc_status_kib("VmHWM:").unwrap_or(0) as f64 / 1024.0
    }

    /// CPU time (user + system) spent so far, in seconds.
    pub fn cpu_seconds(&self) -> f64 {
        self.process.cpu_seconds()
    }
}

/// CPU seconds per 10,000 messages, from `cpu` seconds spent on `messages`.
pub fn per_10k(cpu: f64, messages: usize) -> f64 {
    cpu * 10_000.0 / messages.max(1) as f64
}

/// What an HTTP load measured.
pub struct LoadResult {
    /// Messages accepted per second.
    pub rate: f64,
    pub p50: Duration,
    pub p99: Duration,
    pub accepted: usize,
    /// CPU seconds the load generator (this process) spent per 10,000 accepted messages.
    pub generator_cpu_per_10k: f64,
}

/// `clients` keep-alive clients posting for `duration`, each request carrying `per_request` messages
/// (1: `/message/publish`, more: `/message/publish/batch`). With `pace`, the clients together send at most
/// that many requests a second.
pub async fn load(
    publisher: &Service,
    clients: usize,
    per_request: usize,
    duration: Duration,
    pace: Option<f64>,
) -> anyhow::Result<LoadResult> {
    let (path, body) = if per_request == 1 {
        ("/message/publish", serde_json::to_vec(&message())?)
    } else {
        let batch = vec![message(); per_request];
        ("/message/publish/batch", serde_json::to_vec(&batch)?)
    };
    let request = Request::post_json(&publisher.address, path, &body);
    let interval = pace.map(|per_second| Duration::from_secs_f64(clients as f64 / per_second));
    let cpu_before = cpu_seconds("self");
    let started = Instant::now();
    let tasks = (0..clients).map(|_| {
        tokio::spawn(run_client(
            publisher.address.clone(),
            request.clone(),
            202,
            started,
            duration,
            interval,
        ))
    });
    let mut latencies: Vec<Duration> = join_all(tasks)
        .await
        .into_iter()
        .flat_map(|t| t.unwrap_or_default())
        .collect();
    let elapsed = started.elapsed().as_secs_f64();
    let generator_cpu = cpu_seconds("self") - cpu_before;
    latencies.sort();
    let percentile = |p: f64| {
        latencies
            .get(((latencies.len() as f64 * p) as usize).min(latencies.len().saturating_sub(1)))
            .copied()
            .unwrap_or_default()
    };
    let accepted = latencies.len() * per_request;
    Ok(LoadResult {
        rate: accepted as f64 / elapsed,
        p50: percentile(0.50),
        p99: percentile(0.99),
        accepted,
        generator_cpu_per_10k: per_10k(generator_cpu, accepted),
    })
}
