//! The delivery guarantee under faults, against the machine's real RabbitMQ and PostgreSQL and the
//! release binaries as processes. Each scenario runs concurrent clients, records every id answered 202,
//! injects a fault, then proves that every accepted id is stored exactly once, that nothing is stored that
//! was never attempted, and that the services recovered by themselves.
//!
//! These stop the machine's broker and database, so they are ignored by a plain `cargo test` and run one
//! at a time by `scripts/fault-suite` (`--include-ignored --test-threads=1`).

mod harness;

use std::time::{Duration, Instant};

use harness::{readiness, wait_ready, Cluster, Load, Machine, Pipeline, RetryingLoad};
use lapin::{
    options::{BasicConsumeOptions, BasicPublishOptions, BasicQosOptions, QueueDeclareOptions},
    types::FieldTable,
    BasicProperties, Connection, ConnectionProperties,
};

const CLIENTS: usize = 16;
/// The publisher's default `CONFIRM_TIMEOUT_MS`: how long an in-doubt request is republished before its 503.
const CONFIRM_DEADLINE: Duration = Duration::from_secs(5);

fn summary(scenario: &str, report: &harness::LoadReport, caught_up: Duration, extra: &str) {
    println!(
        "{scenario}: accepted {} ({} attempts, {} unanswered, statuses {:?}); stored once, duplicates 0; \
         caught up {caught_up:.1?} after the load stopped{extra}",
        report.accepted.len(),
        report.attempted.len(),
        report.unanswered,
        report.statuses
    );
}

/// Connections the broker has from this system's services, by name.
fn broker_connections() -> Vec<String> {
    let output = std::process::Command::new("rabbitmqctl")
        .args([
            "list_connections",
            "-q",
            "--no-table-headers",
            "client_properties",
        ])
        .output()
        .expect("rabbitmqctl");
    String::from_utf8_lossy(&output.stdout)
        .lines()
        .filter_map(|line| {
            [
                "message-publisher",
                "message-consumer-dead-letters",
                "message-consumer",
            ]
            .into_iter()
            .find(|name| line.contains(name))
            .map(str::to_owned)
        })
        .collect()
}

async fn database_connections(pipeline: &Pipeline) -> i64 {
    sqlx::query_scalar("SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()")
        .fetch_one(&pipeline.db)
        .await
        .expect("count connections")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "stops the machine's RabbitMQ and PostgreSQL; run by scripts/fault-suite"]
