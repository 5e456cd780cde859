//! A TCP proxy that a test can cut and restore, to take a peer away from one service without stopping
//! the machine's broker or database for every other test.

use std::{net::SocketAddr, sync::Arc};

use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::{
        tcp::{OwnedReadHalf, OwnedWriteHalf},
        TcpListener, TcpStream,
    },
    sync::{watch, Mutex},
    task::JoinHandle,
};

/// Forwards connections from a local port to `upstream` while open.
pub struct CuttableProxy {
    address: SocketAddr,
    upstream: SocketAddr,
    tasks: Arc<Mutex<Vec<JoinHandle<()>>>>,
    /// While true, what the upstream sends is held back (not dropped) until it turns false.
    replies_held: watch::Sender<bool>,
}

impl CuttableProxy {
    /// Listens on a free loopback port and forwards to `upstream`.
    pub async fn start(upstream: SocketAddr) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind proxy");
        let proxy = Self {
            address: listener.local_addr().expect("proxy address"),
            upstream,
            tasks: Arc::default(),
            replies_held: watch::Sender::new(false),
        };
        proxy.serve(listener).await;
        proxy
    }

    /// Where clients should connect.
    pub fn address(&self) -> SocketAddr {
        self.address
    }

    /// Drops every proxied connection and refuses new ones, as if the peer had gone away.
    pub async fn cut(&self) {
        for task in self.tasks.lock().await.drain(..) {
            task.abort();
        }
    }

    /// Holds back everything the upstream sends on every connection, as a stalled peer or a congested
    /// link would: requests still go through, answers wait.
    pub fn hold_replies(&self) {
        self.replies_held.send_replace(true);
    }

    /// Lets held and later answers through again.
    pub fn release_replies(&self) {
        self.replies_held.send_replace(false);
    }

    /// Accepts connections again on the same port.
    pub async fn restore(&self) {
        // An aborted accept task lets go of its listener when the runtime next drops it: retry briefly.
        let give_up = tokio::time::Instant::now() + std::time::Duration::from_secs(5);
        let listener = loop {
            match TcpListener::bind(self.address).await {
                Ok(listener) => break listener,
                Err(error) if tokio::time::Instant::now() < give_up => {
                    let _ = error;
                    tokio::time::sleep(std::time::Duration::from_millis(10)).await;
                }
                Err(error) => panic!("rebind proxy: {error}"),
            }
        };
        self.serve(listener).await;
    }

    async fn serve(&self, listener: TcpListener) {
        let (upstream, tasks) = (self.upstream, self.tasks.clone());
        let held = self.replies_held.subscribe();
        let accept = tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let Ok(server) = TcpStream::connect(upstream).await else {
                    continue;
                };
                let ((client_read, client_write), (server_read, server_write)) =
                    (client.into_split(), server.into_split());
                let (never_held, _) = watch::channel(false);
                let requests = forward(client_read, server_write, never_held.subscribe());
                let replies = forward(server_read, client_write, held.clone());
                let pipe = tokio::spawn(async move {
                    let _keep = never_held;
                    tokio::join!(requests, replies);
                });
                tasks.lock().await.push(pipe);
            }
        });
        self.tasks.lock().await.push(accept);
    }
}

/// Copies `from` to `to`, waiting before each write while `held` is true.
async fn forward(mut from: OwnedReadHalf, mut to: OwnedWriteHalf, mut held: watch::Receiver<bool>) {
    let mut buffer = vec![0; 64 * 1024];
    loop {
        let read = match from.read(&mut buffer).await {
            Ok(0) | Err(_) => break,
            Ok(read) => read,
        };
        if held.wait_for(|held| !*held).await.is_err()
            || to.write_all(&buffer[..read]).await.is_err()
        {
            break;
        }
    }
    let _ = to.shutdown().await;
}
