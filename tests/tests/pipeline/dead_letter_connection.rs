//! The consumer's dead-letter connection failing on its own, while the ingestion connection lives: its
//! confirms held back (what a blocked or slow broker looks like to that connection only), or the broker
//! closing it. The consumer's connections go through a proxy of this test's, which tells the dead-letter
//! connection from the other by the name it gives the broker, so nothing of the machine's broker or of
//! other tests is touched.

use std::{
    net::SocketAddr,
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc, Mutex,
    },
    time::Duration,
};

use consumer::DEAD_LETTER_CONNECTION as CONNECTION_NAME;
use end_to_end::{amqp_url, broker_users::broker_message_count, eventually, url_address};
use end_to_end::{StackConfig, TestStack};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::{TcpListener, TcpStream},
    sync::watch,
};

use crate::fixtures::message_from;

/// Forwards the consumer's broker connections, noting which is the dead-letter connection (by the
/// connection name in its `connection.start-ok`) and the local port the broker sees it from, and can
/// hold back what the broker sends on that connection only.
struct DeadLetterProxy {
    address: SocketAddr,
    /// The broker-side local port of each dead-letter connection, in the order they were opened.
    dead_letter_ports: Arc<Mutex<Vec<u16>>>,
    /// While true, what the broker sends on dead-letter connections waits (nothing is dropped).
    held: watch::Sender<bool>,
}

impl DeadLetterProxy {
    async fn start(upstream: SocketAddr) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind proxy");
        let proxy = Self {
            address: listener.local_addr().expect("proxy address"),
            dead_letter_ports: Arc::default(),
            held: watch::Sender::new(false),
        };
        let (ports, held) = (proxy.dead_letter_ports.clone(), proxy.held.subscribe());
        tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let Ok(server) = TcpStream::connect(upstream).await else {
                    continue;
                };
                let port = server.local_addr().expect("local address").port();
                let is_dead_letters = Arc::new(AtomicBool::new(false));
                let ((mut client_read, mut client_write), (mut server_read, mut server_write)) =
                    (client.into_split(), server.into_split());
                let (requests_of, ports) = (is_dead_letters.clone(), ports.clone());
                tokio::spawn(async move {
                    let mut buffer = vec![0; 64 * 1024];
                    let mut seen = Vec::new();
                    while let Ok(read) = client_read.read(&mut buffer).await {
                        if read == 0 {
                            break;
                        }
                        if !requests_of.load(Ordering::SeqCst) && seen.len() < 64 * 1024 {
                            seen.extend_from_slice(&buffer[..read]);
                            let name = CONNECTION_NAME.as_bytes();
                            if seen.windows(name.len()).any(|window| window == name) {
                                requests_of.store(true, Ordering::SeqCst);
                                ports.lock().expect("ports").push(port);
                            }
                        }
                        if server_write.write_all(&buffer[..read]).await.is_err() {
                            break;
                        }
                    }
                    let _ = server_write.shutdown().await;
                });
                let mut held = held.clone();
                tokio::spawn(async move {
                    let mut buffer = vec![0; 64 * 1024];
                    while let Ok(read) = server_read.read(&mut buffer).await {
                        if read == 0 {
                            break;
                        }
                        if is_dead_letters.load(Ordering::SeqCst)
                            && held.wait_for(|held| !*held).await.is_err()
                        {
                            break;
                        }
                        if client_write.write_all(&buffer[..read]).await.is_err() {
                            break;
                        }
                    }
                    let _ = client_write.shutdown().await;
                });
            }
        });
        proxy
    }

    /// The broker URL that leads through this proxy.
    fn url(&self) -> String {
        let url = amqp_url();
        let upstream = url_address(&url).to_string();
        url.replacen(&upstream, &self.address.to_string(), 1)
            .replacen("localhost:", &format!("{}:", self.address.ip()), 1)
    }

    fn dead_letter_ports(&self) -> Vec<u16> {
        self.dead_letter_ports.lock().expect("ports").clone()
    }
}

/// A stack whose consumer reaches the broker through `proxy` (the publisher and the test directly).
async fn stack_through(proxy: &DeadLetterProxy) -> TestStack {
    let mut config = StackConfig::unique();
    config.consumer.broker.amqp_url = proxy.url();
    TestStack::start_with(config).await
}

