//! A client that asks for a page and never reads it: the consumer closes the connection once the response
//! has waited unread for `HTTP_WRITE_TIMEOUT_SECS`, so such clients cannot hold its memory or its
//! connections for longer, and it goes on serving everyone else meanwhile.

use std::time::{Duration, Instant};

use end_to_end::{eventually, StackConfig, TestStack};
use serde_json::{json, Value};
use tokio::{io::AsyncWriteExt, net::TcpSocket};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_never_reads_its_page_is_disconnected_after_the_write_timeout() {
    let mut config = StackConfig::unique();
    config.consumer.http.http_write_timeout_secs = 2;
    let stack = TestStack::start_with(config).await;
    // 100 messages of 4 KiB attributes: a page of about 400 KiB, far beyond the client's receive buffer.
    let batch: Vec<Value> = (0..100)
        .map(|n| json!({"sender": "slow", "messageAttributes": {"n": n, "pad": "x".repeat(4096)}}))
        .collect();
    let ids = stack.publish_batch_ok(&batch).await;
    eventually(Duration::from_secs(30), "the page stored", || async {
        (stack.rows_for(&ids).await == (100, 100)).then_some(())
    })
    .await;

    let address = end_to_end::url_address(stack.consumer_url());
    let socket = TcpSocket::new_v4().expect("socket");
    socket
        .set_recv_buffer_size(4096)
        .expect("a small receive buffer");
    let mut client = socket.connect(address).await.expect("connected");
    client
        .write_all(b"GET /message?limit=100 HTTP/1.1\r\nHost: test\r\n\r\n")
        .await
        .expect("request sent");
    let asked = Instant::now();

    // Never read. The server's kernel drops the connection once the response has waited behind the
    // closed receive window for the timeout, without telling the client (a timed-out connection sends no
    // reset); a byte sent after that is answered with a reset. (Reading, or peeking, would still see the
    // bytes already received, so the client probes by sending.)
    let closed_after = eventually(
        Duration::from_secs(20),
        "the connection dropped",
        || async {
            if let Err(error) = client.try_write(b"\r\n") {
                if error.kind() != std::io::ErrorKind::WouldBlock {
                    return Some(asked.elapsed());
                }
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
            match client.take_error() {
                Ok(Some(_)) | Err(_) => Some(asked.elapsed()),
                Ok(None) => None,
            }
        },
    )
    .await;
    assert!(
        closed_after >= Duration::from_secs(2),
        "not before the timeout: {closed_after:?}"
    );
    eprintln!("a client that never read was disconnected after {closed_after:?}");

    let response = stack.get("/message?limit=1").await;
    assert_eq!(response.status(), 200, "the consumer serves everyone else");
}
