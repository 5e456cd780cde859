//! TLS to the broker and the database: `amqps://` and `sslmode=verify-full` against listeners that present
//! certificates from an authority the test made, in front of the real RabbitMQ and PostgreSQL. Verified
//! peers carry the whole pipeline; a peer that does not verify is refused, and never spoken to in
//! plaintext.

use std::time::Duration;

use common::amqp::BrokerAddress;
use end_to_end::{
    amqp_url, eventually, server_url,
    tls::{TestAuthority, TlsListener, Upstream},
    url_address, StackConfig, TestStack,
};
use lapin::ConnectionProperties;
use serde_json::json;
use sqlx::{postgres::PgConnectOptions, ConnectOptions};

fn amqps_url(listener: &TlsListener, host: &str) -> String {
    format!(
        "amqps://guest:guest@{host}:{}/%2f",
        listener.address().port()
    )
}

fn verify_full_url(listener: &TlsListener, database: &str, ca_file: &std::path::Path) -> String {
    format!(
        "postgres://postgres@localhost:{}/{database}?sslmode=verify-full&sslrootcert={}",
        listener.address().port(),
        ca_file.display()
    )
}

#[tokio::test]
async fn both_services_verify_the_broker_and_the_database_and_carry_messages_over_tls() {
    let authority = TestAuthority::new("pipeline test authority");
    let ca_file = authority.write_pem(&std::env::temp_dir());
    let broker = TlsListener::start(
        authority.issue(&["localhost"]),
        Upstream::Amqp,
        url_address(&amqp_url()),
    )
    .await;
    let database = TlsListener::start(
        authority.issue(&["localhost"]),
        Upstream::Postgres,
        url_address(&server_url()),
    )
    .await;

    let mut config = StackConfig::unique().with_broker(&amqps_url(&broker, "localhost"));
    let ca_path = ca_file.display().to_string();
    config.publisher.broker.amqp_ca_file = Some(ca_path.clone());
    config.consumer.broker.amqp_ca_file = Some(ca_path);
    config.consumer.database.database_url = verify_full_url(&database, &config.database, &ca_file);
    let stack = TestStack::start_with(config).await;

    let id = stack
        .publish_ok(&json!({"sender": "over-tls", "messageAttributes": {"n": 1}}))
        .await;
    let stored = stack.wait_stored(id).await;
    assert_eq!(stored["sender"], "over-tls");
    assert_eq!(stack.rows_for(&[id]).await, (1, 1));
    assert!(
        broker.handshakes() >= 2,
        "the publisher and the consumer each verified the broker: {} TLS sessions",
        broker.handshakes()
    );
    assert!(
        database.handshakes() >= 1,
        "the consumer verified the database: {} TLS sessions",
        database.handshakes()
    );
    let _ = std::fs::remove_file(ca_file);
}

#[tokio::test]
async fn a_broker_whose_certificate_does_not_verify_is_refused_and_never_spoken_to_in_plaintext() {
    let trusted = TestAuthority::new("trusted authority");
    let stranger = TestAuthority::new("unknown authority");
    let upstream = url_address(&amqp_url());
    let connect = |url: String| {
        let broker = BrokerAddress::new(url)
            .trusting(&trusted.pem())
            .expect("a PEM certificate");
        async move { broker.connect(ConnectionProperties::default()).await }
    };

    let impostor =
        TlsListener::start(stranger.issue(&["localhost"]), Upstream::Amqp, upstream).await;
    let error = connect(amqps_url(&impostor, "localhost"))
        .await
        .expect_err("a certificate from an unknown authority is refused");
    assert!(
        error.to_string().contains("UnknownIssuer")
            && error.to_string().contains("does not verify against"),
        "the error says why: {error}"
    );
    assert_eq!(impostor.handshakes(), 0);

    let misnamed =
        TlsListener::start(trusted.issue(&["broker.example"]), Upstream::Amqp, upstream).await;
    let error = connect(amqps_url(&misnamed, "localhost"))
        .await
        .expect_err("a certificate for another name is refused");
    assert!(
        error
            .to_string()
            .contains("not valid for name \"localhost\""),
        "the error says why: {error}"
    );

    // The broker's plaintext listener: an `amqps://` URL that points at it fails the TLS handshake.
    let plaintext = format!("amqps://guest:guest@{upstream}/%2f");
    let error = connect(plaintext)
        .await
        .expect_err("amqps:// never falls back to plaintext");
    assert!(
        error.to_string().contains("corrupt message")
            && error
                .to_string()
                .contains("amqps:// needs the broker's TLS listener"),
        "a TLS error, not a connection: {error}"
    );

    // The same authority and name are accepted: the refusals above were about the certificate alone.
    let genuine = TlsListener::start(trusted.issue(&["localhost"]), Upstream::Amqp, upstream).await;
    let connection = connect(amqps_url(&genuine, "localhost"))
        .await
        .expect("the trusted broker is accepted");
    assert!(connection.status().connected());
    common::amqp::close(&connection, "done").await;
    assert_eq!(genuine.handshakes(), 1);
}

