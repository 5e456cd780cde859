//! Opening a connection to RabbitMQ: the one way both services reach a node, over TCP or TLS.

use std::{
    fmt,
    sync::{
        atomic::{AtomicUsize, Ordering},
        Arc,
    },
    time::Duration,
};

use lapin::{
    options::QueueDeclareOptions,
    tcp::OwnedTLSConfig,
    types::FieldTable,
    uri::{AMQPScheme, AMQPUri},
    Channel, Connection, ConnectionProperties,
};

use super::BrokerError;
use rustls_pki_types::{pem::PemObject, CertificateDer};

/// Longest wait for the broker to answer a close (or a cancel); a dead peer never answers.
pub const CLOSE_TIMEOUT: Duration = Duration::from_secs(2);

/// The largest AMQP frame proposed to the broker unless `AMQP_URL` sets `?frame_max=`.
///
/// lapin keeps a send and a receive buffer of 32 frames per connection, allocated and filled in full, so
/// RabbitMQ's default of 128 KiB costs 8 MiB of resident memory per connection. 16 KiB frames keep that
/// to 1 MiB. A message larger than a frame is sent as several body frames, which the protocol allows.
pub const DEFAULT_FRAME_MAX: u32 = 16 * 1024;

/// The heartbeat proposed to the broker unless `AMQP_URL` sets `?heartbeat=`, in seconds. lapin gives a
/// connection up when nothing has come from the broker for two heartbeats, so a node that is frozen or
/// cut off without a reset is left after 20 s, not the two minutes of RabbitMQ's default of 60 s: until
/// then, what was handed to that connection is held in memory.
pub const DEFAULT_HEARTBEAT_SECS: u16 = 10;

/// The nodes named by `AMQP_URL`: one URL, or several separated by commas for the nodes of one cluster.
pub fn node_urls(amqp_url: &str) -> impl Iterator<Item = &str> {
    amqp_url
        .split(',')
        .map(str::trim)
        .filter(|url| !url.is_empty())
}

/// Where the next connection starts looking, so that connections spread over the nodes and a
/// reconnection tries the next node first.
static NEXT_NODE: AtomicUsize = AtomicUsize::new(0);

/// Longest wait for one node to accept a TCP connection before trying the next; a node whose host
/// drops packets would otherwise hold the attempt for the operating system's TCP timeout.
const NODE_PROBE_TIMEOUT: Duration = Duration::from_secs(2);

/// The broker as the services reach it: the nodes of `AMQP_URL`, and the certificates trusted for their
/// `amqps://` listeners besides the system's roots (`AMQP_CA_FILE`).
///
/// TLS is chosen by the URL alone. An `amqps://` node is reached over TLS with its certificate verified
/// against those roots and its host name; there is no setting that skips either, and a node whose
/// certificate does not verify is refused, never spoken to in plaintext.
#[derive(Clone)]
pub struct BrokerAddress {
    urls: String,
    trusted_pem: Option<Arc<str>>,
    frame_max: u32,
}

impl BrokerAddress {
    /// The nodes of `urls` (one URL, or several separated by commas), trusting the system's roots.
    pub fn new(urls: impl Into<String>) -> Self {
        Self {
            urls: urls.into(),
            trusted_pem: None,
            frame_max: DEFAULT_FRAME_MAX,
        }
    }

    /// Proposes frames of `frame_max` bytes instead of [`DEFAULT_FRAME_MAX`] to nodes whose URL sets no
    /// `?frame_max=`.
    pub fn with_frame_max(mut self, frame_max: u32) -> Self {
        self.frame_max = frame_max;
        self
    }