async fn s1_a_consumer_killed_mid_batch_loses_and_doubles_nothing() {
    let _machine = Machine;
    let mut pipeline = Pipeline::start().await;
    let load = Load::start(&pipeline.http, &pipeline.publisher.url, CLIENTS);
    load.wait_accepted(2000, Duration::from_secs(60)).await;

    pipeline.consumer.kill();
    load.wait_accepted(1000, Duration::from_secs(60)).await;
    pipeline.consumer.restart();
    let restarted = Instant::now();
    wait_ready(
        &pipeline.http,
        &pipeline.consumer.url,
        Duration::from_secs(30),
    )
    .await;
    let recovered = restarted.elapsed();
    load.wait_accepted(1000, Duration::from_secs(60)).await;
    let report = load.stop().await;

    let caught_up = pipeline.assert_accepted_stored_once(&report).await;
    summary(
        "consumer SIGKILL",
        &report,
        caught_up,
        &format!("; ready {recovered:.1?} after restart"),
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "stops the machine's RabbitMQ and PostgreSQL; run by scripts/fault-suite"]
async fn s2_s9_a_publisher_killed_under_load_keeps_every_accepted_message_and_keyed_retries_store_once(
) {
    let _machine = Machine;
    let mut pipeline = Pipeline::start().await;
    let load = Load::start(&pipeline.http, &pipeline.publisher.url, CLIENTS);
    load.wait_accepted(2000, Duration::from_secs(60)).await;

    pipeline.publisher.kill();
    pipeline.publisher.restart();
    wait_ready(
        &pipeline.http,
        &pipeline.publisher.url,
        Duration::from_secs(30),
    )
    .await;
    load.wait_accepted(1000, Duration::from_secs(60)).await;
    let mut report = load.stop().await;

    // Clients that saw no answer retry with the same key: same id, stored once, confirmed or not before.
    let retried = report.unanswered_attempts.clone();
    for (key, body, id) in &retried {
        let response = pipeline
            .http
            .post(format!("{}/message/publish", pipeline.publisher.url))
            .header("Idempotency-Key", key)
            .json(body)
            .send()
            .await
            .expect("publisher answers");
        assert_eq!(response.status(), 202);
        let answer: serde_json::Value = response.json().await.unwrap();
        assert_eq!(answer["id"], id.to_string(), "a retry got another id");
        report.accepted.push(*id);
    }

    let caught_up = pipeline.assert_accepted_stored_once(&report).await;
    summary(
        "publisher SIGKILL",
        &report,
        caught_up,
        &format!(
            "; {} unanswered requests retried with their key",
            retried.len()
        ),
    );
}

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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "stops the machine's RabbitMQ and PostgreSQL; run by scripts/fault-suite"]
async fn s5_sigterm_under_load_exits_0_promptly_and_loses_nothing() {
    let _machine = Machine;
    let mut pipeline = Pipeline::start().await;
    let load = Load::start(&pipeline.http, &pipeline.publisher.url, CLIENTS);
    load.wait_accepted(1000, Duration::from_secs(60)).await;

    let (consumer_status, consumer_took) = pipeline.consumer.terminate();
    pipeline.consumer.restart();
    load.wait_accepted(500, Duration::from_secs(60)).await;
    let (publisher_status, publisher_took) = pipeline.publisher.terminate();
    // A restarted publisher answers 503 (with Retry-After) until its broker link is up; before the
    // restart, every request in flight at SIGTERM must have been answered, not refused.
    let restarted = std::time::Instant::now();
    pipeline.publisher.restart();
    wait_ready(
        &pipeline.http,
        &pipeline.publisher.url,
        Duration::from_secs(30),
    )
    .await;
    load.wait_accepted(500, Duration::from_secs(60)).await;
    let report = load.stop().await;

    assert!(
        consumer_status.success(),
        "consumer exited with {consumer_status}"
    );
    assert!(
        publisher_status.success(),
        "publisher exited with {publisher_status}"
    );
    for took in [consumer_took, publisher_took] {
        assert!(took < Duration::from_secs(10), "took {took:?} to exit");
    }
    let refused_before_restart = report
        .refusals_at
        .iter()
        .filter(|at| **at < restarted)
        .count();
    assert_eq!(
        refused_before_restart, 0,
        "in-flight requests were refused: {:?}",
        report.statuses
    );
    assert_eq!(
        report.refusals_without_retry_after, 0,
        "a 503 without Retry-After"
    );
    let caught_up = pipeline.assert_accepted_stored_once(&report).await;
    summary(
        "SIGTERM",
        &report,
        caught_up,
        &format!("; consumer exited 0 in {consumer_took:.1?}, publisher in {publisher_took:.1?}"),
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "stops the machine's RabbitMQ and PostgreSQL; run by scripts/fault-suite"]
async fn s6_a_message_that_keeps_crashing_its_consumer_is_dead_lettered_after_the_delivery_limit() {
    // Arrange: no consumer of ours; a message on the queue.
    let _machine = Machine;
    let mut pipeline = Pipeline::start_with(&[("DELIVERY_LIMIT", "3")]).await;
    pipeline.consumer.kill();
    let amqp = Connection::connect(&end_to_end::amqp_url(), ConnectionProperties::default())
        .await
        .unwrap();
    let channel = amqp.create_channel().await.unwrap();
    channel.confirm_select(Default::default()).await.unwrap();
    let queue = pipeline.queue().to_owned();
    channel
        .basic_publish(
            format!("{queue}.exchange").as_str().into(),
            queue.as_str().into(),
            BasicPublishOptions::default(),
            b"{\"crashes\": \"every consumer\"}",
            BasicProperties::default().with_delivery_mode(2),
        )
        .await
        .unwrap()
        .await
        .unwrap();

    // Act: a consumer that dies holding it, again and again.
    let mut deliveries = 0;
    for _ in 0..10 {
        let crashing =
            Connection::connect(&end_to_end::amqp_url(), ConnectionProperties::default())
                .await
                .unwrap();
        let crashing_channel = crashing.create_channel().await.unwrap();
        crashing_channel
            .basic_qos(1, BasicQosOptions::default())
            .await
            .unwrap();
        let mut consumer = crashing_channel
            .basic_consume(
                queue.as_str().into(),
                "crashing".into(),
                BasicConsumeOptions::default(),
                FieldTable::default(),
            )
            .await
            .unwrap();
        use futures::StreamExt;
        let got = tokio::time::timeout(Duration::from_secs(2), consumer.next()).await;
        let _ = crashing.close(320, "crash".into()).await;
        if got.is_err() {
            break; // nothing left to deliver: it was dead-lettered
        }
        deliveries += 1;
    }

    // Assert
    let dead = channel
        .queue_declare(
            format!("{queue}.dead").as_str().into(),
            QueueDeclareOptions {
                passive: true,
                ..Default::default()
            },
            FieldTable::default(),
        )
        .await
        .unwrap();
    assert_eq!(
        dead.message_count(),
        1,
        "the message is in the dead-letter queue"
    );
    assert!(
        deliveries <= 4,
        "delivered {deliveries} times with a delivery limit of 3"
    );
    println!("crash loop: dead-lettered after {deliveries} deliveries (DELIVERY_LIMIT=3)");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "stops the machine's RabbitMQ and PostgreSQL; run by scripts/fault-suite"]
async fn s7_under_a_broker_memory_alarm_the_publisher_refuses_with_503_and_stays_bounded() {
    let machine = Machine;
    let pipeline = Pipeline::start().await;
    let load = Load::start(&pipeline.http, &pipeline.publisher.url, CLIENTS);
    load.wait_accepted(1000, Duration::from_secs(60)).await;
    let rss_before = pipeline.publisher.rss_kib();

    machine.set_memory_watermark("0.0000001");
    end_to_end::eventually(
        Duration::from_secs(15),
        "the publisher to report the alarm",
        || async {
            (readiness(&pipeline.http, &pipeline.publisher.url).await == 503).then_some(())
        },
    )
    .await;
    tokio::time::sleep(Duration::from_secs(5)).await; // five seconds of clients under the alarm
    let rss_during = pipeline.publisher.rss_kib();
    machine.restore_memory_watermark();
    let back = Instant::now();
    load.wait_accepted(500, Duration::from_secs(60)).await;
    let recovered = back.elapsed();
    let report = load.stop().await;

    assert!(
        report.statuses.get(&503).copied().unwrap_or(0) > 0,
        "nothing was refused under the alarm"
    );
    assert!(
        rss_during < rss_before + 50 * 1024,
        "RSS grew from {rss_before} to {rss_during} KiB"
    );
    let caught_up = pipeline.assert_accepted_stored_once(&report).await;
    summary(
        "memory alarm",
        &report,
        caught_up,
        &format!("; publisher RSS {rss_before} KiB before, {rss_during} KiB under the alarm; accepting {recovered:.1?} after it cleared"),
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "stops the machine's RabbitMQ and PostgreSQL; run by scripts/fault-suite"]
async fn s8_slow_and_idle_clients_do_not_stop_others_being_served() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    raise_open_file_limit();
    let _machine = Machine;
    let pipeline = Pipeline::start_with(&[("BODY_TIMEOUT_MS", "2000")]).await;
    let address = pipeline
        .publisher
        .url
        .trim_start_matches("http://")
        .to_owned();

    // 1,000 idle connections, and one client sending its body a byte every 100 ms.
    let mut idle = Vec::new();
    for _ in 0..1000 {
        idle.push(
            tokio::net::TcpStream::connect(&address)
                .await
                .expect("connect"),
        );
    }
    let mut slow = tokio::net::TcpStream::connect(&address).await.unwrap();
    slow.write_all(b"POST /message/publish HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 200\r\n\r\n").await.unwrap();
    let trickle = tokio::spawn(async move {
        let mut answer = Vec::new();
        for byte in b"{\"sender\": \"slow\"".iter().cycle().take(200) {
            if slow.write_all(&[*byte]).await.is_err() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
            let mut buffer = [0; 512];
            if let Ok(Ok(n)) =
                tokio::time::timeout(Duration::from_millis(1), slow.read(&mut buffer)).await
            {
                answer.extend_from_slice(&buffer[..n]);
                break;
            }
        }
        String::from_utf8_lossy(&answer).into_owned()
    });

    // Others are served meanwhile.
    let load = Load::start(&pipeline.http, &pipeline.publisher.url, CLIENTS);
    let started = Instant::now();
    load.wait_accepted(1000, Duration::from_secs(30)).await;
    let served_in = started.elapsed();
    let slow_answer = trickle.await.unwrap();
    let report = load.stop().await;

    assert!(
        slow_answer.starts_with("HTTP/1.1 408"),
        "the trickling client got: {slow_answer:?}"
    );
    drop(idle);
    let caught_up = pipeline.assert_accepted_stored_once(&report).await;
    summary("slow and idle clients", &report, caught_up, &format!("; 1000 accepted in {served_in:.1?} beside 1,000 idle connections and a trickling body (answered 408)"));
}

fn raise_open_file_limit() {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: plain libc calls on a local struct.
    unsafe {
        libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit);
        limit.rlim_cur = limit.rlim_max.min(65536);
        libc::setrlimit(libc::RLIMIT_NOFILE, &limit);
    }
}