#[tokio::test]
async fn the_publisher_refuses_a_broker_it_cannot_verify_and_says_so() {
    let trusted = TestAuthority::new("trusted authority");
    let stranger = TestAuthority::new("unknown authority");
    let ca_file = trusted.write_pem(&std::env::temp_dir());
    let impostor = TlsListener::start(
        stranger.issue(&["localhost"]),
        Upstream::Amqp,
        url_address(&amqp_url()),
    )
    .await;
    let mut config = StackConfig::unique().with_broker(&amqps_url(&impostor, "localhost"));
    config.publisher.broker.amqp_ca_file = Some(ca_file.display().to_string());
    let publisher = end_to_end::spawn_publisher(&config.publisher);
    let http = reqwest::Client::new();

    let response = eventually(Duration::from_secs(30), "an answer", || async {
        http.post(format!("{}/message/publish", publisher.url))
            .json(&json!({"sender": "nobody"}))
            .send()
            .await
            .ok()
    })
    .await;
    assert_eq!(response.status(), 503);
    let problem: serde_json::Value = response.json().await.expect("a problem");
    assert_eq!(
        problem["type"], "urn:message-queue:problem:broker-unavailable",
        "{problem}"
    );
    let ready = http
        .get(format!("{}/readyz", publisher.url))
        .send()
        .await
        .expect("readyz");
    assert_eq!(ready.status(), 503);
    assert_eq!(impostor.handshakes(), 0);
    let _ = std::fs::remove_file(ca_file);
}

#[tokio::test]
async fn verify_full_refuses_a_database_it_cannot_verify_or_that_has_no_tls() {
    let trusted = TestAuthority::new("trusted authority");
    let stranger = TestAuthority::new("unknown authority");
    let ca_file = trusted.write_pem(&std::env::temp_dir());
    let upstream = url_address(&server_url());
    let connect = |url: String| async move {
        let options: PgConnectOptions = url.parse().expect("a PostgreSQL URL");
        options.connect().await
    };

    let impostor =
        TlsListener::start(stranger.issue(&["localhost"]), Upstream::Postgres, upstream).await;
    let error = connect(verify_full_url(&impostor, "postgres", &ca_file))
        .await
        .expect_err("a certificate from an unknown authority is refused");
    assert!(
        error.to_string().contains("UnknownIssuer"),
        "the error says why: {error}"
    );

    // A server that answers the SSLRequest with "no": verify-full does not go on in plaintext, while
    // `prefer` (what a URL without sslmode means) would.
    let no_tls = TlsListener::start(
        trusted.issue(&["localhost"]),
        Upstream::PostgresWithoutTls,
        upstream,
    )
    .await;
    let error = connect(verify_full_url(&no_tls, "postgres", &ca_file))
        .await
        .expect_err("verify-full never falls back to plaintext");
    assert!(
        error.to_string().contains("TLS"),
        "the error says why: {error}"
    );
    let prefer = format!(
        "postgres://postgres@localhost:{}/postgres?sslmode=prefer",
        no_tls.address().port()
    );
    connect(prefer)
        .await
        .expect("prefer goes on in plaintext, which is why production URLs say verify-full");

    let genuine =
        TlsListener::start(trusted.issue(&["localhost"]), Upstream::Postgres, upstream).await;
    let mut connection = connect(verify_full_url(&genuine, "postgres", &ca_file))
        .await
        .expect("the trusted database is accepted");
    let one: i32 = sqlx::query_scalar("SELECT 1")
        .fetch_one(&mut connection)
        .await
        .expect("a query over TLS");
    assert_eq!(one, 1);
    assert_eq!(genuine.handshakes(), 1);
    let _ = std::fs::remove_file(ca_file);
}
