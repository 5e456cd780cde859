//! HTTP/1.1 as bytes on a socket, for requests no well-behaved client would send: paths spelled as
//! written (never normalised), invented methods, floods of headers. One connection per request.

use std::time::Duration;

use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpStream,
};

/// What came back: the status (0 when the connection closed without an answer) and the whole answer.
#[derive(Debug)]
pub struct Answer {
    pub status: u16,
    pub text: String,
}

impl Answer {
    /// The value of header `name` (case-insensitive), if the answer has it.
    pub fn header(&self, name: &str) -> Option<&str> {
        let head = self.text.split("\r\n\r\n").next()?;
        head.lines().skip(1).find_map(|line| {
            let (key, value) = line.split_once(':')?;
            key.trim()
                .eq_ignore_ascii_case(name)
                .then_some(value.trim())
        })
    }
}

/// `host:port` of a base URL such as `http://127.0.0.1:8080`.
pub fn address(base_url: &str) -> String {
    base_url.trim_start_matches("http://").to_owned()
}

/// Sends `request` as it is on a new connection to `address` and reads the answer until the server
/// closes (`Connection: close` is the caller's to send) or 10 s pass.
pub async fn exchange(address: &str, request: &[u8]) -> Answer {
    let mut stream = TcpStream::connect(address)
        .await
        .expect("service reachable");
    // A server that refuses early may close before the whole request is written.
    let _ = stream.write_all(request).await;
    let mut answer = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut answer)).await;
    let text = String::from_utf8_lossy(&answer).into_owned();
    let status = text
        .strip_prefix("HTTP/1.1 ")
        .and_then(|rest| rest.get(..3))
        .and_then(|code| code.parse().ok())
        .unwrap_or(0);
    Answer { status, text }
}

/// A request with `method`, `target` (path and query, sent as written), the given extra header lines,
/// a JSON body, and `Connection: close`.
pub fn request(method: &str, target: &str, headers: &[String], body: &str) -> Vec<u8> {
    let mut head = format!("{method} {target} HTTP/1.1\r\nHost: attack\r\nConnection: close\r\n");
    for header in headers {
        head.push_str(header);
        head.push_str("\r\n");
    }
    head.push_str(&format!(
        "Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    ));
    head.into_bytes()
}
