//! A TCP proxy that a test can cut and restore, to take a peer away from one service without stopping
//! the machine's broker or database for every other test.

use std::{net::SocketAddr, sync::Arc};

use tokio::{
    net::{TcpListener, TcpStream},
    sync::Mutex,
    task::JoinHandle,
};

/// Forwards connections from a local port to `upstream` while open.
pub struct CuttableProxy {
    address: SocketAddr,
    upstream: SocketAddr,
    tasks: Arc<Mutex<Vec<JoinHandle<()>>>>,
}

impl CuttableProxy {
    /// Listens on a free loopback port and forwards to `upstream`.
    pub async fn start(upstream: SocketAddr) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind proxy");
        let proxy = Self {
            address: listener.local_addr().expect("proxy address"),
            upstream,
            tasks: Arc::default(),
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
        let accept = tokio::spawn(async move {
            while let Ok((mut client, _)) = listener.accept().await {
                let Ok(mut server) = TcpStream::connect(upstream).await else {
                    continue;
                };
                let pipe = tokio::spawn(async move {
                    let _ = tokio::io::copy_bidirectional(&mut client, &mut server).await;
                });
                tasks.lock().await.push(pipe);
            }
        });
        self.tasks.lock().await.push(accept);
    }
}
