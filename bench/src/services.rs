//! The services under measurement: the release binaries as processes, an HTTP load of keep-alive clients,
//! and what `/proc` says each process spent.

use std::{
    net::TcpListener,
    path::PathBuf,
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use futures::future::join_all;

use crate::{
    fixture::{message, Scratch},
    http_load::{run_client, Client, Request},
};

/// A service binary running as a child process.
pub struct Service {
    child: Child,
    /// `127.0.0.1:<port>` of its HTTP server.
    pub address: String,
}

impl Service {
    pub async fn start(name: &str, scratch: &Scratch) -> anyhow::Result<Self> {
        Self::start_with(name, scratch, &[]).await
    }

    /// [`Service::start`] with `env` set on top of the scratch's settings (a `DATABASE_URL` through a
    /// proxy, a writer count).
    pub async fn start_with(
        name: &str,
        scratch: &Scratch,
        env: &[(&str, String)],
    ) -> anyhow::Result<Self> {
        let port = TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
        let binary = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join("../target/release")
            .join(name);
        anyhow::ensure!(
            binary.exists(),
            "{} is missing: cargo build --release",
            binary.display()
        );
        let child = Command::new(binary)
            .env("AMQP_URL", &scratch.amqp_url)
            .env("QUEUE_SHARDS", scratch.shards.to_string())
            .env("QUEUE_NAME", &scratch.queue)
            .env("DATABASE_URL", scratch.database_url())
            .env("HTTP_HOST", "127.0.0.1")
            .env("HTTP_PORT", port.to_string())
            .env("RUST_LOG", "warn")
            .envs(env.iter().map(|(name, value)| (*name, value.as_str())))
            .stdout(Stdio::null())
            .spawn()?;
        let service = Self {
            child,
            address: format!("127.0.0.1:{port}"),
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

    fn proc_status(&self, field: &str) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id()))
            .unwrap_or_default();
        status
            .lines()
            .find_map(|line| line.strip_prefix(field))
            .and_then(|rest| rest.trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap_or(0)
    }

    /// Resident memory now, in MiB.
    pub fn rss_mib(&self) -> f64 {
        self.proc_status("VmRSS:") as f64 / 1024.0
    }

    /// Highest resident memory so far, in MiB.
    pub fn peak_rss_mib(&self) -> f64 {
        self.proc_status("VmHWM:") as f64 / 1024.0
    }

    /// CPU time (user + system) spent so far, in seconds.
    pub fn cpu_seconds(&self) -> f64 {
        cpu_seconds(&self.child.id().to_string())
    }
}

/// CPU seconds per 10,000 messages, from `cpu` seconds spent on `messages`.
pub fn per_10k(cpu: f64, messages: usize) -> f64 {
    cpu * 10_000.0 / messages.max(1) as f64
}

/// CPU time (user + system) that process `pid` (or `self`) has spent so far, in seconds.
pub fn cpu_seconds(pid: &str) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the command name, which is in parentheses and may contain spaces.
    let after = stat.rsplit_once(')').map_or("", |(_, rest)| rest);
    let fields: Vec<&str> = after.split_whitespace().collect();
    let ticks: f64 = fields.get(11).and_then(|f| f.parse().ok()).unwrap_or(0.0)
        + fields
            .get(12)
            .and_then(|f| f.parse::<f64>().ok())
            .unwrap_or(0.0);
    // SAFETY: a read-only query of a system constant.
    ticks / unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64
}

impl Drop for Service {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
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
