//! Both services' `/metrics` pass `promtool check metrics`, and a real Prometheus server scraping them
//! reads the backlog metric back through its HTTP API.

use std::{
    io::Write,
    path::PathBuf,
    process::{Child, Command, Stdio},
    time::Duration,
};

use end_to_end::eventually;
use serde_json::{json, Value};

use crate::services::{spawn_on_free_port, Services};

/// `promtool`, from Debian's `prometheus` package (`scripts/test` installs it).
const PROMTOOL: &str = "promtool";
const PROMETHEUS: &str = "prometheus";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn both_services_metrics_pass_promtool_check_metrics() {
    let services = Services::start(&[]).await;
    // Every family present: a request answered, a message stored, the queues looked at.
    let id = services.publish(&json!({"sender": "lint"}), &[]).await;
    services.wait_stored(&[id]).await;
    for (name, url) in [
        ("publisher", &services.publisher.url),
        ("consumer", &services.consumer.url),
    ] {
        let text = services.metrics(url).await;
        let mut promtool = Command::new(PROMTOOL)
            .args(["check", "metrics"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("promtool runs (scripts/test installs Debian's prometheus package)");
        promtool
            .stdin
            .take()
            .expect("stdin")
            .write_all(text.as_bytes())
            .expect("metrics written to promtool");
        let output = promtool.wait_with_output().expect("promtool finishes");
        assert!(
            output.status.success(),
            "promtool check metrics on the {name}: {}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
    }
}

/// The namespace the test's Prometheus gives every target, as the Prometheus Operator gives the pods'.
pub(crate) const NAMESPACE: &str = "message-queue";

/// A Prometheus server of the test's own, removed with its data when dropped. Each target is labelled
/// as the Prometheus Operator labels a pod it scrapes through the ServiceMonitor: `job` the Service's
/// name, and `namespace`, `service`, `pod` and `endpoint`.
pub(crate) struct PrometheusServer {
    child: Child,
    data: PathBuf,
    url: String,
}

impl PrometheusServer {
    /// Scrapes each `(Service name, base URL)` every second.
    pub(crate) fn start(targets: &[(&str, &str)]) -> Self {
        let data = std::env::temp_dir().join(format!("prometheus-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&data).expect("data directory");
        let jobs: String = targets
            .iter()
            .map(|(service, url)| {
                let host = url.trim_start_matches("http://");
                format!(
                    "  - job_name: {service}\n    static_configs:\n      - targets: ['{host}']\n        \
                     labels: {{namespace: {}, service: {service}, pod: {service}-0, endpoint: http}}\n",
                    NAMESPACE
                )
            })
            .collect();
        let config = data.join("prometheus.yml");
        std::fs::write(
            &config,
            format!("global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\nscrape_configs:\n{jobs}"),
        )
        .expect("configuration written");
        let (child, port) = spawn_on_free_port("prometheus", |port| {
            let mut command = Command::new(PROMETHEUS);
            command
                .arg(format!("--config.file={}", config.display()))
                .arg(format!(
                    "--storage.tsdb.path={}",
                    data.join("tsdb").display()
                ))
                .arg(format!("--web.listen-address=127.0.0.1:{port}"));
            command
        });
        Self {
            child,
            data,
            url: format!("http://127.0.0.1:{port}"),
        }
    }

    /// The value of the one series `query` returns, once it returns one.
    async fn value(&self, http: &reqwest::Client, query: &str) -> f64 {
        eventually(
            Duration::from_secs(30),
            &format!("prometheus to answer {query}"),
            || async {
                let result = self.query(http, query).await.ok()?;
                result.first()?["value"][1].as_str()?.parse().ok()
            },
        )
        .await
    }

    /// The series of an instant query, or Prometheus's error.
    pub(crate) async fn query(
        &self,
        http: &reqwest::Client,
        expr: &str,
    ) -> Result<Vec<Value>, String> {
        let answer: Value = http
            .get(format!("{}/api/v1/query", self.url))
            .query(&[("query", expr)])
            .send()
            .await
            .map_err(|error| error.to_string())?
            .json()
            .await
            .map_err(|error| error.to_string())?;
        if answer["status"] != "success" {
            return Err(format!("{}: {}", answer["errorType"], answer["error"]));
        }
        Ok(answer["data"]["result"]
            .as_array()
            .cloned()
            .unwrap_or_default())
    }

    /// The values of `namespace` on the series `selector` selects, as Grafana's `label_values` asks.
    pub(crate) async fn label_values(&self, http: &reqwest::Client, selector: &str) -> Vec<String> {
        let answer: Value = http
            .get(format!("{}/api/v1/label/namespace/values", self.url))
            .query(&[("match[]", selector)])
            .send()
            .await
            .expect("prometheus reachable")
            .json()
            .await
            .expect("a JSON answer");
        serde_json::from_value(answer["data"].clone()).expect("label values")
    }

    /// Waits until each of `conditions` (queries) returns a series.
    pub(crate) async fn wait_until(&self, http: &reqwest::Client, conditions: &[String]) {
        for condition in conditions {
            eventually(Duration::from_secs(30), condition, || async {
                let result = self.query(http, condition).await.ok()?;
                (!result.is_empty()).then_some(())
            })
            .await;
        }
    }
}

impl Drop for PrometheusServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.data);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_prometheus_server_scraping_both_services_reads_the_backlog_back() {
    let services = Services::start(&[("QUEUE_WATCH_INTERVAL_MS", "200")]).await;
    // Something that stays on a queue: a payload that is not a message, dead-lettered by the consumer.
    services.publish_raw(b"not a message").await;
    let id = services.publish(&json!({"sender": "scraped"}), &[]).await;
    services.wait_stored(&[id]).await;

    let prometheus = PrometheusServer::start(&[
        ("publisher", &services.publisher.url),
        ("consumer", &services.consumer.url),
    ]);
    let dead = format!("{}.dead", services.queue);
    let backlog = prometheus
        .value(
            &services.http,
            &format!(r#"consumer_queue_messages{{queue="{dead}",state="ready"}} == 1"#),
        )
        .await;
    assert_eq!(backlog, 1.0);
    let main_queue = prometheus
        .value(
            &services.http,
            &format!(
                r#"consumer_queue_messages{{queue="{}",state="ready"}}"#,
                services.queue
            ),
        )
        .await;
    assert_eq!(main_queue, 0.0, "the main queue is drained");
    let accepted = prometheus
        .value(
            &services.http,
            r#"publisher_http_requests_total{route="/message/publish",method="POST",status="202"}"#,
        )
        .await;
    assert_eq!(accepted, 1.0);
    for job in ["publisher", "consumer"] {
        let up = prometheus
            .value(&services.http, &format!(r#"up{{job="{job}"}} == 1"#))
            .await;
        assert_eq!(up, 1.0, "{job} scraped");
    }
}
