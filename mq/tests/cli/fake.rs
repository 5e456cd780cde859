//! A stand-in for a service that misbehaves in one chosen way (answers what it is told to, or never
//! answers), listening on port 0 and keeping every request head it was sent.

use std::{
    net::SocketAddr,
    sync::{Arc, Mutex},
};

use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::{TcpListener, TcpStream},
};

/// What the fake does with a request.
pub enum Reply {
    /// Sends this whole HTTP response and closes the connection.
    Raw(String),
    /// Reads the request and never answers, holding the connection open.
    Silence,
}

/// A response with `Content-Length` and `Connection: close` added.
pub fn response(status: &str, headers: &[(&str, &str)], body: &str) -> Reply {
    let mut text = format!("HTTP/1.1 {status}\r\n");
    for (name, value) in headers {
        text.push_str(&format!("{name}: {value}\r\n"));
    }
    text.push_str(&format!(
        "Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    ));
    Reply::Raw(text)
}

type Handler = dyn Fn(&str) -> Reply + Send + Sync;

pub struct FakeService {
    address: SocketAddr,
    heads: Arc<Mutex<Vec<String>>>,
}

impl FakeService {
    /// Starts answering each request by `reply(request head)`.
    pub async fn start(reply: impl Fn(&str) -> Reply + Send + Sync + 'static) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let address = listener.local_addr().expect("an address");
        let heads = Arc::new(Mutex::new(Vec::new()));
        let reply: Arc<Handler> = Arc::new(reply);
        let kept = heads.clone();
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                tokio::spawn(serve(stream, reply.clone(), kept.clone()));
            }
        });
        Self { address, heads }
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.address)
    }

    /// Every request head received so far, lowercased.
    pub fn heads(&self) -> Vec<String> {
        self.heads.lock().expect("heads lock").clone()
    }
}

async fn serve(mut stream: TcpStream, reply: Arc<Handler>, heads: Arc<Mutex<Vec<String>>>) {
    let mut buffer = Vec::new();
    let mut chunk = [0u8; 8192];
    let head_end = loop {
        if let Some(at) = buffer.windows(4).position(|w| w == b"\r\n\r\n") {
            break at + 4;
        }
        match stream.read(&mut chunk).await {
            Ok(0) | Err(_) => return,
            Ok(n) => buffer.extend_from_slice(&chunk[..n]),
        }
    };
    let head = String::from_utf8_lossy(&buffer[..head_end]).to_lowercase();
    let length: usize = head
        .lines()
        .find_map(|line| line.strip_prefix("content-length:"))
        .and_then(|value| value.trim().parse().ok())
        .unwrap_or(0);
    while buffer.len() < head_end + length {
        match stream.read(&mut chunk).await {
            Ok(0) | Err(_) => return,
            Ok(n) => buffer.extend_from_slice(&chunk[..n]),
        }
    }
    heads.lock().expect("heads lock").push(head.clone());
    match reply(&head) {
        Reply::Raw(text) => {
            let _ = stream.write_all(text.as_bytes()).await;
            let _ = stream.shutdown().await;
        }
        Reply::Silence => {
            let _ = stream.read(&mut chunk).await;
            std::future::pending::<()>().await;
        }
    }
}
