//! The broker's memory alarm, and clients that are slow or idle: the services refuse or wait, and keep
//! serving the others.

use std::time::{Duration, Instant};

use crate::harness::{readiness, Load, Machine, Pipeline};
use lapin::{Connection, ConnectionProperties};

use crate::shards::counter;
use crate::{summary, CLIENTS};

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
