//! The Grafana dashboard (`kube/monitoring/dashboards/message-queue.json`), checked without Grafana: a
//! real Prometheus scrapes both services under load, labelled as the ServiceMonitor has them labelled,
//! and every query of every panel must name only metrics the services expose and return data.

use std::{collections::BTreeSet, path::Path, time::Duration};

use end_to_end::eventually;
use serde_json::{json, Value};

use crate::{
    prometheus::{PrometheusServer, NAMESPACE},
    services::Services,
};

/// The dashboard, as shipped: the ConfigMap of `kube/monitoring` is generated from this file.
const DASHBOARD: &str = "../kube/monitoring/dashboards/message-queue.json";
/// What Grafana's `$__rate_interval` and `$__interval` become here: long enough to hold every scrape
/// since the load began (the test's Prometheus scrapes every second).
const INTERVAL: &str = "1m";
/// Series Prometheus writes itself for each target, which no `/metrics` carries.
const SCRAPE_SERIES: &[&str] = &["up"];

/// One query of one panel.
struct Query {
    panel: String,
    ref_id: String,
    expr: String,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_panel_of_the_dashboard_queries_metrics_the_services_export_and_gets_data() {
    // Arrange: the dashboard, both services (at most one feed follower, so a second is refused; queues
    // looked at often; retention on, so maintenance runs), and a Prometheus scraping them.
    let dashboard = read_dashboard();
    let queries = queries(&dashboard);
    assert!(queries.len() >= 20, "only {} queries", queries.len());
    let services = Services::start(&[
        ("QUEUE_WATCH_INTERVAL_MS", "200"),
        ("FEED_MAX_FOLLOWERS", "1"),
        ("RETENTION", "7d"),
        ("RETENTION_CHECK_SECS", "1"),
    ])
    .await;
    let prometheus = PrometheusServer::start(&[
        ("message-publisher", &services.publisher.url),
        ("message-consumer", &services.consumer.url),
    ]);

    // Act: every route and refusal the panels show is used once and scraped, so that rates over what
    // comes next start from a sample; then everything the panels show happens at least once.
    warm_up(&services).await;
    prometheus
        .wait_until(
            &services.http,
            &[
                r#"publisher_http_requests_total{route="/message/publish",status="202"}"#.into(),
                r#"publisher_requests_refused_total{status="400"}"#.into(),
                r#"consumer_http_requests_total{route="/message",status="200"}"#.into(),
            ],
        )
        .await;
    // The warm-up's one message, and the load's.
    let accepted = 1 + put_load_through(&services).await;
    let metrics = [
        services.metrics(&services.publisher.url).await,
        services.metrics(&services.consumer.url).await,
    ];
    // Scrapes taken after the load: the publisher's count of accepted messages, the consumer's of
    // stored ones, and a dead letter.
    prometheus
        .wait_until(
            &services.http,
            &[
                format!("sum(publisher_messages_accepted_total) == {accepted}"),
                format!("sum(consumer_messages_stored_total) == {accepted}"),
                "sum(consumer_messages_dead_lettered_total) > 0".into(),
            ],
        )
        .await;

    // Assert: every metric a query names is exposed, the namespace variable finds the namespace, and
    // every query returns a number.
    let unknown = unknown_metrics(&queries, &metrics);
    assert!(unknown.is_empty(), "{}", unknown.join("\n"));
    let namespaces = prometheus
        .label_values(&services.http, &namespace_variable(&dashboard))
        .await;
    assert_eq!(namespaces, [NAMESPACE], "the namespace variable's values");
    let empty = queries_without_data(&prometheus, &services.http, &queries).await;
    assert!(empty.is_empty(), "{}", empty.join("\n"));
}

/// For each metric a query names that neither service's `/metrics` text exposes, the panel and the name.
fn unknown_metrics(queries: &[Query], metrics: &[String]) -> Vec<String> {
    let exposed: BTreeSet<String> = metrics.iter().flat_map(|text| sample_names(text)).collect();
    let mut unknown = Vec::new();
    for query in queries {
        for name in metric_names(&query.expr) {
            if !exposed.contains(&name) && !SCRAPE_SERIES.contains(&name.as_str()) {
                unknown.push(format!(
                    "panel \"{}\" ({}) names {name}, which no service's /metrics exposes",
                    query.panel, query.ref_id
                ));
            }
        }
    }
    unknown
}

/// For each query that Prometheus refuses, or that returns no series or only NaN (what a quantile of no
/// observations gives), the panel and the query as sent.
async fn queries_without_data(
    prometheus: &PrometheusServer,
    http: &reqwest::Client,
    queries: &[Query],
) -> Vec<String> {
    let mut empty = Vec::new();
    for query in queries {
        let expr = substitute(&query.expr, NAMESPACE)
            .unwrap_or_else(|variable| panic!("panel \"{}\" uses {variable}", query.panel));
        match prometheus.query(http, &expr).await {
            Ok(result) if result.iter().any(|series| series["value"][1] != "NaN") => {}
            Ok(result) => empty.push(format!(
                "panel \"{}\" ({}) has no data ({} series, none a number): {expr}",
                query.panel,
                query.ref_id,
                result.len()
            )),
            Err(error) => empty.push(format!(
                "panel \"{}\" ({}) fails: {error}: {expr}",
                query.panel, query.ref_id
            )),
        }
    }
    empty
}

/// The dashboard file parsed, with what Grafana needs to import it anywhere: a uid, a title, a current
/// schema, and every panel and query on the `${datasource}` variable rather than a data source of one
/// installation.
fn read_dashboard() -> Value {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join(DASHBOARD);
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|error| panic!("{}: {error}", path.display()));
    let dashboard: Value = serde_json::from_str(&text).expect("the dashboard is JSON");
    assert!(dashboard["uid"].as_str().is_some_and(|uid| !uid.is_empty()));
    assert!(dashboard["title"].as_str().is_some_and(|t| !t.is_empty()));
    assert!(dashboard["schemaVersion"].as_u64() >= Some(39));
    let variables = dashboard["templating"]["list"]
        .as_array()
        .expect("variables");
    assert!(
        variables.iter().any(|v| v["name"] == "datasource"
            && v["type"] == "datasource"
            && v["query"] == "prometheus"),
        "no Prometheus data source variable"
    );
    let mut ids = BTreeSet::new();
    for panel in all_panels(&dashboard) {
        let title = &panel["title"];
        assert!(
            ids.insert(panel["id"].as_u64().expect("a panel id")),
            "{title}: id used twice"
        );
        if panel["type"] == "row" {
            continue;
        }
        assert_eq!(panel["datasource"]["uid"], "${datasource}", "{title}");
        for target in panel["targets"].as_array().expect("targets") {
            assert_eq!(target["datasource"]["uid"], "${datasource}", "{title}");
        }
    }
    dashboard
}

