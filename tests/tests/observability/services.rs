//! Both services as child processes whose log lines the test can read, on a database and queues of
//! their own that are removed afterwards.

use common::settings::Settings as _;
use std::{
    process::{Child, Command},
    time::Duration,
};

use end_to_end::{
    eventually,
    process::{LogLines, ServiceProcess},
    StackConfig,
};
use serde_json::Value;
use sqlx::{postgres::PgPoolOptions, PgPool};
use uuid::Uuid;

/// One service process.
pub struct Process {
    process: ServiceProcess,
    pub url: String,
    pub logs: LogLines,
}

impl Process {
    fn spawn(binary: &str, env: Vec<(String, String)>, rust_log: &str) -> Self {
        let mut command = Command::new(binary);
        command.envs(env).env("HTTP_WORKERS", "1");
        let process = ServiceProcess::spawn(command, None, rust_log);
        Self {
            url: process.url(),
            logs: process.logs().clone(),
            process,
        }
    }

    /// The highest resident memory of the process so far (`VmHWM`), in KiB.
    pub fn peak_rss_kib(&self) -> u64 {
        self.process
            .proc_status_kib("VmHWM:")
            .expect("VmHWM in /proc status")
    }
}

/// A publisher and a consumer, each a process, and what the test needs to look at them.
pub struct Services {
    pub publisher: Process,
    pub consumer: Process,
    pub queue: String,
    database: String,
    pub http: reqwest::Client,
    pub db: PgPool,
}

impl Services {
    /// Both services with debug logs, the consumer with `consumer_env` on top of its defaults, both
    /// ready.
    pub async fn start(consumer_env: &[(&str, &str)]) -> Self {
        Self::start_with(&[], consumer_env).await
    }

    /// As [`Services::start`], with `both_env` given to both services.
    pub async fn start_with(both_env: &[(&str, &str)], consumer_env: &[(&str, &str)]) -> Self {
        let config = StackConfig::unique();
        let log = "warn,publisher=debug,consumer=debug";
        let pairs = |env: &[(&str, &str)]| {
            env.iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect::<Vec<_>>()
        };
        let consumer_env = config
            .consumer
            .environment()
            .into_iter()
            .chain(pairs(both_env))
            .chain(pairs(consumer_env))
            .collect();
        let consumer = Process::spawn(env!("CARGO_BIN_EXE_consumer-process"), consumer_env, log);
        let publisher_env = config
            .publisher
            .environment()
            .into_iter()
            .chain(pairs(both_env))
            .collect();
        let publisher = Process::spawn(env!("CARGO_BIN_EXE_publisher-process"), publisher_env, log);
        let services = Self {
            db: PgPoolOptions::new()
                .max_connections(2)
                .connect_lazy(&end_to_end::database_url(&config.database))
                .expect("valid url"),
            publisher,
            consumer,
            queue: config.queue,
            database: config.database,
            http: reqwest::Client::new(),
        };
        for url in [&services.consumer.url, &services.publisher.url] {
            let readyz = format!("{url}/readyz");
            eventually(Duration::from_secs(30), &readyz, || async {
                let response = services.http.get(&readyz).send().await.ok()?;
                response.status().is_success().then_some(())
            })
            .await;
        }
        services
    }

    /// `POST /message/publish` of `body` with `headers`, expecting 202; returns the id.
    pub async fn publish(&self, body: &Value, headers: &[(&str, &str)]) -> Uuid {
        let mut request = self
            .http
            .post(format!("{}/message/publish", self.publisher.url))
            .json(body);
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        let response = request.send().await.expect("publisher reachable");
        assert_eq!(response.status(), 202, "{:?}", response.text().await);
        let answer: Value = response.json().await.expect("JSON answer");
        answer["id"]
            .as_str()
            .expect("an id")
            .parse()
            .expect("a UUID")
    }

    /// Waits until every one of `ids` is stored.
    pub async fn wait_stored(&self, ids: &[Uuid]) {
        eventually(Duration::from_secs(30), "messages stored", || async {
            let found: i64 = sqlx::query_scalar("SELECT count(*) FROM messages WHERE id = ANY($1)")
                .bind(ids)
                .fetch_one(&self.db)
                .await
                .ok()?;
            (found == ids.len() as i64).then_some(())
        })
        .await;
    }

    /// Puts `payload` straight on the queue's exchange, as something other than the publisher might.
    pub async fn publish_raw(&self, payload: &[u8]) {
        let connection = common::amqp::BrokerAddress::new(end_to_end::amqp_url())
            .connect(Default::default())
            .await
            .expect("broker reachable");
        end_to_end::publish_raw_on(&connection, &self.queue, payload).await;
        let _ = connection.close(200, "done".into()).await;
    }

    /// A service's `/metrics` text.
    pub async fn metrics(&self, base_url: &str) -> String {
        end_to_end::metrics_text(&self.http, base_url).await
    }
}

impl Drop for Services {
    fn drop(&mut self) {
        for process in [&mut self.publisher, &mut self.consumer] {
            process.process.kill();
        }
        end_to_end::remove_resources_blocking(&self.queue, &self.database);
    }
}

/// Starts a server program on a free port: `command` builds its command line for a port. A port is
/// picked by binding 0 and releasing it, so another process may take it first: a program that is not
/// listening within 10 s is stopped and tried again on another port.
pub fn spawn_on_free_port(what: &str, command: impl Fn(u16) -> Command) -> (Child, u16) {
    for _ in 0..5 {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|listener| listener.local_addr())
            .expect("a free port")
            .port();
        let mut child = command(port)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap_or_else(|error| panic!("{what} starts: {error}"));
        let listening = (0..100).any(|_| {
            std::thread::sleep(Duration::from_millis(100));
            std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
                && matches!(child.try_wait(), Ok(None))
        });
        if listening {
            return (child, port);
        }
        let _ = child.kill();
        let _ = child.wait();
    }
    panic!("{what} did not start listening");
}
