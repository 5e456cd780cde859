//! Shards on one broker and on the three-node cluster: kills of a consumer, of a node and of several
//! services at once.

use std::time::{Duration, Instant};

use crate::harness::{wait_ready, Cluster, Load, Pipeline, RetryingLoad};

use crate::{summary, CLIENTS};

/// The value of counter `name` on the service at `url`.
pub async fn counter(http: &reqwest::Client, url: &str, name: &str) -> f64 {
    let text = http
        .get(format!("{url}/metrics"))
        .send()
        .await
        .expect("metrics answer")
        .text()
        .await
        .expect("metrics text");
    text.lines()
        .find_map(|line| line.strip_prefix(name)?.strip_prefix(' '))
        .and_then(|value| value.trim().parse().ok())
        .unwrap_or_else(|| panic!("{name} in /metrics"))
}

/// The shards of `queue` when there are `count`.
fn shard_names(queue: &str, count: usize) -> Vec<String> {
    (0..count).map(|i| format!("{queue}.{i}")).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "kills the services under load; run by scripts/fault-suite"]
async fn s11_four_shards_on_one_broker_share_the_load_and_a_consumer_kill_loses_and_doubles_nothing(
) {
    let mut pipeline = Pipeline::start_with(&[("QUEUE_SHARDS", "4")]).await;
    let shards = shard_names(pipeline.queue(), 4);
    // With no consumer, what the publisher accepted stays in the shards, to be counted.
    pipeline.consumer.kill();
    let load = Load::start(&pipeline.http, &pipeline.publisher.url, CLIENTS);
    load.wait_accepted(4000, Duration::from_secs(60)).await;
    let first = load.stop().await;
    let depths = pipeline.queue_depths(&shards).await;
    let total: u32 = depths.iter().sum();
    assert_eq!(
        total as usize,
        first.accepted.len(),
        "every accepted message is in a shard: {depths:?}"
    );
    for (shard, depth) in shards.iter().zip(&depths) {
        assert!(
            *depth as usize * 10 >= first.accepted.len(),
            "{shard} took {depth} of {}, under 10 %",
            first.accepted.len()
        );
    }

    // Drain the backlog while more arrives, and kill the consumer in the middle of it.
    pipeline.consumer.restart();
    wait_ready(
        &pipeline.http,
        &pipeline.consumer.url,
        Duration::from_secs(30),
    )
    .await;
    let load = Load::start(&pipeline.http, &pipeline.publisher.url, CLIENTS);
    end_to_end::eventually(
        Duration::from_secs(60),
        "the consumer to be storing",
        || async { (pipeline.stored_ids().await.len() >= 1000).then_some(()) },
    )
    .await;
    pipeline.consumer.kill();
    load.wait_accepted(1000, Duration::from_secs(60)).await;
    pipeline.consumer.restart();
    load.wait_accepted(1000, Duration::from_secs(60)).await;
    let mut report = load.stop().await;
    report.accepted.extend(first.accepted);
    report.attempted.extend(first.attempted);
    for (status, count) in first.statuses {
        *report.statuses.entry(status).or_default() += count;
    }
    let caught_up = pipeline.assert_accepted_stored_once(&report).await;
    summary(
        "4 shards, consumer SIGKILL",
        &report,
        caught_up,
        &format!("; the first 4000 spread over the shards as {depths:?}"),
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "kills a node of scripts/cluster; run by scripts/fault-suite"]
async fn s12_the_cluster_node_leading_the_most_shards_killed_under_load_loses_nothing_and_rejoins()
{
    let cluster = Cluster::get();
    let pipeline = Pipeline::start_on(&cluster.url, &[("QUEUE_SHARDS", "4")]).await;
    let shards = shard_names(pipeline.queue(), 4);
    let load = RetryingLoad::start(
        &pipeline.http,
        std::slice::from_ref(&pipeline.publisher.url),
        CLIENTS,
    );
    load.wait_accepted(2000, Duration::from_secs(60)).await;

    let (node, led) = cluster.node_leading_most(&shards);
    cluster.kill(node);
    let killed = Instant::now();
    load.wait_accepted(2000, Duration::from_secs(60)).await;
    let accepting_again = killed.elapsed();
    let (new_leader, _) = cluster.node_leading_most(&shards);
    assert_ne!(new_leader, node, "the killed node still leads shards");

    cluster.restart(node);
    end_to_end::eventually(
        Duration::from_secs(60),
        "the three nodes to run",
        || async { (cluster.running() == 3).then_some(()) },
    )
    .await;
    let rejoined = killed.elapsed();
    load.wait_accepted(1000, Duration::from_secs(60)).await;
    let report = load.stop().await;
    for url in [&pipeline.publisher.url, &pipeline.consumer.url] {
        wait_ready(&pipeline.http, url, Duration::from_secs(30)).await;
    }
    let caught_up = pipeline.assert_each_key_stored_once(&report).await;
    let republished = counter(
        &pipeline.http,
        &pipeline.publisher.url,
        "publisher_messages_republished_total",
    )
    .await;
    let pause = report.longest_pause();
    // A liveness bound, not a speed target: the pause itself is printed (aim: under 5 s).
    assert!(
        pause < Duration::from_secs(30),
        "no message was accepted for {pause:?}"
    );
    println!(
        "cluster node SIGKILL: node {node} led {led} of 4 shards; accepted {} keys, each stored once \
         (statuses {:?}); longest pause between 202s {pause:.2?}; 2000 more accepted {accepting_again:.1?} \
         after the kill; {republished} publishes in doubt or refused were made again; node \
         restarted and rejoined {rejoined:.1?} after the kill; both services ready; caught up \
         {caught_up:.1?} after the load stopped",
        report.accepted.len(),
        report.statuses
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "kills services on scripts/cluster; run by scripts/fault-suite"]
async fn s13_three_publishers_and_three_consumers_on_the_cluster_lose_one_of_each_and_store_exactly_once(
) {
    let cluster = Cluster::get();
    let mut pipeline = Pipeline::start_on(&cluster.url, &[("QUEUE_SHARDS", "4")]).await;
    let mut publishers = [
        pipeline.another("publisher").await,
        pipeline.another("publisher").await,
    ];
    let _consumers = [
        pipeline.another("consumer").await,
        pipeline.another("consumer").await,
    ];
    let urls: Vec<String> = std::iter::once(pipeline.publisher.url.clone())
        .chain(publishers.iter().map(|p| p.url.clone()))
        .collect();
    let load = RetryingLoad::start(&pipeline.http, &urls, CLIENTS);
    load.wait_accepted(2000, Duration::from_secs(60)).await;

    publishers[0].kill();
    pipeline.consumer.kill();
    load.wait_accepted(2000, Duration::from_secs(60)).await;
    publishers[0].restart();
    pipeline.consumer.restart();
    load.wait_accepted(1000, Duration::from_secs(60)).await;
    let report = load.stop().await;
    let caught_up = pipeline.assert_each_key_stored_once(&report).await;
    println!(
        "3 publishers and 3 consumers on the cluster, one of each SIGKILLed: accepted {} keys, each \
         stored once (statuses {:?}); longest pause between 202s {:.2?}; caught up {caught_up:.1?}",
        report.accepted.len(),
        report.statuses,
        report.longest_pause()
    );
}
