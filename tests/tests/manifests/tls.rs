//! TLS in production: every connection verifies its server, and the certificates the overlay issues are
//! accepted by the services' own code for every host they dial.

use crate::dial::{dial_in_namespace, private_loopback, production_dials, production_listeners};
use crate::render::{
    container_named, mounted_secret_key, named, of_kind, render, resolved_variable,
};

/// Under the production overlay every connection to the broker is `amqps://` on its TLS port, trusting
/// the `ca.crt` of the very Secret that holds the broker's certificate; and the consumer reaches
/// PostgreSQL with `sslmode=verify-full` against CloudNativePG's authority.
#[test]
#[ignore = "renders kube/ with kubectl; run by scripts/check-manifests"]
fn production_connections_use_tls_that_verifies_the_servers() {
    let objects = render("kube/overlays/production");
    let cluster = of_kind(&objects, "RabbitmqCluster")[0];
    let tls_secret = cluster["spec"]["tls"]["secretName"]
        .as_str()
        .expect("the broker has a TLS certificate");
    let certificate = of_kind(&objects, "Certificate")
        .into_iter()
        .find(|c| c["spec"]["secretName"] == tls_secret)
        .expect("cert-manager issues that Secret");
    assert!(certificate["spec"]["dnsNames"].is_array());

    let mut connections = 0;
    for (deployment, container) in [
        ("message-publisher", "publisher"),
        ("message-consumer", "consumer"),
        ("message-consumer", "declare-topology"),
    ] {
        let deployment = named(&objects, "Deployment", deployment).expect("the Deployment");
        let container = container_named(deployment, container);
        let url = resolved_variable(container, "AMQP_URL", |_, _| "x".to_owned())
            .expect("AMQP_URL is set");
        for node in common::amqp::node_urls(&url) {
            let uri: lapin::uri::AMQPUri = node.parse().expect("an AMQP URL");
            assert_eq!(uri.scheme, lapin::uri::AMQPScheme::AMQPS, "{node}");
            assert_eq!(uri.authority.port, 5671, "{node}");
            // Whether the certificate's names cover this host is proven by the services' own code:
            // production_tls_is_accepted_by_the_services_own_code_for_every_host_they_dial.
            connections += 1;
        }
        let ca_file = resolved_variable(container, "AMQP_CA_FILE", |_, _| String::new())
            .expect("AMQP_CA_FILE is set");
        assert_eq!(
            mounted_secret_key(deployment, container, &ca_file),
            (tls_secret.to_owned(), "ca.crt".to_owned())
        );
    }
    assert_eq!(connections, 9, "three containers, three nodes each");

    let consumer = named(&objects, "Deployment", "message-consumer").expect("the consumer");
    let container = container_named(consumer, "consumer");
    let url = resolved_variable(container, "DATABASE_URL", |_, _| {
        "postgresql://messages:x@postgresql-rw.NAMESPACE:5432/messages".to_owned()
    })
    .expect("DATABASE_URL is set");
    let options: sqlx::postgres::PgConnectOptions = url.parse().expect("a PostgreSQL URL");
    assert!(
        matches!(
            options.get_ssl_mode(),
            sqlx::postgres::PgSslMode::VerifyFull
        ),
        "{url}"
    );
    let root = url
        .split_once("sslrootcert=")
        .expect("a root certificate")
        .1
        .split('&')
        .next()
        .unwrap();
    let database = of_kind(&objects, "Cluster")[0]["metadata"]["name"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_eq!(
        mounted_secret_key(consumer, container, root),
        (format!("{database}-ca"), "ca.crt".to_owned()),
        "CloudNativePG's authority"
    );
}

/// The production overlay's TLS works the first time: a certificate issued for exactly the names of the
/// rendered broker Certificate is accepted, by the services' own code (`ServiceConfig::broker()` and
/// lapin over rustls, reading AMQP_CA_FILE as mounted), by every node of every AMQP_URL the publisher,
/// the consumer and the setup step are given, with the host names and ports as rendered; and the same
/// authority verifies the management API's name as the Messaging Topology Operator and KEDA dial it. The
/// consumer's `sslmode=verify-full` connection (its own pool) accepts a server certificate bearing the
/// names CloudNativePG gives its own. The broker certificate the overlay had (`rabbitmq` and
/// `*.rabbitmq-nodes`) is refused by the same code: rustls takes no wildcard before a single label.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "renders kube/ with kubectl; run by scripts/check-manifests"]
async fn production_tls_is_accepted_by_the_services_own_code_for_every_host_they_dial() {
    // Arrange
    let root =
        std::env::temp_dir().join(format!("manifests-tls-{}", uuid::Uuid::new_v4().simple()));
    std::fs::create_dir_all(&root).unwrap();
    let broker = end_to_end::tls::TestAuthority::new("message-queue-ca");
    let database = end_to_end::tls::TestAuthority::new("postgresql-ca");
    let dials = production_dials(&root, &broker.pem(), &database.pem());
    assert!(
        dials
            .broker_names
            .iter()
            .all(|name| !name.contains("NAMESPACE")),
        "the namespace is filled into {:?}",
        dials.broker_names
    );
    assert!(dials
        .broker_names
        .contains(&format!("rabbitmq.{}.svc", dials.namespace)));
    let address = private_loopback();

    // Act: the certificate of the rendered names.
    let listeners =
        production_listeners(&dials, address, &broker, &dials.broker_names, &database).await;
    let lines = dial_in_namespace(&root, &dials.plan, &dials.hosts, address);

    // Assert: three containers, three nodes each; the database; the management API twice.
    assert_eq!(lines.len(), 9 + 1 + 2, "{lines:#?}");
    for line in &lines {
        assert!(line.starts_with("ok "), "{line}\n(all: {lines:#?})");
    }
    let handshakes: usize = listeners.iter().map(|l| l.handshakes()).sum();
    assert!(
        handshakes >= lines.len(),
        "every dial went through a listener"
    );
    drop(listeners);

    // Act: the certificate the overlay had before, on another address (the listeners above close
    // their sockets only once their tasks have stopped).
    let address = private_loopback();
    let old_names = ["rabbitmq".to_owned(), "*.rabbitmq-nodes".to_owned()];
    let listeners = production_listeners(&dials, address, &broker, &old_names, &database).await;
    let lines = dial_in_namespace(&root, &dials.plan, &dials.hosts, address);
    drop(listeners);
    std::fs::remove_dir_all(&root).unwrap();

    // Assert: every broker dial is refused for the name, the database still verifies.
    for line in &lines {
        if line.contains("postgres") {
            assert!(line.starts_with("ok "), "{line}");
        } else {
            assert!(
                line.starts_with("error ") && line.contains("not valid for name"),
                "{line}"
            );
        }
    }
}
