//! The worker monitor's trend charts in headless Chromium: while a load runs through the real publisher
//! the lines move and the latest stored/s and accepted/s rise above zero; the history stays a fixed
//! number of samples however many polls come in; with `READ_TOKENS` set no chart is drawn before a
//! token is given. With `MONITOR_SCREENSHOT=docs/monitor.png` (a path from the workspace root) the page
//! under load is saved there.

use std::{
    collections::HashMap,
    sync::{
        atomic::{AtomicBool, AtomicU64, Ordering},
        Arc,
    },
    time::Duration,
};

use end_to_end::eventually;
use fantoccini::Client;
use serde::Deserialize;
use serde_json::json;

use crate::{browser::Browser, services::Services};

/// One line of a chart, as drawn.
#[derive(Debug, Clone, PartialEq, Deserialize)]
struct Line {
    points: String,
    /// The latest value, rounded; empty while the series has none.
    latest: String,
}

impl Line {
    fn latest(&self) -> Option<f64> {
        self.latest.parse().ok()
    }
}

/// The charts as the page shows them, read in one script.
#[derive(Debug, Clone, Deserialize)]
struct Charts {
    hidden: bool,
    samples: usize,
    lines: HashMap<String, Line>,
    /// The text values of the legends.
    values: Vec<String>,
}

impl Charts {
    fn line(&self, series: &str) -> &Line {
        self.lines
            .get(series)
            .unwrap_or_else(|| panic!("a {series} line in {:?}", self.lines.keys()))
    }
}

async fn charts(client: &Client) -> Charts {
    let read = client
        .execute(
            "const charts = document.getElementById('charts');
             const lines = {};
             for (const line of charts.querySelectorAll('polyline[data-series]')) {
               lines[line.dataset.series] =
                 { points: line.getAttribute('points') || '', latest: line.dataset.latest || '' };
             }
             const values = Array.from(charts.querySelectorAll('figcaption b'), (b) => b.textContent);
             return { hidden: charts.hidden, samples: Number(charts.dataset.samples), lines, values };",
            vec![],
        )
        .await
        .expect("script runs");
    serde_json::from_value(read).expect("the charts' state")
}

/// Publishers that keep posting messages through the real publisher until stopped.
struct Load {
    stop: Arc<AtomicBool>,
    accepted: Arc<AtomicU64>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Load {
    fn start(services: &Services, concurrency: usize) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let accepted = Arc::new(AtomicU64::new(0));
        let url = format!("{}/message/publish", services.publisher.url);
        let tasks = (0..concurrency)
            .map(|task| {
                let (stop, accepted) = (stop.clone(), accepted.clone());
                let (http, url) = (services.http.clone(), url.clone());
                tokio::spawn(async move {
                    while !stop.load(Ordering::Relaxed) {
                        let body =
                            json!({"sender": format!("load-{task}"), "messageAttributes": {}});
                        let response = http.post(&url).json(&body).send().await.expect("publisher");
                        assert_eq!(response.status(), 202, "a message accepted");
                        accepted.fetch_add(1, Ordering::Relaxed);
                    }
                })
            })
            .collect();
        Self {
            stop,
            accepted,
            tasks,
        }
    }

    /// Stops the publishers; returns how many messages were accepted.
    async fn stop(mut self) -> u64 {
        self.stop.store(true, Ordering::Relaxed);
        for task in std::mem::take(&mut self.tasks) {
            task.await.expect("a publisher task");
        }
        self.accepted.load(Ordering::Relaxed)
    }
}

impl Drop for Load {
    /// A test that fails under load takes its publishers with it, before the services go.
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
    }
}

