//! What the fault scenarios share: the release binaries as child processes, control of the machine's
//! RabbitMQ and PostgreSQL (always restored, even when a scenario fails), a load of concurrent clients
//! that records every attempt, and the final accounting.

use std::{
    collections::{BTreeMap, HashSet},
    path::PathBuf,
    process::{Child, Command, ExitStatus, Stdio},
    sync::{
        atomic::{AtomicBool, AtomicUsize, Ordering},
        Arc,
    },
    time::{Duration, Instant},
};

use common::Message;
use end_to_end::{amqp_url, eventually, StackConfig};
use publisher::idempotency::IdempotencyKey;
use sqlx::{postgres::PgPoolOptions, PgPool};
use tokio::task::JoinHandle;
use uuid::Uuid;

/// Where the release binaries are: `SERVICE_BIN_DIR`, else the workspace's `target/release`.
fn binary(name: &str) -> PathBuf {
    let dir = std::env::var_os("SERVICE_BIN_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target/release"));
    let path = dir.join(name);
    assert!(
        path.exists(),
        "{} is missing: build with `cargo build --release`",
        path.display()
    );
    path
}

/// One service binary running as a child process, restartable on the same port.
pub struct Service {
    name: &'static str,
    env: Vec<(String, String)>,
    child: Option<Child>,
    pub url: String,
}

impl Service {
    pub fn start(name: &'static str, env: Vec<(String, String)>) -> Self {
        let mut service = Self {
            name,
            env,
            child: None,
            url: String::new(),
        };
        service.spawn();
        service
    }

    /// Starts the binary on a port of its own choosing the first time, and on the same port after.
    fn spawn(&mut self) {
        let port = self
            .url
            .rsplit_once(':')
            .map(|(_, port)| port.parse().expect("a port"));
        let mut command = Command::new(binary(self.name));
        command.envs(self.env.iter().map(|(k, v)| (k.as_str(), v.as_str())));
        let (child, port) = end_to_end::process::spawn_listening(command, port);
        self.url = format!("http://127.0.0.1:{port}");
        self.child = Some(child);
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("running").id()
    }

    /// SIGKILL: nothing of the service's own shutdown runs.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            child.kill().expect("kill");
            child.wait().expect("reap");
        }
    }

    /// SIGTERM, as Kubernetes sends; returns how the process exited and how long it took.
    pub fn terminate(&mut self) -> (ExitStatus, Duration) {
        let mut child = self.child.take().expect("running");
        let started = Instant::now();
        // SAFETY: signalling a child this struct owns and has not reaped.
        assert_eq!(
            unsafe { libc::kill(child.id() as libc::pid_t, libc::SIGTERM) },
            0
        );
        let status = child.wait().expect("reap");
        (status, started.elapsed())
    }

    /// Starts the binary again, on the same port.
    pub fn restart(&mut self) {
        assert!(self.child.is_none(), "stop it first");
        self.spawn();
    }

    /// Whether the process is still running (not crashed, not exited).
    pub fn is_running(&mut self) -> bool {
        self.child
            .as_mut()
            .is_some_and(|child| child.try_wait().expect("status").is_none())
    }

    /// Resident memory of the process, in KiB.
    pub fn rss_kib(&self) -> u64 {
        self.proc_status_kib("VmRSS:")
    }

    /// Peak resident memory of the process since it started (`VmHWM`), in KiB.
    pub fn peak_rss_kib(&self) -> u64 {
        self.proc_status_kib("VmHWM:")
    }

    fn proc_status_kib(&self, field: &str) -> u64 {
        let status =
            std::fs::read_to_string(format!("/proc/{}/status", self.pid())).expect("proc status");
        status
            .lines()
            .find_map(|line| line.strip_prefix(field))
            .and_then(|rest| rest.trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap_or_else(|| panic!("{field} in /proc status"))
    }
}

impl Drop for Service {
    fn drop(&mut self) {
        self.kill();
    }
}

pub use end_to_end::readiness;

pub async fn wait_ready(http: &reqwest::Client, url: &str, within: Duration) {
    eventually(within, &format!("{url} to be ready"), || async {
        (readiness(http, url).await == 200).then_some(())
    })
    .await;
}