/// The memory limits the manifests ship, in KiB (`kube/base/message-*-deployment.yaml`).
const PUBLISHER_LIMIT_KIB: u64 = 192 * 1024;
const CONSUMER_LIMIT_KIB: u64 = 256 * 1024;

/// How a raw request announces its body.
#[derive(Clone, Copy)]
enum Framing {
    /// `Content-Length` with the given length.
    Declared(usize),
    /// `Transfer-Encoding: chunked`: no length to refuse it by.
    Chunked,
}

/// Sends up to `body_bytes` of a batch of tiny elements (`{"sender":"a"},` repeated) and returns the
/// status line of the answer. The answer is read while the body is still being sent, since the publisher
/// may answer and close before taking it all.
async fn post_tiny_elements(url: &str, framing: Framing, body_bytes: usize) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let address = url.trim_start_matches("http://");
    let stream = tokio::net::TcpStream::connect(address).await.unwrap();
    let (mut reader, mut writer) = stream.into_split();
    let answer = tokio::spawn(async move {
        let mut answer = Vec::new();
        let mut buffer = [0; 512];
        while !answer.contains(&b'\n') {
            match reader.read(&mut buffer).await {
                Ok(0) | Err(_) => break,
                Ok(read) => answer.extend_from_slice(&buffer[..read]),
            }
        }
        String::from_utf8_lossy(&answer)
            .lines()
            .next()
            .unwrap_or_default()
            .to_owned()
    });
    let length_header = match framing {
        Framing::Declared(length) => format!("Content-Length: {length}"),
        Framing::Chunked => "Transfer-Encoding: chunked".to_owned(),
    };
    let head = format!(
        "POST /message/publish/batch HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n{length_header}\r\n\r\n"
    );
    let element = br#"{"sender":"a"},"#;
    let piece: Vec<u8> = element
        .iter()
        .copied()
        .cycle()
        .take(element.len() * 4096)
        .collect();
    let mut sent = 0;
    let mut written = writer.write_all(head.as_bytes()).await;
    let mut first = true;
    while written.is_ok() && sent < body_bytes && !answer.is_finished() {
        let mut data = if first { b"[".to_vec() } else { Vec::new() };
        first = false;
        data.extend_from_slice(&piece);
        data.truncate(body_bytes - sent);
        sent += data.len();
        written = match framing {
            Framing::Declared(_) => writer.write_all(&data).await,
            Framing::Chunked => {
                let framed = [
                    format!("{:x}\r\n", data.len()).into_bytes(),
                    data,
                    b"\r\n".to_vec(),
                ]
                .concat();
                writer.write_all(&framed).await
            }
        };
    }
    tokio::time::timeout(Duration::from_secs(30), answer)
        .await
        .expect("an answer in time")
        .unwrap()
}