/// Every panel, those inside collapsed rows included.
fn all_panels(dashboard: &Value) -> Vec<&Value> {
    let mut panels = Vec::new();
    for panel in dashboard["panels"].as_array().expect("panels") {
        panels.push(panel);
        panels.extend(panel["panels"].as_array().into_iter().flatten());
    }
    panels
}

/// Every query of every panel.
fn queries(dashboard: &Value) -> Vec<Query> {
    all_panels(dashboard)
        .into_iter()
        .flat_map(|panel| {
            panel["targets"]
                .as_array()
                .into_iter()
                .flatten()
                .map(move |target| Query {
                    panel: panel["title"].as_str().unwrap_or("?").to_string(),
                    ref_id: target["refId"].as_str().unwrap_or("?").to_string(),
                    expr: target["expr"].as_str().expect("a PromQL expr").to_string(),
                })
        })
        .collect()
}

/// The series selector of the `namespace` variable's `label_values(selector, namespace)`.
fn namespace_variable(dashboard: &Value) -> String {
    let variable = dashboard["templating"]["list"]
        .as_array()
        .unwrap()
        .iter()
        .find(|v| v["name"] == "namespace")
        .expect("a namespace variable");
    let definition = variable["definition"].as_str().expect("its definition");
    definition
        .strip_prefix("label_values(")
        .and_then(|rest| rest.strip_suffix(", namespace)"))
        .unwrap_or_else(|| panic!("not label_values(…, namespace): {definition}"))
        .to_string()
}