/// The machine's RabbitMQ and PostgreSQL. Dropping it starts both again, whatever state a failed
/// scenario left them in.
pub struct Machine;

fn run(program: &str, args: &[&str]) -> bool {
    Command::new(program)
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

fn postgres_version() -> String {
    std::fs::read_dir("/etc/postgresql")
        .expect("PostgreSQL from the distribution's package")
        .filter_map(|entry| entry.ok()?.file_name().into_string().ok())
        .max()
        .expect("a cluster")
}

impl Machine {
    pub fn stop_broker_app(&self) {
        assert!(run("rabbitmqctl", &["stop_app"]), "rabbitmqctl stop_app");
    }

    pub fn start_broker_app(&self) {
        assert!(run("rabbitmqctl", &["start_app"]), "rabbitmqctl start_app");
    }

    /// Stops the whole Erlang node, as a crash or a host restart would.
    pub fn stop_broker_node(&self) {
        assert!(run("rabbitmqctl", &["stop"]), "rabbitmqctl stop");
    }

    pub fn start_broker_node(&self) {
        run("rabbitmq-server", &["-detached"]);
        let deadline = Instant::now() + Duration::from_secs(90);
        while !run("rabbitmqctl", &["await_startup"]) {
            assert!(Instant::now() < deadline, "RabbitMQ did not come back");
            std::thread::sleep(Duration::from_millis(500));
        }
    }

    pub fn stop_database(&self) {
        let version = postgres_version();
        assert!(run(
            "pg_ctlcluster",
            &[
                "--skip-systemctl-redirect",
                &version,
                "main",
                "stop",
                "-m",
                "fast"
            ]
        ));
    }

    pub fn start_database(&self) {
        let version = postgres_version();
        run(
            "pg_ctlcluster",
            &["--skip-systemctl-redirect", &version, "main", "start"],
        );
    }

    /// Puts back the watermark `scripts/fault-suite` found (`BROKER_MEMORY_WATERMARK`: a fraction, or
    /// `absolute <bytes>`), or RabbitMQ's default 0.4 when run without it.
    pub fn restore_memory_watermark(&self) {
        let found = std::env::var("BROKER_MEMORY_WATERMARK").unwrap_or_else(|_| "0.4".into());
        let mut args = vec!["set_vm_memory_high_watermark"];
        args.extend(found.split_whitespace());
        assert!(run("rabbitmqctl", &args), "watermark {found} put back");
    }

    pub fn set_memory_watermark(&self, fraction: &str) {
        assert!(run(
            "rabbitmqctl",
            &["set_vm_memory_high_watermark", fraction]
        ));
    }
}

impl Drop for Machine {
    fn drop(&mut self) {
        self.restore_memory_watermark();
        // Running, or only the app stopped (start it), or the whole node down (start the node).
        if !run("rabbitmqctl", &["await_startup", "--timeout", "2"])
            && !run("rabbitmqctl", &["start_app"])
        {
            self.start_broker_node();
        }
        self.start_database();
    }
}

/// A publisher and a consumer running as processes on a database and queue of their own.
pub struct Pipeline {
    pub publisher: Service,
    pub consumer: Service,
    pub db: PgPool,
    pub http: reqwest::Client,
    config: StackConfig,
    /// The broker (one node or a cluster's list) both services use.
    amqp_url: String,
    /// What both services were started with, for more of them.
    env: Vec<(String, String)>,
}

impl Pipeline {
    pub async fn start() -> Self {
        Self::start_with(&[]).await
    }

    /// Starts both services with extra environment variables for both.
    pub async fn start_with(extra: &[(&str, &str)]) -> Self {
        Self::start_on(&amqp_url(), extra).await
    }

    /// Starts both services on the broker of `amqp_url`, with extra environment variables for both.
    pub async fn start_on(amqp_url: &str, extra: &[(&str, &str)]) -> Self {
        let config = StackConfig::unique();
        let mut env = vec![
            ("AMQP_URL".to_owned(), amqp_url.to_owned()),
            ("QUEUE_NAME".to_owned(), config.queue.clone()),
            (
                "DATABASE_URL".to_owned(),
                config.consumer.database_url.clone(),
            ),
            ("SHUTDOWN_TIMEOUT_SECS".to_owned(), "20".to_owned()),
        ];
        env.extend(extra.iter().map(|(k, v)| (k.to_string(), v.to_string())));
        let publisher = Service::start("publisher", env.clone());
        let consumer = Service::start("consumer", env.clone());
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(30))
            .build()
            .unwrap();
        wait_ready(&http, &publisher.url, Duration::from_secs(30)).await;
        wait_ready(&http, &consumer.url, Duration::from_secs(30)).await;
        let db = PgPoolOptions::new()
            .max_connections(2)
            .connect_lazy(&config.consumer.database_url)
            .unwrap();
        Self {
            publisher,
            consumer,
            db,
            http,
            config,
            amqp_url: amqp_url.to_owned(),
            env,
        }
    }

    /// Another process of `name` (`publisher` or `consumer`) with this pipeline's settings, ready.
    pub async fn another(&self, name: &'static str) -> Service {
        let service = Service::start(name, self.env.clone());
        wait_ready(&self.http, &service.url, Duration::from_secs(30)).await;
        service
    }

    /// Ready messages in each of `queues`, read by passive declares.
    pub async fn queue_depths(&self, queues: &[String]) -> Vec<u32> {
        let connection = common::amqp::BrokerAddress::new(self.amqp_url.clone())
            .connect(Default::default())
            .await
            .expect("broker");
        let channel = connection.create_channel().await.expect("channel");
        let mut depths = Vec::new();
        for queue in queues {
            let declared = channel
                .queue_declare(
                    queue.as_str().into(),
                    lapin::options::QueueDeclareOptions {
                        passive: true,
                        ..Default::default()
                    },
                    Default::default(),
                )
                .await
                .expect("the queue exists");
            depths.push(declared.message_count());
        }
        let _ = connection.close(200, "counted".into()).await;
        depths
    }

    pub fn queue(&self) -> &str {
        &self.config.queue
    }

    /// Every id in the table (retrying while the database is coming back).
    pub async fn stored_ids(&self) -> Vec<Uuid> {
        eventually(
            Duration::from_secs(60),
            "the database to answer",
            || async {
                sqlx::query_scalar("SELECT id FROM messages")
                    .fetch_all(&self.db)
                    .await
                    .ok()
            },
        )
        .await
    }

    /// The delivery guarantee: every accepted id is stored exactly once, and nothing is stored that was
    /// not attempted. Waits for the consumer to catch up; returns how long that took.
    pub async fn assert_accepted_stored_once(&self, report: &LoadReport) -> Duration {
        let started = Instant::now();
        let accepted: HashSet<Uuid> = report.accepted.iter().copied().collect();
        assert_eq!(
            accepted.len(),
            report.accepted.len(),
            "an id was answered twice"
        );
        let rows = eventually(
            Duration::from_secs(120),
            "every accepted message to be stored",
            || async {
                let rows = self.stored_ids().await;
                let stored: HashSet<Uuid> = rows.iter().copied().collect();
                accepted.is_subset(&stored).then_some(rows)
            },
        )
        .await;
        let distinct: HashSet<Uuid> = rows.iter().copied().collect();
        assert_eq!(distinct.len(), rows.len(), "a message was stored twice");
        let attempted: HashSet<Uuid> = report.attempted.iter().copied().collect();
        let unknown: Vec<&Uuid> = distinct
            .iter()
            .filter(|id| !attempted.contains(id))
            .collect();
        assert!(
            unknown.is_empty(),
            "{} rows were never attempted",
            unknown.len()
        );
        started.elapsed()
    }
}

