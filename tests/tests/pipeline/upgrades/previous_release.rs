//! The previous landed release's binaries against this release's: a rollback of the consumer, and both
//! versions side by side as during a rollout. On demand, by scripts/upgrade-check, which builds that
//! release and names its binaries' folder in `PREVIOUS_RELEASE_BIN`.

use common::settings::Settings as _;
use std::{process::Command, time::Duration};

use end_to_end::{
    eventually,
    process::{LogLines, ServiceProcess},
    readiness, spawn_consumer, StackConfig, TestStack,
};
use uuid::Uuid;

use super::{next_release_expand, stall::settings, with_extra};

/// A service of the previous release, running as a process until dropped.
struct Previous {
    process: ServiceProcess,
    url: String,
    logs: LogLines,
}

impl Previous {
    /// Starts the previous release's `binary` with `environment`, on a port of its own.
    fn start(binary: &str, environment: Vec<(String, String)>) -> Self {
        let folder = std::env::var("PREVIOUS_RELEASE_BIN").expect(
            "PREVIOUS_RELEASE_BIN names the previous release's binaries (scripts/upgrade-check)",
        );
        let mut command = Command::new(format!("{folder}/{binary}"));
        command.envs(environment);
        let process = ServiceProcess::spawn(command, None, "info");
        Self {
            url: process.url(),
            logs: process.logs().clone(),
            process,
        }
    }
}

impl Drop for Previous {
    fn drop(&mut self) {
        // SIGTERM, as Kubernetes stops a pod; the services exit within their shutdown timeout.
        if self.process.signal(libc::SIGTERM) {
            self.process.wait();
        }
    }
}

/// Waits until the service at `url` is ready.
async fn wait_ready(http: &reqwest::Client, url: &str, within: Duration) {
    eventually(within, &format!("{url} to be ready"), || async {
        (readiness(http, url).await == 200).then_some(())
    })
    .await;
}

/// Publishes `count` messages, half of them with an `Idempotency-Key`, to the publisher at `url`, and
/// returns every id answered with 202 (a keyed message is then published again with the same key, and
/// must get the same id).
async fn publish_mixed(http: &reqwest::Client, url: &str, label: &str, count: usize) -> Vec<Uuid> {
    let mut ids = Vec::new();
    for n in 0..count {
        let body =
            serde_json::json!({"sender": format!("{label}-{n}"), "messageAttributes": {"n": n}});
        let mut request = http.post(format!("{url}/message/publish")).json(&body);
        if n % 2 == 1 {
            request = request.header("Idempotency-Key", format!("{label}-key-{n}"));
        }
        let response = request.send().await.expect("publisher reachable");
        assert_eq!(
            response.status(),
            202,
            "{label}: {:?}",
            response.text().await
        );
        let answer: serde_json::Value = response.json().await.expect("JSON");
        ids.push(answer["id"].as_str().expect("id").parse().expect("uuid"));
    }
    ids
}

/// A rollback of the consumer: the previous release's consumer, started on a database this release
/// migrated, becomes ready and stores what this release's publisher accepts.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs the previous release's binaries: scripts/upgrade-check"]
async fn the_previous_consumer_runs_on_a_database_this_release_migrated() {
    // Arrange
    let mut stack = TestStack::start().await;
    let before = stack
        .publish_ok(&serde_json::json!({"sender": "before"}))
        .await;
    stack.wait_stored(before).await;
    stack
        .consumer
        .take()
        .expect("consumer")
        .stop()
        .await
        .unwrap();

    // Act
    let previous = Previous::start("consumer", stack.consumer_config.environment());
    wait_ready(&stack.http, &previous.url, Duration::from_secs(60)).await;
    let after = stack
        .publish_ok(&serde_json::json!({"sender": "after"}))
        .await;

    // Assert
    eventually(
        Duration::from_secs(30),
        "the previous consumer to store",
        || async {
            let response = stack
                .http
                .get(format!("{}/message/{after}", previous.url))
                .send()
                .await
                .ok()?;
            (response.status() == 200).then_some(())
        },
    )
    .await;
    assert_eq!(stack.rows_for(&[before, after]).await, (2, 2));
    println!("rollback: the previous consumer became ready on the migrated database and stored");
}