/// Clients that each send `rounds` copies of `body` to the batch endpoint, retrying a `503` (which must
/// carry `Retry-After`) until it is accepted. Returns the accepted ids and how many 503s they met.
async fn send_batches(
    pipeline: &Pipeline,
    clients: usize,
    rounds: usize,
    body: &[u8],
) -> (Vec<uuid::Uuid>, usize) {
    let tasks = (0..clients).map(|_| {
        let (http, url, body) = (
            pipeline.http.clone(),
            pipeline.publisher.url.clone(),
            body.to_vec(),
        );
        tokio::spawn(async move {
            let (mut busy, mut ids) = (0, Vec::new());
            let give_up = Instant::now() + Duration::from_secs(180);
            while ids.len() < rounds * 64 {
                assert!(
                    Instant::now() < give_up,
                    "batches still refused after 180 s"
                );
                let response = http
                    .post(format!("{url}/message/publish/batch"))
                    .header("Content-Type", "application/json")
                    .body(body.clone())
                    .send()
                    .await
                    .unwrap();
                match response.status().as_u16() {
                    202 => {
                        let answer: serde_json::Value = response.json().await.unwrap();
                        ids.extend(
                            answer["ids"]
                                .as_array()
                                .unwrap()
                                .iter()
                                .map(|id| id.as_str().unwrap().parse::<uuid::Uuid>().unwrap()),
                        );
                    }
                    503 => {
                        assert!(
                            response.headers().contains_key("retry-after"),
                            "a 503 without Retry-After"
                        );
                        busy += 1;
                        // Shorter than Retry-After asks, to keep the publisher at its cap.
                        tokio::time::sleep(Duration::from_millis(50)).await;
                    }
                    other => panic!("unexpected {other}: {:?}", response.text().await),
                }
            }
            (ids, busy)
        })
    });
    let (mut ids, mut busy) = (Vec::new(), 0);
    for client in futures::future::join_all(tasks).await {
        let (accepted, refused) = client.unwrap();
        ids.extend(accepted);
        busy += refused;
    }
    (ids, busy)
}