impl Drop for Pipeline {
    fn drop(&mut self) {
        // Stop the services first, or the consumer would declare the queue again after its removal.
        self.publisher.kill();
        self.consumer.kill();
        end_to_end::remove_resources_blocking_on(
            &self.amqp_url,
            &self.config.queue,
            &self.config.database,
        );
    }
}

/// What the clients of a [`Load`] saw.
#[derive(Debug, Default)]
pub struct LoadReport {
    /// Ids answered 202.
    pub accepted: Vec<Uuid>,
    /// The id of every attempt, answered or not (derived from its Idempotency-Key).
    pub attempted: Vec<Uuid>,
    /// Answers by status.
    pub statuses: BTreeMap<u16, usize>,
    /// Requests that got no answer (connection refused or reset, timeout).
    pub unanswered: usize,
    /// Their Idempotency-Key, body and id, for a client to retry.
    pub unanswered_attempts: Vec<(String, serde_json::Value, Uuid)>,
    /// Refusals (503) that came without a Retry-After header.
    pub refusals_without_retry_after: usize,
    /// When each 5xx answer arrived.
    pub refusals_at: Vec<Instant>,
    /// Each 503: when its request was sent, and how long the answer took.
    pub refusals: Vec<(Instant, Duration)>,
}

impl LoadReport {
    /// The slowest 503 among requests sent at or after `sent_after` (`None` for all of them).
    pub fn slowest_refusal(&self, sent_after: Option<Instant>) -> Duration {
        self.refusals
            .iter()
            .filter(|(sent, _)| sent_after.is_none_or(|after| *sent >= after))
            .map(|(_, took)| *took)
            .max()
            .unwrap_or_default()
    }
}