/// `expr` with Grafana's variables replaced as Grafana would for the namespace `namespace`; the name
/// of a variable it does not know is the error.
fn substitute(expr: &str, namespace: &str) -> Result<String, String> {
    let mut expr = expr.to_string();
    for (variable, value) in [
        ("${__rate_interval}", INTERVAL),
        ("$__rate_interval", INTERVAL),
        ("${__interval}", INTERVAL),
        ("$__interval", INTERVAL),
        ("${namespace}", namespace),
        ("$namespace", namespace),
    ] {
        expr = expr.replace(variable, value);
    }
    match expr.find('$') {
        Some(at) if expr[at + 1..].starts_with(|c: char| c.is_alphabetic() || "_{".contains(c)) => {
            Err(expr[at..].chars().take(20).collect())
        }
        _ => Ok(expr),
    }
}

/// The names of the samples in a `/metrics` text: `foo_bucket`, `foo_sum` and `foo_count` for a
/// histogram `foo`, as a query names them.
fn sample_names(text: &str) -> BTreeSet<String> {
    text.lines()
        .filter(|line| !line.starts_with('#') && !line.trim().is_empty())
        .map(|line| {
            line.split(['{', ' '])
                .next()
                .expect("a sample name")
                .to_string()
        })
        .collect()
}

/// Aggregation operators, which may be followed by `by (…)` before their parenthesis.
const AGGREGATIONS: &[&str] = &[
    "sum",
    "min",
    "max",
    "avg",
    "group",
    "stddev",
    "stdvar",
    "count",
    "count_values",
    "bottomk",
    "topk",
    "quantile",
];
/// Keywords followed by a parenthesised list of label names.
const LABEL_LISTS: &[&str] = &[
    "by",
    "without",
    "on",
    "ignoring",
    "group_left",
    "group_right",
];
/// Keywords that stand alone.
const KEYWORDS: &[&str] = &[
    "and",
    "or",
    "unless",
    "bool",
    "group_left",
    "group_right",
    "inf",
    "nan",
];

/// The metric names a PromQL expression selects: identifiers outside strings, label matchers, ranges,
/// label lists and numbers that are neither functions, aggregations nor keywords.
fn metric_names(expr: &str) -> Vec<String> {
    let chars: Vec<char> = expr.chars().collect();
    let mut names = Vec::new();
    let mut i = 0;
    let skip_string = |mut i: usize| {
        let quote = chars[i];
        i += 1;
        while i < chars.len() && chars[i] != quote {
            i += if chars[i] == '\\' && quote != '`' {
                2
            } else {
                1
            };
        }
        i + 1
    };
    let skip_to = |mut i: usize, close: char| {
        while i < chars.len() && chars[i] != close {
            i = if "\"'`".contains(chars[i]) {
                skip_string(i)
            } else {
                i + 1
            };
        }
        i + 1
    };
    let next_non_space = |mut i: usize| {
        while i < chars.len() && chars[i].is_whitespace() {
            i += 1;
        }
        i
    };
    while i < chars.len() {
        let c = chars[i];
        if "\"'`".contains(c) {
            i = skip_string(i);
        } else if c == '{' {
            i = skip_to(i, '}');
        } else if c == '[' {
            i = skip_to(i, ']');
        } else if c == '#' {
            i = skip_to(i, '\n');
        } else if c.is_ascii_digit()
            || (c == '.' && chars.get(i + 1).is_some_and(char::is_ascii_digit))
        {
            while i < chars.len() && (chars[i].is_ascii_alphanumeric() || chars[i] == '.') {
                i += 1;
            }
        } else if c.is_ascii_alphabetic() || c == '_' || c == ':' {
            let start = i;
            while i < chars.len() && (chars[i].is_ascii_alphanumeric() || "_:".contains(chars[i])) {
                i += 1;
            }
            let word: String = chars[start..i].iter().collect();
            let after = next_non_space(i);
            let opens = chars.get(after) == Some(&'(');
            if LABEL_LISTS.contains(&word.as_str()) && opens {
                i = skip_to(after, ')');
            } else if word == "offset" {
                i = next_non_space(i);
                while i < chars.len() && chars[i].is_ascii_alphanumeric() {
                    i += 1;
                }
            } else if !opens
                && !AGGREGATIONS.contains(&word.as_str())
                && !KEYWORDS.contains(&word.as_str())
            {
                names.push(word);
            }
        } else {
            i += 1;
        }
    }
    names
}