async fn wait_stored(pipeline: &Pipeline, ids: &[uuid::Uuid]) {
    end_to_end::eventually(
        Duration::from_secs(300),
        "every accepted message to be stored",
        || async {
            let stored: i64 =
                sqlx::query_scalar("SELECT count(*) FROM messages WHERE id = ANY($1)")
                    .bind(ids)
                    .fetch_one(&pipeline.db)
                    .await
                    .ok()?;
            (stored == ids.len() as i64).then_some(())
        },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "stops the machine's RabbitMQ and PostgreSQL; run by scripts/fault-suite"]
async fn s10_the_largest_legal_input_keeps_both_services_under_their_manifest_memory_limits() {
    let mut pipeline = Pipeline::start().await;
    let publisher_idle = pipeline.publisher.peak_rss_kib();

    // Bodies of tiny elements, each refused without being built: 62 MiB declared, 62 MiB chunked, and a
    // body inside the byte limit but with far more than 1,000 elements.
    let declared = post_tiny_elements(
        &pipeline.publisher.url,
        Framing::Declared(62 << 20),
        62 << 20,
    )
    .await;
    let chunked = post_tiny_elements(&pipeline.publisher.url, Framing::Chunked, 62 << 20).await;
    let over_long =
        post_tiny_elements(&pipeline.publisher.url, Framing::Declared(4 << 20), 4 << 20).await;
    let publisher_after_huge = pipeline.publisher.peak_rss_kib();
    assert!(declared.contains(" 413 "), "{declared}");
    assert!(chunked.contains(" 413 "), "{chunked}");
    assert!(over_long.contains(" 400 "), "{over_long}");
    assert!(
        publisher_after_huge < PUBLISHER_LIMIT_KIB / 4,
        "refusing huge bodies took the publisher to {publisher_after_huge} KiB"
    );

    // 16 clients at once, each sending batches of 64 of the largest messages (4 MiB), twice while the
    // consumer stores them, then twice more with the consumer stopped so that a backlog builds up.
    let blob = "x".repeat(64 * 1024 - 64);
    let batch: Vec<serde_json::Value> = (0..64)
        .map(|i| serde_json::json!({ "sender": format!("big-{i}"), "messageAttributes": { "b": blob } }))
        .collect();
    let body = serde_json::to_vec(&batch).unwrap();
    assert!(body.len() <= 4 << 20, "a batch of {} bytes", body.len());
    let live = Instant::now();
    let (mut accepted, busy_live) = send_batches(&pipeline, 16, 2, &body).await;
    wait_stored(&pipeline, &accepted).await;
    let live_time = live.elapsed();
    let consumer_live_peak = pipeline.consumer.peak_rss_kib();

    pipeline.consumer.kill();
    let (backlog, busy_backlog) = send_batches(&pipeline, 16, 2, &body).await;
    let publisher_peak = pipeline.publisher.peak_rss_kib();

    // A fresh consumer drains the backlog of the largest messages.
    pipeline.consumer.restart();
    wait_ready(
        &pipeline.http,
        &pipeline.consumer.url,
        Duration::from_secs(30),
    )
    .await;
    let drained = Instant::now();
    wait_stored(&pipeline, &backlog).await;
    let drain_time = drained.elapsed();
    let consumer_drain_peak = pipeline.consumer.peak_rss_kib();
    accepted.extend(backlog);
    let rows: i64 = sqlx::query_scalar("SELECT count(*) FROM messages")
        .fetch_one(&pipeline.db)
        .await
        .unwrap();

    assert_eq!(
        accepted.len(),
        16 * 4 * 64,
        "every batch accepted in the end"
    );
    assert_eq!(rows, accepted.len() as i64, "each stored once");
    assert!(
        busy_live + busy_backlog > 0,
        "16 batches of 4 MiB at once never met the in-flight cap"
    );
    for (service, peak, limit) in [
        ("publisher", publisher_peak, PUBLISHER_LIMIT_KIB),
        (
            "consumer storing live",
            consumer_live_peak,
            CONSUMER_LIMIT_KIB,
        ),
        (
            "consumer draining the backlog",
            consumer_drain_peak,
            CONSUMER_LIMIT_KIB,
        ),
    ] {
        assert!(
            peak < limit,
            "{service} peaked at {peak} KiB, over its {limit} KiB limit"
        );
    }
    println!(
        "largest legal input: publisher peak RSS {:.1} MiB idle, {:.1} MiB after refusing 62 MiB bodies (declared 413, \
         chunked 413) and 4 MiB of tiny elements (400), {:.1} MiB under 16 clients sending 4,096 messages of \
         64 KiB in batches of 64 ({} × 503 at the in-flight cap; limit {} MiB); consumer peak RSS {:.1} MiB \
         storing 2,048 of them live in {live_time:.1?}, {:.1} MiB draining a backlog of 2,048 in \
         {drain_time:.1?} (limit {} MiB)",
        publisher_idle as f64 / 1024.0,
        publisher_after_huge as f64 / 1024.0,
        publisher_peak as f64 / 1024.0,
        busy_live + busy_backlog,
        PUBLISHER_LIMIT_KIB / 1024,
        consumer_live_peak as f64 / 1024.0,
        consumer_drain_peak as f64 / 1024.0,
        CONSUMER_LIMIT_KIB / 1024
    );
}

/// The value of counter `name` on the service at `url`.
async fn counter(http: &reqwest::Client, url: &str, name: &str) -> f64 {
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

/// The machine's broker frozen with SIGSTOP (as a hung node or a partition that sends no reset looks),
/// and thawed with SIGCONT when dropped, even when the scenario fails.
struct FrozenBroker(i32);

impl FrozenBroker {
    fn freeze() -> Self {
        let output = std::process::Command::new("rabbitmqctl")
            .args(["eval", "list_to_integer(os:getpid())."])
            .output()
            .expect("rabbitmqctl");
        let pid: i32 = String::from_utf8_lossy(&output.stdout)
            .trim()
            .parse()
            .expect("the broker's pid");
        // SAFETY: signalling the broker's own process, whose pid the broker just gave.
        assert_eq!(unsafe { libc::kill(pid, libc::SIGSTOP) }, 0, "SIGSTOP sent");
        Self(pid)
    }
}

impl Drop for FrozenBroker {
    fn drop(&mut self) {
        // SAFETY: as above; continuing a stopped process.
        unsafe { libc::kill(self.0, libc::SIGCONT) };
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "freezes the machine's RabbitMQ; run by scripts/fault-suite"]
async fn s14_a_frozen_broker_under_the_largest_batches_keeps_the_publisher_in_its_limit_and_answering(
) {
    let _machine = Machine;
    let pipeline = Pipeline::start().await;
    let blob = "x".repeat(64 * 1024 - 64);
    let batch: Vec<serde_json::Value> = (0..64)
        .map(|i| serde_json::json!({ "sender": format!("frozen-{i}"), "messageAttributes": { "b": blob } }))
        .collect();
    let body = serde_json::to_vec(&batch).unwrap();
    // What a request may take: its confirm timeout, reading a 4 MiB body, and the answer's way back.
    let deadline = CONFIRM_DEADLINE + Duration::from_secs(5);

    // 16 clients of 4 MiB batches, for 5 s before the freeze, 60 s frozen and 10 s after.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let clients: Vec<_> = (0..16)
        .map(|_| {
            let (http, url, body, stop) = (
                pipeline.http.clone(),
                pipeline.publisher.url.clone(),
                body.clone(),
                stop.clone(),
            );
            tokio::spawn(async move {
                let (mut ids, mut statuses, mut slowest) = (
                    Vec::new(),
                    std::collections::BTreeMap::new(),
                    Duration::ZERO,
                );
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    let sent = Instant::now();
                    let response = http
                        .post(format!("{url}/message/publish/batch"))
                        .header("Content-Type", "application/json")
                        .body(body.clone())
                        .timeout(Duration::from_secs(60))
                        .send()
                        .await;
                    slowest = slowest.max(sent.elapsed());
                    let Ok(response) = response else {
                        *statuses.entry(0).or_insert(0) += 1;
                        continue;
                    };
                    let status = response.status().as_u16();
                    *statuses.entry(status).or_insert(0) += 1;
                    if status == 202 {
                        let answer: serde_json::Value = response.json().await.unwrap();
                        ids.extend(
                            answer["ids"]
                                .as_array()
                                .unwrap()
                                .iter()
                                .map(|id| id.as_str().unwrap().parse::<uuid::Uuid>().unwrap()),
                        );
                    } else {
                        tokio::time::sleep(Duration::from_millis(100)).await;
                    }
                }
                (ids, statuses, slowest)
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_secs(5)).await;
    let frozen = FrozenBroker::freeze();
    let frozen_at = Instant::now();
    let mut peak_frozen = 0;
    while frozen_at.elapsed() < Duration::from_secs(60) {
        peak_frozen = peak_frozen.max(pipeline.publisher.rss_kib());
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    drop(frozen);
    tokio::time::sleep(Duration::from_secs(10)).await;
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let (mut accepted, mut statuses, mut slowest) = (
        Vec::new(),
        std::collections::BTreeMap::new(),
        Duration::ZERO,
    );
    for client in futures::future::join_all(clients).await {
        let (ids, seen, slow) = client.unwrap();
        accepted.extend(ids);
        for (status, count) in seen {
            *statuses.entry(status).or_insert(0) += count;
        }
        slowest = slowest.max(slow);
    }
    let peak = pipeline.publisher.peak_rss_kib();
    println!(
        "frozen broker for 60 s under 16 clients of 4 MiB batches: publisher peak RSS {:.1} MiB \
         (limit {} MiB; {:.1} MiB while frozen), statuses {statuses:?}, slowest answer {slowest:.1?}, \
         {} messages accepted",
        peak as f64 / 1024.0,
        PUBLISHER_LIMIT_KIB / 1024,
        peak_frozen as f64 / 1024.0,
        accepted.len()
    );
    assert!(
        peak < PUBLISHER_LIMIT_KIB,
        "the publisher peaked at {peak} KiB, over its {PUBLISHER_LIMIT_KIB} KiB limit"
    );
    assert!(
        slowest < deadline,
        "an answer took {slowest:?}, past {deadline:?}"
    );
    assert!(
        !statuses.contains_key(&0),
        "a request went unanswered: {statuses:?}"
    );
    wait_stored(&pipeline, &accepted).await;
    // Requests answered 503 in doubt may be stored too; nothing is stored twice.
    let (rows, ids): (i64, i64) =
        sqlx::query_as("SELECT count(*), count(DISTINCT id) FROM messages")
            .fetch_one(&pipeline.db)
            .await
            .unwrap();
    assert_eq!(rows, ids, "a message stored twice");
}

/// Undecodable messages reaching the consumer during a memory alarm: the broker blocks the consumer's
/// dead-letter connection, so no copy can be confirmed until the alarm clears. Each is dead-lettered
/// once, by the broker (rejected, without the reason) or by a copy (with it), never both, and the
/// messages behind them are stored during the alarm rather than after a wait per poison message.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "raises the machine's broker memory alarm; run by scripts/fault-suite"]
async fn s15_poison_under_a_memory_alarm_is_dead_lettered_once_and_does_not_stall_its_queue() {
    use end_to_end::broker_users::broker_message_count;
    const POISON: usize = 5;
    const GOOD: usize = 20;

    // Arrange: poison, then good messages, waiting on the queue for a consumer.
    let machine = Machine;
    let mut pipeline = Pipeline::start().await;
    pipeline.consumer.kill();
    let queue = pipeline.queue().to_owned();
    let amqp = Connection::connect(&end_to_end::amqp_url(), ConnectionProperties::default())
        .await
        .unwrap();
    for n in 0..POISON {
        end_to_end::publish_raw_on(&amqp, &queue, format!("not JSON, number {n}").as_bytes()).await;
    }
    let mut good = Vec::new();
    for n in 0..GOOD {
        let message = common::QueuedMessage {
            id: uuid::Uuid::now_v7(),
            received_at: chrono::Utc::now(),
            message: serde_json::from_value(serde_json::json!({"sender": format!("behind {n}")}))
                .unwrap(),
            fingerprint: None,
        };
        end_to_end::publish_raw_on(&amqp, &queue, &message.to_payload()).await;
        good.push(message.id);
    }

    // Act: the alarm goes off, then the consumer starts and meets the poison.
    machine.set_memory_watermark("0.0000001");
    // The broker tells a connection it is blocked only once it publishes: ask the broker itself.
    end_to_end::eventually(Duration::from_secs(15), "the memory alarm", || async {
        let alarms = tokio::task::spawn_blocking(|| {
            std::process::Command::new("rabbitmq-diagnostics")
                .args(["-q", "alarms"])
                .output()
                .expect("rabbitmq-diagnostics")
        })
        .await
        .unwrap();
        String::from_utf8_lossy(&alarms.stdout)
            .to_lowercase()
            .contains("memory")
            .then_some(())
    })
    .await;
    let started = Instant::now();
    pipeline.consumer.restart();
    let stored_under_alarm = tokio::time::timeout(Duration::from_secs(20), async {
        while (pipeline.stored_ids().await.len()) < GOOD {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        started.elapsed()
    })
    .await
    .ok();
    machine.restore_memory_watermark();
    // A last poison message after the alarm: its copy follows any copy held back during the alarm on
    // the dead-letter channel, so once it is counted, every copy that will ever land has landed.
    end_to_end::publish_raw_on(&amqp, &queue, b"not JSON, after the alarm").await;

    // Assert
    let dead = format!("{queue}.dead");
    let depth = end_to_end::eventually(
        Duration::from_secs(30),
        "every poison message settled",
        || async {
            let dead_lettered = counter(
                &pipeline.http,
                &pipeline.consumer.url,
                "consumer_messages_dead_lettered_total",
            )
            .await;
            let queue = queue.clone();
            let left = tokio::task::spawn_blocking(move || broker_message_count(&queue))
                .await
                .unwrap();
            let depth = pipeline.queue_depths(std::slice::from_ref(&dead)).await[0];
            (dead_lettered >= (POISON + 1) as f64 && left == Some(0) && depth as usize > POISON)
                .then_some(depth)
        },
    )
    .await;
    println!(
        "memory alarm with {POISON} poison messages ahead of {GOOD}: the {GOOD} stored {stored_under_alarm:.1?} \
         after the consumer started under the alarm; {depth} dead letters for {} poison messages",
        POISON + 1
    );
    assert_eq!(
        depth as usize,
        POISON + 1,
        "each poison message dead-lettered once"
    );
    assert!(
        stored_under_alarm.is_some_and(|took| took < Duration::from_secs(10)),
        "the messages behind the poison were stored {stored_under_alarm:?} after the consumer started"
    );
}