/// Concurrent clients publishing one message a request, each with its own Idempotency-Key, until stopped.
pub struct Load {
    stop: Arc<AtomicBool>,
    accepted: Arc<AtomicUsize>,
    clients: Vec<JoinHandle<LoadReport>>,
}

impl Load {
    pub fn start(http: &reqwest::Client, publisher_url: &str, clients: usize) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let accepted = Arc::new(AtomicUsize::new(0));
        let url = Arc::new(format!("{publisher_url}/message/publish"));
        let clients = (0..clients)
            .map(|client| {
                let (http, url, stop, accepted) =
                    (http.clone(), url.clone(), stop.clone(), accepted.clone());
                tokio::spawn(async move {
                    let mut report = LoadReport::default();
                    let mut n = 0u64;
                    while !stop.load(Ordering::Relaxed) {
                        n += 1;
                        let key = format!("load-{client}-{n}-{}", Uuid::new_v4().simple());
                        let body = serde_json::json!({ "sender": format!("client-{client}") });
                        let message: Message = serde_json::from_value(body.clone()).unwrap();
                        let id = IdempotencyKey::parse(key.as_bytes())
                            .unwrap()
                            .message_id(&message, None, None);
                        report.attempted.push(id);
                        let started = Instant::now();
                        let response = http
                            .post(url.as_str())
                            .header("Idempotency-Key", &key)
                            .json(&body)
                            .send()
                            .await;
                        match response {
                            Ok(response) => {
                                let status = response.status().as_u16();
                                *report.statuses.entry(status).or_default() += 1;
                                if status == 202 {
                                    report.accepted.push(id);
                                    accepted.fetch_add(1, Ordering::Relaxed);
                                } else if status >= 500 {
                                    report.refusals_at.push(Instant::now());
                                }
                                if status == 503 {
                                    report.refusals.push((started, started.elapsed()));
                                    if !response.headers().contains_key("retry-after") {
                                        report.refusals_without_retry_after += 1;
                                    }
                                    tokio::time::sleep(Duration::from_millis(50)).await;
                                }
                            }
                            Err(_) => {
                                report.unanswered += 1;
                                report.unanswered_attempts.push((key, body, id));
                                tokio::time::sleep(Duration::from_millis(50)).await;
                            }
                        }
                    }
                    report
                })
            })
            .collect();
        Self {
            stop,
            accepted,
            clients,
        }
    }

    /// Messages accepted so far.
    pub fn accepted(&self) -> usize {
        self.accepted.load(Ordering::Relaxed)
    }

    /// Waits until `more` further messages have been accepted.
    pub async fn wait_accepted(&self, more: usize, within: Duration) {
        let target = self.accepted() + more;
        eventually(
            within,
            &format!("{more} more messages to be accepted"),
            || async { (self.accepted() >= target).then_some(()) },
        )
        .await;
    }

    pub async fn stop(self) -> LoadReport {
        self.stop.store(true, Ordering::Relaxed);
        let mut total = LoadReport::default();
        for client in self.clients {
            let report = client.await.expect("client task");
            total.accepted.extend(report.accepted);
            total.attempted.extend(report.attempted);
            for (status, count) in report.statuses {
                *total.statuses.entry(status).or_default() += count;
            }
            total.unanswered += report.unanswered;
            total.unanswered_attempts.extend(report.unanswered_attempts);
            total.refusals_without_retry_after += report.refusals_without_retry_after;
            total.refusals_at.extend(report.refusals_at);
            total.refusals.extend(report.refusals);
        }
        total
    }
}