#[test]
fn metric_names_are_told_from_functions_labels_strings_and_keywords() {
    assert_eq!(
        metric_names(
            r#"histogram_quantile(0.99, sum by (le, route) (rate(a_bucket{route!~"/(x|y)",q=`.+\.dead`}[$__rate_interval])))
               / on (job) group_left b_total offset 5m + sum(c) without (pod) or time() - 1e3 * d"#
        ),
        ["a_bucket", "b_total", "c", "d"]
    );
    assert_eq!(
        metric_names(r#"label_replace(up{job="x"}, "service", "y", "", "")"#),
        ["up"]
    );
}

/// A publish of malformed JSON, refused with 400: a refusal series for the panels that count them.
async fn refused_as_malformed(services: &Services) {
    let malformed = services
        .http
        .post(format!("{}/message/publish", services.publisher.url))
        .header("Content-Type", "application/json")
        .body(r#"{"sender": "#)
        .send()
        .await
        .expect("publisher reachable");
    assert_eq!(malformed.status(), 400);
}

/// One message published, one refused and one read: the series of the routes the panels show exist
/// from here on.
async fn warm_up(services: &Services) {
    let id = services.publish(&json!({"sender": "warm-up"}), &[]).await;
    services.wait_stored(&[id]).await;
    refused_as_malformed(services).await;
    let listed = services
        .http
        .get(format!("{}/message?limit=1", services.consumer.url))
        .send()
        .await
        .expect("consumer reachable");
    assert_eq!(listed.status(), 200);
}

/// Publishes, stores, dead-letters, refuses, follows the feed and refuses a second follower, and reads
/// messages back; returns how many messages the publisher accepted.
async fn put_load_through(services: &Services) -> u64 {
    let http = &services.http;
    let consumer = &services.consumer.url;

    // A follower of the feed, waiting at its end for the next message.
    let end = http
        .get(format!("{consumer}/message/feed?limit=1000"))
        .send()
        .await
        .expect("feed reachable");
    assert_eq!(end.status(), 200);
    let next = next_link(consumer, &end);
    let follower = tokio::spawn({
        let (http, next) = (http.clone(), format!("{next}&wait=20"));
        async move {
            let page = http.get(next).send().await.expect("feed reachable");
            assert_eq!(page.status(), 200);
            page.json::<Vec<Value>>().await.expect("a page of messages")
        }
    });
    eventually(Duration::from_secs(10), "the follower to wait", || async {
        let text = services.metrics(consumer).await;
        text.lines()
            .any(|line| line == "consumer_feed_followers 1")
            .then_some(())
    })
    .await;
    // A second follower finds FEED_MAX_FOLLOWERS taken.
    let refused = http
        .get(format!("{next}&wait=20"))
        .send()
        .await
        .expect("feed reachable");
    assert_eq!(refused.status(), 503);

    // Messages one by one and in a batch; a payload that is not a message, dead-lettered.
    let mut ids = Vec::new();
    for n in 0..10 {
        ids.push(
            services
                .publish(&json!({"sender": "dashboard", "ts": n.to_string()}), &[])
                .await,
        );
    }
    let batch: Vec<Value> = (0..40)
        .map(|n| json!({"sender": "batch", "priority": n % 10}))
        .collect();
    let answer = http
        .post(format!("{}/message/publish/batch", services.publisher.url))
        .json(&batch)
        .send()
        .await
        .expect("publisher reachable");
    assert_eq!(answer.status(), 202);
    let answer: Value = answer.json().await.expect("JSON answer");
    for id in answer["ids"].as_array().expect("ids") {
        ids.push(id.as_str().unwrap().parse().unwrap());
    }
    services.publish_raw(b"not a message").await;
    services.wait_stored(&ids).await;
    let page = follower.await.expect("the follower finishes");
    assert!(!page.is_empty(), "the follower was woken by a message");

    // A refusal: malformed JSON.
    refused_as_malformed(services).await;

    // Reads.
    let listed = http
        .get(format!("{consumer}/message?limit=5"))
        .send()
        .await
        .expect("consumer reachable");
    assert_eq!(listed.status(), 200);
    ids.len() as u64
}

/// The absolute URL of a response's `Link: <…>; rel="next"` (a path: these services have no
/// `PUBLIC_BASE_URL`).
fn next_link(base: &str, response: &reqwest::Response) -> String {
    let link = response
        .headers()
        .get("link")
        .and_then(|value| value.to_str().ok())
        .expect("a Link header");
    let target = link
        .split(';')
        .next()
        .and_then(|part| part.trim().strip_prefix('<'))
        .and_then(|part| part.strip_suffix('>'))
        .unwrap_or_else(|| panic!("a Link target: {link}"));
    format!("{base}{target}")
}
