//! Dials what a rendered manifest makes a container dial, with the services' own code, and prints one
//! line a target: `ok` or the error. tests/tests/manifests_tls.rs runs it in a mount namespace of its
//! own whose /etc/hosts points the cluster's names at TLS listeners on loopback, so that the host names,
//! ports, certificates and trust files are exactly those of the manifests.
//!
//! Usage: `dial PLAN.json`, where the plan is a JSON array of targets:
//! - `{"amqp": {"service": "publisher"|"consumer", "env": {...}}}`: for each node of the env's
//!   `AMQP_URL`, the service's configuration is read from the env with that node alone, and
//!   `BrokerConfig::address()?.connect(..)` opens a connection (TLS, host name check, AMQP login).
//! - `{"postgres": {"env": {...}}}`: the consumer's configuration, and its pool (`DatabaseConfig::write_pool`) runs
//!   `SELECT 1` over the `DATABASE_URL` as given (`sslmode`, `sslrootcert`).
//! - `{"tls": {"host": "...", "port": N, "ca_file": "..."}}`: a TLS handshake that verifies the
//!   certificate and the host name against that authority alone (rustls and webpki), as a client of the
//!   management API over HTTPS does.

use common::settings::Settings as _;
use std::{collections::BTreeMap, sync::Arc, time::Duration};

use anyhow::Context;
use consumer::config::Config as ConsumerConfig;
use publisher::config::Config as PublisherConfig;
use serde::Deserialize;
use tokio_rustls::rustls::{
    self,
    pki_types::{pem::PemObject, ServerName},
    RootCertStore,
};

#[derive(Deserialize)]
#[serde(rename_all = "lowercase")]
enum Target {
    Amqp {
        service: String,
        env: BTreeMap<String, String>,
    },
    Postgres {
        env: BTreeMap<String, String>,
    },
    Tls {
        host: String,
        port: u16,
        ca_file: String,
    },
}

const ATTEMPT: Duration = Duration::from_secs(15);

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let plan = std::env::args().nth(1).context("usage: dial PLAN.json")?;
    let targets: Vec<Target> = serde_json::from_str(&std::fs::read_to_string(&plan)?)?;
    for target in targets {
        for (label, outcome) in dial(target).await {
            let line = match outcome {
                Ok(()) => format!("ok {label}"),
                Err(error) => format!("error {label}: {error:#}").replace('\n', " "),
            };
            println!("{line}");
        }
    }
    Ok(())
}

async fn dial(target: Target) -> Vec<(String, anyhow::Result<()>)> {
    match target {
        Target::Amqp { service, env } => {
            let urls = env.get("AMQP_URL").cloned().unwrap_or_default();
            let mut outcomes = Vec::new();
            for node in common::amqp::node_urls(&urls) {
                let mut vars = env.clone();
                vars.insert("AMQP_URL".to_owned(), node.to_owned());
                let host = node
                    .parse::<lapin::uri::AMQPUri>()
                    .map(|uri| format!("{}:{}", uri.authority.host, uri.authority.port))
                    .unwrap_or_else(|_| "?".to_owned());
                let outcome = timed(connect_broker(&service, vars)).await;
                outcomes.push((format!("amqp {service} {host}"), outcome));
            }
            outcomes
        }
        Target::Postgres { env } => vec![("postgres".to_owned(), timed(query(env)).await)],
        Target::Tls {
            host,
            port,
            ca_file,
        } => {
            let label = format!("tls {host}:{port}");
            vec![(label, timed(handshake(host, port, ca_file)).await)]
        }
    }
}

async fn timed(
    future: impl std::future::Future<Output = anyhow::Result<()>>,
) -> anyhow::Result<()> {
    tokio::time::timeout(ATTEMPT, future)
        .await
        .map_err(|_| anyhow::anyhow!("no answer within {ATTEMPT:?}"))?
}

async fn connect_broker(service: &str, vars: BTreeMap<String, String>) -> anyhow::Result<()> {
    let config = if service == "publisher" {
        PublisherConfig::from_vars(vars)?.broker
    } else {
        ConsumerConfig::from_vars(vars)?.broker
    };
    let connection = config
        .address()?
        .connect(lapin::ConnectionProperties::default())
        .await?;
    connection.close(200, "checked".into()).await?;
    Ok(())
}

async fn query(vars: BTreeMap<String, String>) -> anyhow::Result<()> {
    let config = ConsumerConfig::from_vars(vars)?;
    let pool = config.database.write_pool()?;
    sqlx::query("SELECT 1").execute(&pool).await?;
    pool.close().await;
    Ok(())
}

async fn handshake(host: String, port: u16, ca_file: String) -> anyhow::Result<()> {
    let pem = std::fs::read(&ca_file).with_context(|| format!("reading {ca_file}"))?;
    let mut roots = RootCertStore::empty();
    for certificate in rustls::pki_types::CertificateDer::pem_slice_iter(&pem) {
        roots.add(certificate?)?;
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots)
        .with_no_client_auth();
    let tcp = tokio::net::TcpStream::connect((host.as_str(), port)).await?;
    let name = ServerName::try_from(host)?;
    tokio_rustls::TlsConnector::from(Arc::new(config))
        .connect(name, tcp)
        .await?;
    Ok(())
}
