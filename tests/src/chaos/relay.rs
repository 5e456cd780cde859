//! A TCP relay between a service's network namespace and a peer on the host's loopback (a broker node or
//! the database primary). The peers listen on 127.0.0.1 only, and the broker lets `guest` in from loopback
//! only, so the services reach them through these. The relay can be pointed at another upstream (a
//! database failover: what a Kubernetes Service in front of the primary does) and can add latency.

use std::{
    net::SocketAddr,
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc, Mutex,
    },
    time::Duration,
};

use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::{
        tcp::{OwnedReadHalf, OwnedWriteHalf},
        TcpListener, TcpStream,
    },
    task::AbortHandle,
};

pub struct Relay {
    upstream: Mutex<SocketAddr>,
    delay_ms: AtomicU64,
    pipes: Mutex<Vec<AbortHandle>>,
    accept: Mutex<Option<AbortHandle>>,
}

impl Relay {
    /// Listens on `listen` and forwards every connection to `upstream`.
    pub async fn start(listen: SocketAddr, upstream: SocketAddr) -> anyhow::Result<Arc<Self>> {
        let listener = TcpListener::bind(listen)
            .await
            .map_err(|e| anyhow::anyhow!("relay on {listen}: {e}"))?;
        let relay = Arc::new(Self {
            upstream: Mutex::new(upstream),
            delay_ms: AtomicU64::new(0),
            pipes: Mutex::default(),
            accept: Mutex::default(),
        });
        let accepting = relay.clone();
        let accept = tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let relay = accepting.clone();
                let upstream = *relay.upstream.lock().unwrap();
                let pipe = tokio::spawn(async move {
                    let connect = TcpStream::connect(upstream);
                    let Ok(Ok(server)) =
                        tokio::time::timeout(Duration::from_secs(5), connect).await
                    else {
                        return;
                    };
                    let _ = (client.set_nodelay(true), server.set_nodelay(true));
                    let ((client_read, client_write), (server_read, server_write)) =
                        (client.into_split(), server.into_split());
                    tokio::join!(
                        forward(client_read, server_write, &relay),
                        forward(server_read, client_write, &relay)
                    );
                });
                let mut pipes = accepting.pipes.lock().unwrap();
                pipes.retain(|pipe| !pipe.is_finished());
                pipes.push(pipe.abort_handle());
            }
        });
        *relay.accept.lock().unwrap() = Some(accept.abort_handle());
        Ok(relay)
    }

    /// Sends new connections to `upstream` and closes the open ones, which lead to the old one.
    pub fn switch(&self, upstream: SocketAddr) {
        let old = std::mem::replace(&mut *self.upstream.lock().unwrap(), upstream);
        if old != upstream {
            self.cut();
        }
    }

    /// Closes every open connection.
    fn cut(&self) {
        for pipe in self.pipes.lock().unwrap().drain(..) {
            pipe.abort();
        }
    }

    /// Holds every chunk this long before passing it on, both ways.
    pub fn set_delay(&self, delay: Duration) {
        self.delay_ms
            .store(delay.as_millis() as u64, Ordering::Relaxed);
    }

    pub fn stop(&self) {
        if let Some(accept) = self.accept.lock().unwrap().take() {
            accept.abort();
        }
        self.cut();
    }
}

async fn forward(mut from: OwnedReadHalf, mut to: OwnedWriteHalf, relay: &Relay) {
    let mut buffer = vec![0; 64 * 1024];
    while let Ok(read @ 1..) = from.read(&mut buffer).await {
        let delay = relay.delay_ms.load(Ordering::Relaxed);
        if delay > 0 {
            tokio::time::sleep(Duration::from_millis(delay)).await;
        }
        if to.write_all(&buffer[..read]).await.is_err() {
            break;
        }
    }
    let _ = to.shutdown().await;
}