/// The three-node RabbitMQ cluster of `scripts/cluster`, which `scripts/fault-suite` starts and names in
/// `CLUSTER_AMQP_URL`. Dropping it starts every node that is down again, whatever a failed scenario left.
pub struct Cluster {
    pub url: String,
}

fn cluster_script(args: &[&str]) -> std::process::Output {
    Command::new(PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../scripts/cluster"))
        .args(args)
        .stderr(Stdio::inherit())
        .output()
        .expect("scripts/cluster runs")
}

impl Cluster {
    pub fn get() -> Self {
        let url = std::env::var("CLUSTER_AMQP_URL").expect(
            "CLUSTER_AMQP_URL names the nodes of scripts/cluster; scripts/fault-suite starts it and sets it",
        );
        Self { url }
    }

    /// SIGKILL to node `n` (1-3), as a crash would.
    pub fn kill(&self, n: usize) {
        assert!(cluster_script(&["kill", &n.to_string()]).status.success());
    }

    /// Starts node `n` again and waits until it has booted and rejoined.
    pub fn restart(&self, n: usize) {
        assert!(cluster_script(&["restart", &n.to_string()])
            .status
            .success());
    }

    /// How many nodes run.
    pub fn running(&self) -> usize {
        let status = cluster_script(&["status"]);
        String::from_utf8_lossy(&status.stdout)
            .lines()
            .filter(|line| line.starts_with("node ") && line.ends_with(" running"))
            .count()
    }

    /// The node (1-3) that leads the most of `queues`, and how many it leads.
    pub fn node_leading_most(&self, queues: &[String]) -> (usize, usize) {
        let listed = cluster_script(&[
            "ctl",
            "-q",
            "list_queues",
            "--no-table-headers",
            "name",
            "leader",
        ]);
        assert!(listed.status.success(), "list_queues");
        let mut led = [0usize; 4];
        for line in String::from_utf8_lossy(&listed.stdout).lines() {
            let mut fields = line.split_whitespace();
            let (Some(name), Some(leader)) = (fields.next(), fields.next()) else {
                continue;
            };
            if queues.iter().any(|queue| queue == name) {
                let node = (1..=3)
                    .find(|n| leader.starts_with(&format!("rabbit-cluster-{n}@")))
                    .unwrap_or_else(|| panic!("leader {leader} is not a node of the cluster"));
                led[node] += 1;
            }
        }
        (1..=3)
            .map(|n| (n, led[n]))
            .max_by_key(|&(_, count)| count)
            .unwrap()
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        let _ = cluster_script(&["start"]);
    }
}

/// What the clients of a [`RetryingLoad`] saw.
#[derive(Debug, Default)]
pub struct RetryingReport {
    /// Ids answered 202, one per key.
    pub accepted: Vec<Uuid>,
    /// Keys that were never answered 202 before the clients gave up.
    pub abandoned: Vec<Uuid>,
    /// Answers by status (0: no answer).
    pub statuses: BTreeMap<u16, usize>,
    /// When each 202 arrived.
    pub accepted_at: Vec<Instant>,
}

impl RetryingReport {
    /// The longest time between two consecutive 202s, across all clients.
    pub fn longest_pause(&self) -> Duration {
        let mut times = self.accepted_at.clone();
        times.sort();
        times
            .windows(2)
            .map(|pair| pair[1] - pair[0])
            .max()
            .unwrap_or_default()
    }
}

/// Concurrent clients that publish one message a request, each with its own `Idempotency-Key`, and that
/// retry a request answered anything but 202 (or not at all) with the same key and body, on the next
/// publisher in turn, until it is accepted: what a careful client of the contract does.
pub struct RetryingLoad {
    stop: Arc<AtomicBool>,
    accepted: Arc<AtomicUsize>,
    clients: Vec<JoinHandle<RetryingReport>>,
}

/// How long a client keeps retrying one key after the load is told to stop.
const RETRY_AFTER_STOP: Duration = Duration::from_secs(60);

impl RetryingLoad {
    pub fn start(http: &reqwest::Client, publisher_urls: &[String], clients: usize) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let accepted = Arc::new(AtomicUsize::new(0));
        let urls: Arc<Vec<String>> = Arc::new(
            publisher_urls
                .iter()
                .map(|url| format!("{url}/message/publish"))
                .collect(),
        );
        let clients = (0..clients)
            .map(|client| {
                let (http, urls, stop, accepted) =
                    (http.clone(), urls.clone(), stop.clone(), accepted.clone());
                tokio::spawn(async move {
                    let mut report = RetryingReport::default();
                    let mut n = 0u64;
                    let mut target = client;
                    while !stop.load(Ordering::Relaxed) {
                        n += 1;
                        let key = format!("retrying-{client}-{n}-{}", Uuid::new_v4().simple());
                        let body = serde_json::json!({ "sender": format!("client-{client}") });
                        let message: Message = serde_json::from_value(body.clone()).unwrap();
                        let id = IdempotencyKey::parse(key.as_bytes())
                            .unwrap()
                            .message_id(&message, None, None);
                        let mut give_up_at = None;
                        loop {
                            let status = match http
                                .post(urls[target % urls.len()].as_str())
                                .header("Idempotency-Key", &key)
                                .json(&body)
                                .send()
                                .await
                            {
                                Ok(response) => response.status().as_u16(),
                                Err(_) => 0,
                            };
                            *report.statuses.entry(status).or_default() += 1;
                            if status == 202 {
                                report.accepted.push(id);
                                report.accepted_at.push(Instant::now());
                                accepted.fetch_add(1, Ordering::Relaxed);
                                break;
                            }
                            if stop.load(Ordering::Relaxed) {
                                let at =
                                    *give_up_at.get_or_insert(Instant::now() + RETRY_AFTER_STOP);
                                if Instant::now() >= at {
                                    report.abandoned.push(id);
                                    break;
                                }
                            }
                            // Another publisher, after a pause, as Retry-After asks.
                            target += 1;
                            tokio::time::sleep(Duration::from_millis(100)).await;
                        }
                    }
                    report
                })
            })
            .collect();
        Self {
            stop,
            accepted,
            clients,
        }
    }

    /// Messages accepted so far.
    pub fn accepted(&self) -> usize {
        self.accepted.load(Ordering::Relaxed)
    }

    /// Waits until `more` further messages have been accepted.
    pub async fn wait_accepted(&self, more: usize, within: Duration) {
        let target = self.accepted() + more;
        eventually(
            within,
            &format!("{more} more messages to be accepted"),
            || async { (self.accepted() >= target).then_some(()) },
        )
        .await;
    }

    /// Stops the clients; each finishes retrying the key in hand first.
    pub async fn stop(self) -> RetryingReport {
        self.stop.store(true, Ordering::Relaxed);
        let mut total = RetryingReport::default();
        for client in self.clients {
            let report = client.await.expect("client task");
            total.accepted.extend(report.accepted);
            total.abandoned.extend(report.abandoned);
            total.accepted_at.extend(report.accepted_at);
            for (status, count) in report.statuses {
                *total.statuses.entry(status).or_default() += count;
            }
        }
        total
    }
}

impl Pipeline {
    /// Every id accepted by a [`RetryingLoad`] is stored, each exactly once, and nothing else is.
    /// Waits for the consumers to catch up; returns how long that took.
    pub async fn assert_each_key_stored_once(&self, report: &RetryingReport) -> Duration {
        assert!(
            report.abandoned.is_empty(),
            "{} keys were never accepted, even retried for {RETRY_AFTER_STOP:?}",
            report.abandoned.len()
        );
        let load = LoadReport {
            accepted: report.accepted.clone(),
            attempted: report.accepted.clone(),
            ..LoadReport::default()
        };
        self.assert_accepted_stored_once(&load).await
    }
}