async fn open_monitor(services: &Services) -> Browser {
    let browser = Browser::start().await;
    browser
        .client
        .goto(&format!("{}/", services.consumer.url))
        .await
        .expect("page loads");
    browser
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_charts_follow_a_load_published_through_the_publisher_and_keep_a_fixed_history() {
    let services = Services::start(&[("QUEUE_WATCH_INTERVAL_MS", "200")]).await;
    // One message that can never be stored, for the dead-letter chart.
    services.publish_raw(b"{\"not\": \"a message\"}").await;
    let browser = open_monitor(&services).await;
    let client = &browser.client;

    // Idle: the charts are drawn, nothing is being stored.
    let idle = eventually(Duration::from_secs(15), "the charts drawn", || async {
        let shown = charts(client).await;
        (!shown.hidden && shown.samples >= 2 && shown.line("dead").latest() == Some(1.0))
            .then_some(shown)
    })
    .await;
    assert_eq!(idle.line("stored").latest(), Some(0.0), "{idle:?}");

    // Under load the lines move, and stored/s and accepted/s rise above zero.
    let load = Load::start(&services, 4);
    let busy = eventually(
        Duration::from_secs(30),
        "the load on the charts",
        || async {
            let shown = charts(client).await;
            let moving = shown.line("stored").points != idle.line("stored").points
                && shown.line("stored").latest() > Some(0.0)
                && shown.line("accepted").latest() > Some(0.0);
            moving.then_some(shown)
        },
    )
    .await;
    assert!(busy.samples > idle.samples, "{busy:?}");
    assert!(
        busy.values.iter().all(|value| value != "–"),
        "every legend shows a current value: {:?}",
        busy.values
    );
    let described = client
        .execute(
            "const svg = document.querySelector('#chart-rates svg');
             return [svg.getAttribute('role'),
                     svg.getAttribute('aria-labelledby').split(' ')
                        .map((id) => document.getElementById(id).textContent).join(' | '),
                     svg.querySelector('text.end').textContent];",
            vec![],
        )
        .await
        .expect("script runs");
    let described: Vec<String> = serde_json::from_value(described).expect("three texts");
    assert_eq!(described[0], "img");
    assert!(
        described[1].contains("Messages per second") && described[1].contains("stored/s now"),
        "{described:?}"
    );
    assert!(!described[2].is_empty(), "a value at the end of the line");

    if let Ok(path) = std::env::var("MONITOR_SCREENSHOT") {
        // A minute of history makes a readable picture.
        eventually(Duration::from_secs(120), "a minute of history", || async {
            (charts(client).await.samples >= 60).then_some(())
        })
        .await;
        let png = client.screenshot().await.expect("screenshot");
        assert!(png.starts_with(b"\x89PNG"), "a PNG");
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("..")
            .join(path);
        std::fs::write(&path, &png).expect("screenshot saved");
        eprintln!("worker monitor screenshot: {}", path.display());
    }
    assert!(load.stop().await > 0, "messages were published");

    // However many polls come in, the history is one fixed-size ring and the page grows no elements.
    let bounded = client
        .execute(
            "const elements = document.getElementsByTagName('*').length;
             for (let i = 0; i < 10 * TREND_CAPACITY; i++) {
               trend.push(performance.now(), { stored: i, accepted: i, backlog: i, dead: 1 });
               if (i % 100 === 0) drawCharts(performance.now());
             }
             drawCharts(performance.now());
             const points = document.querySelector('#chart-rates polyline[data-series=stored]')
               .getAttribute('points').split(' ').length;
             return [trend.length, TREND_CAPACITY, points,
                     elements, document.getElementsByTagName('*').length];",
            vec![],
        )
        .await
        .expect("script runs");
    let [length, capacity, points, before, after]: [usize; 5] =
        serde_json::from_value(bounded).expect("five numbers");
    assert_eq!(
        capacity, 301,
        "five minutes of one-second polls, and the current one"
    );
    assert_eq!(length, capacity, "the ring holds its capacity, no more");
    assert!(points <= capacity, "{points} points drawn");
    assert_eq!(before, after, "drawing adds no elements");
    let _ = browser.client.clone().close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_read_tokens_no_chart_is_drawn_until_a_token_is_given() {
    const TOKEN: &str = "monitor-chart-token-0123456789";
    let services =
        Services::start(&[("READ_TOKENS", TOKEN), ("QUEUE_WATCH_INTERVAL_MS", "200")]).await;
    let id = services
        .publish(&json!({"sender": "behind a token"}), &[])
        .await;
    services.wait_stored(&[id]).await;
    let browser = open_monitor(&services).await;
    let client = &browser.client;

    // The page has polled and been refused a few times, and has drawn nothing.
    eventually(Duration::from_secs(15), "refused polls", || async {
        let polls = client
            .execute(
                "return Number(document.body.dataset.refreshed || 0)",
                vec![],
            )
            .await
            .ok()?;
        (polls.as_u64()? >= 3).then_some(())
    })
    .await;
    let shown = charts(client).await;
    assert!(shown.hidden, "the charts are hidden: {shown:?}");
    assert_eq!(shown.samples, 0, "no samples without a token");
    for (series, line) in &shown.lines {
        assert_eq!(
            line,
            &Line {
                points: String::new(),
                latest: String::new()
            },
            "{series} drawn without a token"
        );
    }
    assert!(shown.values.iter().all(|value| value == "–"), "{shown:?}");
    let described = client
        .execute(
            "return Array.from(document.querySelectorAll('#charts desc, #charts text.end'), \
             (e) => e.textContent).join('')",
            vec![],
        )
        .await
        .expect("script runs");
    assert_eq!(described, json!(""), "no figures in the charts' texts");

    crate::browser::give_token(client, TOKEN).await;
    let given = eventually(Duration::from_secs(15), "the charts drawn", || async {
        let shown = charts(client).await;
        (!shown.hidden && shown.line("backlog").latest().is_some()).then_some(shown)
    })
    .await;
    assert!(given.samples >= 1, "{given:?}");
    assert!(!given.line("backlog").points.is_empty(), "{given:?}");
    let _ = browser.client.clone().close().await;
}
