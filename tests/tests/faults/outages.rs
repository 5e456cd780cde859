//! The broker and the database stopped for a while under load, and waited out.

use std::time::{Duration, Instant};

use crate::{
    harness::{readiness, wait_ready, Load, Machine, Pipeline},
    CONFIRM_DEADLINE,
};

use crate::{broker_connections, database_connections, summary, CLIENTS};

/// Scenario 3, for a broker outage made by `stop`, then ended by `start`.
async fn broker_outage(scenario: &str, stop: impl Fn(&Machine), start: impl Fn(&Machine)) {
    let machine = Machine;
    let pipeline = Pipeline::start().await;
    let load = Load::start(&pipeline.http, &pipeline.publisher.url, CLIENTS);
    load.wait_accepted(1000, Duration::from_secs(60)).await;

    stop(&machine);
    let down = Instant::now();
    for url in [&pipeline.publisher.url, &pipeline.consumer.url] {
        end_to_end::eventually(
            Duration::from_secs(5),
            "readiness to report the outage",
            || async { (readiness(&pipeline.http, url).await == 503).then_some(()) },
        )
        .await;
    }
    // Requests in flight when the link broke are republished until their deadline; later ones fail fast.
    let outage_known = Instant::now();
    let accepted_while_down = load.accepted();
    // The outage itself: about ten seconds of clients being refused.
    tokio::time::sleep(Duration::from_secs(10).saturating_sub(down.elapsed())).await;
    assert!(
        load.accepted() <= accepted_while_down + CLIENTS,
        "accepted while the broker was down"
    );
    start(&machine);
    let back = Instant::now();
    load.wait_accepted(500, Duration::from_secs(60)).await;
    let publisher_recovered = back.elapsed();
    wait_ready(
        &pipeline.http,
        &pipeline.consumer.url,
        Duration::from_secs(60),
    )
    .await;
    let consumer_recovered = back.elapsed();
    let report = load.stop().await;

    assert_eq!(
        report.refusals_without_retry_after, 0,
        "a 503 without Retry-After"
    );
    let slowest_in_flight = report.slowest_refusal(None);
    let slowest_after = report.slowest_refusal(Some(outage_known));
    assert!(
        slowest_after < Duration::from_secs(1),
        "a request sent while the outage was known took {slowest_after:?} to be refused"
    );
    assert!(
        slowest_in_flight < CONFIRM_DEADLINE + Duration::from_secs(1),
        "a request in flight at the outage took {slowest_in_flight:?} to be refused"
    );
    let caught_up = pipeline.assert_accepted_stored_once(&report).await;
    // A leak persists; a reconnect still closing its predecessor does not: wait for the steady state,
    // the publisher's pool full again (AMQP_CONNECTIONS, 1 by default) and one of each of the consumer's.
    let expected = [
        "message-consumer",
        "message-consumer-dead-letters",
        "message-publisher",
    ];
    let mut connections = Vec::new();
    let settled = end_to_end::eventually(
        Duration::from_secs(15),
        "the publisher's pool and one consumer connection of each kind",
        || {
            connections = broker_connections();
            connections.sort();
            let matches = connections == expected;
            async move { matches.then_some(()) }
        },
    );
    settled.await;
    summary(
        scenario,
        &report,
        caught_up,
        &format!(
            "; slowest 503 {slowest_after:.0?} once the outage was known, {slowest_in_flight:.1?} for a request \
             in flight at the outage (republished until its deadline); publisher accepting \
             {publisher_recovered:.1?} and consumer ready {consumer_recovered:.1?} after the broker returned; \
             the publisher's pool full and one consumer connection of each kind afterwards"
        ),
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "stops the machine's RabbitMQ and PostgreSQL; run by scripts/fault-suite"]
async fn s3_a_broker_app_stopped_for_ten_seconds_is_waited_out() {
    broker_outage(
        "RabbitMQ stop_app",
        Machine::stop_broker_app,
        Machine::start_broker_app,
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "stops the machine's RabbitMQ and PostgreSQL; run by scripts/fault-suite"]
async fn s3_a_broker_node_restart_is_waited_out() {
    broker_outage(
        "RabbitMQ node restart",
        Machine::stop_broker_node,
        Machine::start_broker_node,
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "stops the machine's RabbitMQ and PostgreSQL; run by scripts/fault-suite"]
async fn s4_a_database_stopped_for_ten_seconds_is_waited_out_without_acks_or_crashes() {
    let machine = Machine;
    let mut pipeline = Pipeline::start().await;
    let load = Load::start(&pipeline.http, &pipeline.publisher.url, CLIENTS);
    load.wait_accepted(1000, Duration::from_secs(60)).await;
    let connections_before = database_connections(&pipeline).await;

    machine.stop_database();
    let down = Instant::now();
    end_to_end::eventually(
        Duration::from_secs(10),
        "consumer readiness to report the outage",
        || async { (readiness(&pipeline.http, &pipeline.consumer.url).await == 503).then_some(()) },
    )
    .await;
    // The publisher does not need the database: it keeps accepting.
    load.wait_accepted(200, Duration::from_secs(10)).await;
    tokio::time::sleep(Duration::from_secs(10).saturating_sub(down.elapsed())).await;
    assert!(
        pipeline.consumer.is_running(),
        "the consumer exited during the outage"
    );
    machine.start_database();
    let back = Instant::now();
    wait_ready(
        &pipeline.http,
        &pipeline.consumer.url,
        Duration::from_secs(60),
    )
    .await;
    let recovered = back.elapsed();
    load.wait_accepted(500, Duration::from_secs(60)).await;
    let report = load.stop().await;

    let caught_up = pipeline.assert_accepted_stored_once(&report).await;
    let connections_after = database_connections(&pipeline).await;
    assert!(
        connections_after <= 8 + 2,
        "{connections_after} database connections: a pool leaks"
    );
    summary(
        "PostgreSQL stop",
        &report,
        caught_up,
        &format!(
            "; consumer ready {recovered:.1?} after the database returned; database connections \
             {connections_before} before, {connections_after} after"
        ),
    );
}
