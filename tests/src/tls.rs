//! TLS for tests: a certificate authority made by the test, and TLS listeners in front of the machine's
//! RabbitMQ and PostgreSQL that present a certificate it issued, so that the services' `amqps://` and
//! `sslmode=verify-full` paths are exercised end to end against the real servers behind them.

use std::{
    net::SocketAddr,
    path::{Path, PathBuf},
    sync::{
        atomic::{AtomicUsize, Ordering},
        Arc,
    },
};

use rcgen::{
    BasicConstraints, Certificate, CertificateParams, DnType, IsCa, KeyPair, KeyUsagePurpose,
};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::{TcpListener, TcpStream},
    task::JoinHandle,
};
use tokio_rustls::{
    rustls::{
        self,
        pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer},
    },
    TlsAcceptor,
};

/// A certificate authority of the test's own: its certificate is what a client is told to trust.
pub struct TestAuthority {
    certificate: Certificate,
    key: KeyPair,
}

/// A server certificate and its key, issued by a [`TestAuthority`].
pub struct ServerIdentity {
    certificate: CertificateDer<'static>,
    key: PrivateKeyDer<'static>,
}

impl TestAuthority {
    /// A fresh authority with a new key: nothing else trusts it.
    pub fn new(name: &str) -> Self {
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("CA parameters");
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.distinguished_name.push(DnType::CommonName, name);
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let key = KeyPair::generate().expect("CA key");
        let certificate = params.self_signed(&key).expect("self-signed CA");
        Self { certificate, key }
    }

    /// The authority's certificate, PEM-encoded, as `AMQP_CA_FILE` or `sslrootcert` take it.
    pub fn pem(&self) -> String {
        self.certificate.pem()
    }

    /// Writes the authority's certificate into `directory` and returns its path.
    pub fn write_pem(&self, directory: &Path) -> PathBuf {
        let path = directory.join(format!("ca-{}.pem", uuid::Uuid::new_v4().simple()));
        std::fs::write(&path, self.pem()).expect("write CA certificate");
        path
    }

    /// A server certificate for the DNS names `names`, signed by this authority.
    pub fn issue(&self, names: &[&str]) -> ServerIdentity {
        let names: Vec<String> = names.iter().map(|name| (*name).to_owned()).collect();
        let mut params = CertificateParams::new(names).expect("server parameters");
        params
            .distinguished_name
            .push(DnType::CommonName, "test server");
        let key = KeyPair::generate().expect("server key");
        let certificate = params
            .signed_by(&key, &self.certificate, &self.key)
            .expect("signed");
        ServerIdentity {
            certificate: certificate.der().clone(),
            key: PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der())),
        }
    }
}

/// What a [`TlsListener`] speaks before TLS starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Upstream {
    /// AMQP: TLS from the first byte, as on RabbitMQ's `amqps` port.
    Amqp,
    /// PostgreSQL: the client asks with an `SSLRequest`, the server answers `S`, then TLS starts.
    Postgres,
    /// PostgreSQL without TLS: the `SSLRequest` is answered `N` and the session goes on in plaintext,
    /// as a server with `ssl = off` does.
    PostgresWithoutTls,
}

/// A TLS listener on a free loopback port that terminates TLS with a [`ServerIdentity`] and forwards the
/// plaintext to `upstream`, as a server with TLS enabled would serve it.
pub struct TlsListener {
    address: SocketAddr,
    handshakes: Arc<AtomicUsize>,
    accept: JoinHandle<()>,
}

impl TlsListener {
    /// Starts listening; connections are served until the listener is dropped.
    pub async fn start(identity: ServerIdentity, protocol: Upstream, upstream: SocketAddr) -> Self {
        let any_port = SocketAddr::from(([127, 0, 0, 1], 0));
        Self::start_at(identity, protocol, upstream, any_port).await
    }

    /// Like [`TlsListener::start`], on `address` (a port a manifest names, on a loopback address of
    /// the test's own).
    pub async fn start_at(
        identity: ServerIdentity,
        protocol: Upstream,
        upstream: SocketAddr,
        address: SocketAddr,
    ) -> Self {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .expect("TLS versions")
            .with_no_client_auth()
            .with_single_cert(vec![identity.certificate], identity.key)
            .expect("server certificate");
        let acceptor = TlsAcceptor::from(Arc::new(config));
        let listener = TcpListener::bind(address).await.expect("bind");
        let address = listener.local_addr().expect("address");
        let handshakes = Arc::new(AtomicUsize::new(0));
        let counted = handshakes.clone();
        let accept = tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let (acceptor, counted) = (acceptor.clone(), counted.clone());
                tokio::spawn(async move {
                    let _ = serve(client, acceptor, protocol, upstream, counted).await;
                });
            }
        });
        Self {
            address,
            handshakes,
            accept,
        }
    }

    /// Where clients connect.
    pub fn address(&self) -> SocketAddr {
        self.address
    }

    /// TLS handshakes completed so far: clients that verified this listener's certificate.
    pub fn handshakes(&self) -> usize {
        self.handshakes.load(Ordering::SeqCst)
    }
}

impl Drop for TlsListener {
    fn drop(&mut self) {
        self.accept.abort();
    }
}

/// The length and code of PostgreSQL's `SSLRequest` message.
const SSL_REQUEST: [u8; 8] = [0, 0, 0, 8, 0x04, 0xd2, 0x16, 0x2f];

async fn serve(
    mut client: TcpStream,
    acceptor: TlsAcceptor,
    protocol: Upstream,
    upstream: SocketAddr,
    handshakes: Arc<AtomicUsize>,
) -> std::io::Result<()> {
    if protocol != Upstream::Amqp {
        let mut request = [0u8; 8];
        client.read_exact(&mut request).await?;
        if request != SSL_REQUEST {
            // A client that does not ask for TLS is refused, as `hostssl` lines refuse it.
            return Ok(());
        }
        if protocol == Upstream::PostgresWithoutTls {
            client.write_all(b"N").await?;
            let mut server = TcpStream::connect(upstream).await?;
            tokio::io::copy_bidirectional(&mut client, &mut server).await?;
            return Ok(());
        }
        client.write_all(b"S").await?;
    }
    let mut tls = acceptor.accept(client).await?;
    handshakes.fetch_add(1, Ordering::SeqCst);
    let mut server = TcpStream::connect(upstream).await?;
    tokio::io::copy_bidirectional(&mut tls, &mut server).await?;
    Ok(())
}
