//! A lean HTTP/1.1 load client: one keep-alive TCP connection per client, the same request bytes written
//! again and again, and only the status line and `Content-Length` of each answer parsed.
//!
//! The load generator shares the machine's cores with the services it measures, so every cycle it spends
//! is taken from them. A general-purpose client (connection pools, header maps, redirects) costs several
//! times what `wrk` does per request; this one costs about the same, and the benchmark reports its share.

use std::time::{Duration, Instant};

use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpStream,
};

/// A complete `POST` request, serialised once and sent by every client.
#[derive(Clone)]
pub struct Request(std::sync::Arc<Vec<u8>>);

impl Request {
    pub fn get(host: &str, path: &str) -> Self {
        let bytes = format!("GET {path} HTTP/1.1\r\nHost: {host}\r\n\r\n").into_bytes();
        Self(std::sync::Arc::new(bytes))
    }

    pub fn post_json(host: &str, path: &str, body: &[u8]) -> Self {
        let mut bytes = format!(
            "POST {path} HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\n\
             Content-Length: {}\r\n\r\n",
            body.len()
        )
        .into_bytes();
        bytes.extend_from_slice(body);
        Self(std::sync::Arc::new(bytes))
    }
}

/// One keep-alive connection sending a request and reading its answer, in turn.
pub struct Client {
    address: String,
    stream: Option<TcpStream>,
    buffer: Vec<u8>,
}

impl Client {
    pub fn new(address: &str) -> Self {
        Self {
            address: address.to_owned(),
            stream: None,
            buffer: Vec::with_capacity(4096),
        }
    }

    /// Sends `request` and returns the answer's status code, reconnecting first if the server closed the
    /// connection. An I/O error drops the connection and is returned.
    pub async fn send(&mut self, request: &Request) -> std::io::Result<u16> {
        self.fetch(request).await.map(|(status, _)| status)
    }

    /// Like [`Client::send`], also returning the body of the answer.
    pub async fn fetch(&mut self, request: &Request) -> std::io::Result<(u16, &[u8])> {
        if self.stream.is_none() {
            let stream = TcpStream::connect(&self.address).await?;
            stream.set_nodelay(true)?;
            self.stream = Some(stream);
        }
        let outcome = self.exchange(request).await;
        if !matches!(outcome, Ok((_, true, _))) {
            self.stream = None;
        }
        outcome.map(|(status, _, body)| (status, &self.buffer[body]))
    }

    /// Returns the status, whether the connection may be reused, and where the body is in the buffer.
    async fn exchange(
        &mut self,
        request: &Request,
    ) -> std::io::Result<(u16, bool, std::ops::Range<usize>)> {
        let stream = self.stream.as_mut().expect("connected");
        stream.write_all(&request.0).await?;
        self.buffer.clear();
        loop {
            if let Some(head_end) = find(&self.buffer, b"\r\n\r\n") {
                let head = parse_head(&self.buffer[..head_end])?;
                let body_end = head_end + 4 + head.content_length;
                while self.buffer.len() < body_end {
                    read_more(stream, &mut self.buffer).await?;
                }
                return Ok((head.status, head.keep_alive, head_end + 4..body_end));
            }
            read_more(stream, &mut self.buffer).await?;
        }
    }
}

async fn read_more(stream: &mut TcpStream, buffer: &mut Vec<u8>) -> std::io::Result<()> {
    if buffer.capacity() - buffer.len() < 1024 {
        buffer.reserve(4096);
    }
    if stream.read_buf(buffer).await? == 0 {
        return Err(std::io::ErrorKind::UnexpectedEof.into());
    }
    Ok(())
}

struct Head {
    status: u16,
    content_length: usize,
    keep_alive: bool,
}

fn parse_head(head: &[u8]) -> std::io::Result<Head> {
    let invalid = || std::io::Error::new(std::io::ErrorKind::InvalidData, "malformed HTTP answer");
    let text = std::str::from_utf8(head).map_err(|_| invalid())?;
    let mut lines = text.split("\r\n");
    let status = lines
        .next()
        .and_then(|line| line.split(' ').nth(1))
        .and_then(|code| code.parse().ok())
        .ok_or_else(invalid)?;
    let mut parsed = Head {
        status,
        content_length: 0,
        keep_alive: true,
    };
    for line in lines {
        let Some((name, value)) = line.split_once(':') else {
            continue;
        };
        if name.eq_ignore_ascii_case("content-length") {
            parsed.content_length = value.trim().parse().map_err(|_| invalid())?;
        } else if name.eq_ignore_ascii_case("connection") && value.trim() == "close" {
            parsed.keep_alive = false;
        }
    }
    Ok(parsed)
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

/// Latencies of the requests answered with `expected`, collected by one client for `duration`, sending at
/// most one request every `interval` when paced.
pub async fn run_client(
    address: String,
    request: Request,
    expected: u16,
    started: Instant,
    duration: Duration,
    interval: Option<Duration>,
) -> Vec<Duration> {
    let mut client = Client::new(&address);
    let mut latencies = Vec::new();
    let mut ticks = interval.map(tokio::time::interval);
    while started.elapsed() < duration {
        if let Some(ticks) = ticks.as_mut() {
            ticks.tick().await;
        }
        let sent = Instant::now();
        match client.send(&request).await {
            Ok(status) if status == expected => latencies.push(sent.elapsed()),
            Ok(_) => {}
            // A refused or reset connection: back off briefly rather than spin.
            Err(_) => tokio::time::sleep(Duration::from_millis(10)).await,
        }
    }
    latencies
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_status_and_length_of_an_answer() {
        let head =
            parse_head(b"HTTP/1.1 202 Accepted\r\ncontent-length: 57\r\ncontent-type: x").unwrap();
        assert_eq!(
            (head.status, head.content_length, head.keep_alive),
            (202, 57, true)
        );
        let head = parse_head(b"HTTP/1.1 503 Service Unavailable\r\nConnection: close").unwrap();
        assert_eq!(
            (head.status, head.content_length, head.keep_alive),
            (503, 0, false)
        );
        assert!(parse_head(b"garbage").is_err());
    }
}