    /// Also trusts the certificates of `pem` (one or more PEM `CERTIFICATE` blocks), as a private
    /// certificate authority needs. Fails when `pem` holds no certificate that parses.
    pub fn trusting(mut self, pem: &str) -> anyhow::Result<Self> {
        let certificates = CertificateDer::pem_slice_iter(pem.as_bytes())
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| anyhow::anyhow!("not PEM certificates: {e}"))?;
        anyhow::ensure!(!certificates.is_empty(), "holds no PEM certificate");
        self.trusted_pem = Some(pem.into());
        Ok(self)
    }

    /// The nodes, as `AMQP_URL` names them.
    pub fn urls(&self) -> &str {
        &self.urls
    }

    /// Connects as `name` (the connection name the broker's management UI and `rabbitmqctl
    /// list_connections` show), to a node that answers, as [`BrokerAddress::connect`] does.
    pub async fn connect_as(&self, name: &str) -> Result<Connection, BrokerError> {
        self.connect(ConnectionProperties::default().with_connection_name(name.into()))
            .await
    }

    /// [`BrokerAddress::connect_as`], and a channel on the new connection.
    pub async fn channel_as(&self, name: &str) -> Result<(Connection, Channel), BrokerError> {
        let connection = self.connect_as(name).await?;
        let channel = connection.create_channel().await?;
        Ok((connection, channel))
    }

    /// Connects to a node that answers, trying each in turn, starting after the node the previous
    /// connection tried first. Fails with the last node's error when none answers.
    pub async fn connect(
        &self,
        properties: ConnectionProperties,
    ) -> Result<Connection, BrokerError> {
        let nodes: Vec<&str> = node_urls(&self.urls).collect();
        let first = NEXT_NODE.fetch_add(1, Ordering::Relaxed);
        let mut last_error = None;
        for offset in 0..nodes.len() {
            let url = nodes[(first + offset) % nodes.len()];
            match self.connect_node(url, properties.clone()).await {
                Ok(connection) => return Ok(connection),
                Err(error) => {
                    tracing::debug!(%error, node = %crate::redact::url(url), "broker node did not answer");
                    last_error = Some(error);
                }
            }
        }
        Err(last_error.unwrap_or(BrokerError::NoNode))
    }

    /// Connects to the node at `url`, after checking that its port accepts TCP connections at all.
    ///
    /// lapin 4.12 can go on to connect after it has reported an attempt as refused (seen while a broker
    /// is starting), leaving behind a connection that nobody holds. Probing the port first keeps the
    /// attempts that can fail that way from reaching lapin.
    /// The frame size is that of [`BrokerAddress::with_frame_max`] and the heartbeat
    /// [`DEFAULT_HEARTBEAT_SECS`] unless the URL sets its own.
    async fn connect_node(
        &self,
        url: &str,
        properties: ConnectionProperties,
    ) -> Result<Connection, BrokerError> {
        let mut uri: AMQPUri = url
            .parse()
            .map_err(|e: String| BrokerError::BadUrl(crate::redact::url(url), e))?;
        uri.query.frame_max.get_or_insert(self.frame_max);
        uri.query.heartbeat.get_or_insert(DEFAULT_HEARTBEAT_SECS);
        let address = (uri.authority.host.clone(), uri.authority.port);
        let probe = within(
            NODE_PROBE_TIMEOUT,
            "no TCP answer",
            tokio::net::TcpStream::connect(address),
        )
        .await?;
        drop(probe.map_err(BrokerError::Unreachable)?);
        let tls = OwnedTLSConfig {
            identity: None,
            cert_chain: self.trusted_pem.as_deref().map(str::to_owned),
        };
        let over_tls = uri.scheme == AMQPScheme::AMQPS;
        let handshake = Connection::connect_uri_with_config(
            uri,
            properties,
            tls,
            lapin::runtime::default_runtime()?,
        );
        // A TLS listener that never finishes its handshake would hold the attempt for ever.
        let connected = within(HANDSHAKE_TIMEOUT, "no AMQP handshake", handshake).await?;
        connected.map_err(|error| {
            if over_tls {
                explain_tls(error)
            } else {
                error.into()
            }
        })
    }
}

/// `future`'s output, or [`BrokerError::TimedOut`] saying `what` did not happen within `limit`.
async fn within<T>(
    limit: Duration,
    what: &'static str,
    future: impl std::future::Future<Output = T>,
) -> Result<T, BrokerError> {
    tokio::time::timeout(limit, future)
        .await
        .map_err(|_| BrokerError::TimedOut { what, limit })
}

/// `error` with what a TLS failure means for the person reading the log, its own words kept.
fn explain_tls(error: lapin::Error) -> BrokerError {
    let lapin::ErrorKind::IOError(io) = error.kind() else {
        return error.into();
    };
    let text = io.to_string();
    let hint = if text.contains("corrupt message") {
        "the node did not answer in TLS: amqps:// needs the broker's TLS listener (usually port 5671)"
    } else if text.contains("invalid peer certificate") {
        "the node's certificate does not verify against the system's roots and AMQP_CA_FILE, or does \
         not name the host dialled"
    } else {
        return error.into();
    };
    BrokerError::Tls {
        source: error,
        hint,
    }
}

impl fmt::Debug for BrokerAddress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BrokerAddress")
            .field("urls", &crate::redact::url(&self.urls))
            .field("private_ca", &self.trusted_pem.is_some())
            .finish()
    }
}

/// Longest wait for a node that accepted TCP to finish the TLS and AMQP handshakes.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(15);

/// Looks at `queue` without declaring it (a passive declaration, which needs no permission): its
/// message and consumer counts. A missing queue is the broker's `NOT_FOUND`, which closes `channel`.
pub async fn look_at(channel: &Channel, queue: &str) -> lapin::Result<lapin::Queue> {
    let passive = QueueDeclareOptions {
        passive: true,
        ..QueueDeclareOptions::default()
    };
    channel
        .queue_declare(queue.into(), passive, FieldTable::default())
        .await
}

/// Whether `queue` exists, asked on a channel of its own so that the answer "no" closes nothing else.
pub async fn queue_exists(connection: &Connection, queue: &str) -> lapin::Result<bool> {
    let channel = connection.create_channel().await?;
    match look_at(&channel, queue).await {
        Ok(_) => {
            let _ = channel.close(200, "looked".into()).await;
            Ok(true)
        }
        Err(error) if super::topology::is_not_found(&error) => Ok(false),
        Err(error) => Err(error),
    }
}

/// Closes `connection` cleanly, waiting at most [`CLOSE_TIMEOUT`] for the broker; a connection that is
/// already gone is left as it is.
pub async fn close(connection: &Connection, reason: &str) {
    let _ = tokio::time::timeout(CLOSE_TIMEOUT, connection.close(200, reason.into())).await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn several_urls_separated_by_commas_name_several_nodes() {
        let nodes: Vec<&str> =
            node_urls("amqp://a:1/%2f, amqp://b:2/%2f,,amqp://c:3/%2f ").collect();
        assert_eq!(
            nodes,
            ["amqp://a:1/%2f", "amqp://b:2/%2f", "amqp://c:3/%2f"]
        );
        assert_eq!(node_urls("amqp://only/%2f").count(), 1);
    }

    #[test]
    fn a_logged_url_hides_its_password() {
        assert_eq!(
            crate::redact::url("amqp://user:secret@host:5672/%2f"),
            "amqp://user:***@host:5672/%2f"
        );
    }
}