/// Why a consumer must accept newer migrations: the previous release's consumer, which does not, never
/// becomes ready on a database where a newer release recorded one. From this release on, a rollback
/// across an expand migration works (`a_consumer_runs_on_a_schema_that_a_newer_release_expanded`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs the previous release's binaries: scripts/upgrade-check"]
async fn the_previous_consumer_refuses_a_migration_it_does_not_know() {
    // Arrange
    let config = StackConfig::unique();
    let mut stack = TestStack::start_with(config).await;
    stack
        .consumer
        .take()
        .expect("consumer")
        .stop()
        .await
        .unwrap();
    consumer::migrations::apply(
        &stack.database_url,
        &settings(),
        &with_extra(next_release_expand()),
    )
    .await
    .unwrap();

    // Act
    let previous = Previous::start("consumer", stack.consumer_config.environment());
    let refused = eventually(Duration::from_secs(60), "VersionMissing in its log", || {
        let found = previous.logs.events().iter().any(|event| {
            event
                .to_string()
                .contains("was previously applied but is missing")
        });
        async move { found.then_some(()) }
    });
    refused.await;

    // Assert
    assert_eq!(readiness(&stack.http, &previous.url).await, 503);
    println!(
        "the previous consumer stays unready on a database with a newer migration (VersionMissing)"
    );
}

/// Both releases side by side, as during a rollout: the previous publisher to this consumer, this
/// publisher to the previous consumer, then both of each at once, with keyed and unkeyed messages and
/// each key sent again through the other version. Every 202 is one row, and nothing is dead-lettered.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs the previous release's binaries: scripts/upgrade-check"]
async fn mixed_versions_store_every_accepted_message_once_both_ways() {
    // Arrange
    let config = StackConfig::unique();
    let consumer_config = config.consumer.clone();
    let publisher_environment = config.publisher.environment();
    let mut stack = TestStack::start_with(config).await;
    let old_publisher = Previous::start("publisher", publisher_environment);
    wait_ready(&stack.http, &old_publisher.url, Duration::from_secs(30)).await;
    let http = stack.http.clone();
    let mut ids = Vec::new();

    // Act: the previous publisher to this consumer.
    ids.extend(publish_mixed(&http, &old_publisher.url, "old-to-new", 200).await);
    wait_all_stored(&stack, &ids).await;

    // Act: this publisher to the previous consumer.
    stack
        .consumer
        .take()
        .expect("consumer")
        .stop()
        .await
        .unwrap();
    let old_consumer = Previous::start("consumer", consumer_config.environment());
    wait_ready(&http, &old_consumer.url, Duration::from_secs(60)).await;
    ids.extend(publish_mixed(&http, stack.publisher_url(), "new-to-old", 200).await);
    wait_all_stored(&stack, &ids).await;

    // Act: both of each at once, each key sent again through the other publisher.
    stack.consumer = Some(spawn_consumer(&consumer_config));
    stack.wait_ready(stack.consumer_url()).await;
    let (from_old, from_new) = tokio::join!(
        publish_mixed(&http, &old_publisher.url, "both", 200),
        publish_mixed(&http, stack.publisher_url(), "both", 200),
    );
    assert_eq!(
        from_old.iter().skip(1).step_by(2).collect::<Vec<_>>(),
        from_new.iter().skip(1).step_by(2).collect::<Vec<_>>(),
        "a key gets the same id from either version"
    );
    let unique: std::collections::HashSet<Uuid> = ids
        .iter()
        .chain(&from_old)
        .chain(&from_new)
        .copied()
        .collect();
    let unique: Vec<Uuid> = unique.into_iter().collect();
    wait_all_stored(&stack, &unique).await;

    // Assert
    let expected = unique.len() as i64;
    assert_eq!(stack.rows_for(&unique).await, (expected, expected));
    assert_eq!(stack.row_count().await, expected);
    assert_eq!(stack.queue_depth(".dead").await, 0, "dead letters");
    println!(
        "mixed versions: {} accepted (200 old->new, 200 new->old, 400 both at once, keyed retried \
         across versions), {expected} distinct ids, each stored once, 0 dead letters",
        ids.len() + from_old.len() + from_new.len()
    );
    drop(old_consumer);
}

async fn wait_all_stored(stack: &TestStack, ids: &[Uuid]) {
    let expected = ids.len() as i64;
    eventually(
        Duration::from_secs(60),
        "every accepted message stored",
        || async { (stack.rows_for(ids).await.0 == expected).then_some(()) },
    )
    .await;
}
