//! The broker layer's own error: what went wrong reaching a node, kept apart from what the broker said.

use std::time::Duration;

/// Why a connection to the broker could not be made or used.
#[derive(Debug, thiserror::Error)]
pub enum BrokerError {
    /// `AMQP_URL` holds no node URL at all.
    #[error("AMQP_URL names no broker")]
    NoNode,
    /// One node URL does not parse (shown with its password redacted).
    #[error("{0:?} is not an AMQP URL: {1}")]
    BadUrl(String, String),
    /// The node's port did not accept a TCP connection.
    #[error("no TCP connection: {0}")]
    Unreachable(#[source] std::io::Error),
    /// The node did not answer in time: a frozen or cut-off host, or a listener that never handshakes.
    #[error("{what} within {limit:?}")]
    TimedOut { what: &'static str, limit: Duration },
    /// The TLS handshake failed in a way a person must fix (wrong port, certificate, host name).
    #[error("{source} ({hint})")]
    Tls {
        source: lapin::Error,
        hint: &'static str,
    },
    /// What lapin or the broker reported.
    #[error(transparent)]
    Amqp(#[from] lapin::Error),
}

impl BrokerError {
    /// Whether the broker was out of reach, so that another try may succeed; a refusal (credentials, a
    /// certificate that does not verify, a bad URL) will not go away by trying again.
    pub fn is_unreachable(&self) -> bool {
        match self {
            Self::Unreachable(_) | Self::TimedOut { .. } => true,
            Self::Amqp(error) => matches!(error.kind(), lapin::ErrorKind::IOError(_)),
            Self::NoNode | Self::BadUrl(..) | Self::Tls { .. } => false,
        }
    }
}