/// The broker's own process id of the connection it sees coming from local `port`, if there is one,
/// checked to be a dead-letter connection by the name it gave.
fn connection_from_port(port: u16) -> Option<String> {
    let output = std::process::Command::new("rabbitmqctl")
        .args([
            "list_connections",
            "-q",
            "--no-table-headers",
            "pid",
            "peer_port",
            "client_properties",
        ])
        .output()
        .expect("rabbitmqctl runs");
    String::from_utf8_lossy(&output.stdout)
        .lines()
        .find_map(|line| {
            let mut fields = line.splitn(3, '\t');
            let (pid, peer_port, properties) = (fields.next()?, fields.next()?, fields.next()?);
            (peer_port.trim() == port.to_string() && properties.contains(CONNECTION_NAME))
                .then(|| pid.to_owned())
        })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_letter_connection_the_broker_closed_is_replaced_and_poison_keeps_its_reason() {
    // Arrange
    let proxy = DeadLetterProxy::start(url_address(&amqp_url())).await;
    let stack = stack_through(&proxy).await;
    let first = *proxy
        .dead_letter_ports()
        .first()
        .expect("a dead-letter connection");
    let pid = eventually(Duration::from_secs(10), "the broker to list it", || async {
        tokio::task::spawn_blocking(move || connection_from_port(first))
            .await
            .expect("listing")
    })
    .await;

    // Act: the broker closes the dead-letter connection only; then a poison message arrives.
    let closed = std::process::Command::new("rabbitmqctl")
        .args(["close_connection", &pid, "closed by a test"])
        .output()
        .expect("rabbitmqctl runs");
    assert!(closed.status.success(), "{closed:?}");
    stack
        .publish_raw(b"not JSON, after the dead-letter connection was closed")
        .await;
    let after = stack.publish_ok(&message_from("after the close")).await;

    // Assert
    stack.wait_stored(after).await;
    eventually(Duration::from_secs(20), "the poison in .dead", || async {
        (stack.queue_depth(".dead").await >= 1).then_some(())
    })
    .await;
    let reasons = stack.drain_dead_letter_reasons().await;
    assert_eq!(reasons.len(), 1, "{reasons:?}");
    assert!(reasons[0].starts_with("undecodable: "), "{reasons:?}");
    assert!(
        proxy.dead_letter_ports().len() >= 2,
        "a new dead-letter connection was opened"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_late_dead_letter_confirm_neither_doubles_the_copy_nor_stalls_the_queue() {
    // Arrange
    let proxy = DeadLetterProxy::start(url_address(&amqp_url())).await;
    let stack = stack_through(&proxy).await;

    // Act: the broker's answers on the dead-letter connection come 7 s late, as under a broker that
    // blocks or is slow to confirm; everything it is sent still reaches it at once.
    proxy.held.send_replace(true);
    let held_at = tokio::time::Instant::now();
    stack
        .publish_raw(b"not JSON, copied while confirms are late")
        .await;
    let behind = stack.publish_ok(&message_from("behind the poison")).await;

    // Whether the message behind the poison is stored while the copy is unanswered.
    let stored_behind = async {
        while stack.rows_for(&[behind]).await.0 == 0 {
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        held_at.elapsed()
    };
    let stored_behind_after = tokio::time::timeout(Duration::from_secs(7), stored_behind)
        .await
        .ok();
    tokio::time::sleep_until(held_at + Duration::from_secs(7)).await; // how late the confirms are
    proxy.held.send_replace(false);
    // The original is settled once no message of it is left on its queue (ready, unacknowledged, or
    // kept for the broker's own dead-lettering) and the consumer counts it dead-lettered.
    eventually(Duration::from_secs(30), "the original settled", || async {
        let dead_lettered = stack
            .metric(
                stack.consumer_url(),
                "consumer_messages_dead_lettered_total",
            )
            .await;
        let left = tokio::task::spawn_blocking({
            let queue = stack.queue.clone();
            move || broker_message_count(&queue)
        })
        .await
        .expect("counting");
        (dead_lettered >= 1.0 && left == Some(0)).then_some(())
    })
    .await;
    let reasons = stack.drain_dead_letter_reasons().await;
    assert_eq!(
        reasons.len(),
        1,
        "one copy of the poison in .dead, not {reasons:?}"
    );
    assert!(reasons[0].starts_with("undecodable: "), "{reasons:?}");
    assert!(
        stored_behind_after.is_some_and(|after| after < Duration::from_secs(3)),
        "the message behind the poison was stored {stored_behind_after:?} after the confirms were held"
    );
}
