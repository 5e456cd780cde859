//! The configuration page (docs/configuration.md) against the services' own configuration types: every
//! variable either service reads has a row, with its real default and the service that reads it, and
//! every row is a variable that is read. Nothing here keeps a list of variables by hand.

use std::fmt::Debug;

use common::settings::{pairs, Settings};
use consumer::config::Config as ConsumerConfig;
use publisher::config::Config as PublisherConfig;

/// The rows of the page's table, as (variable, default, service) columns.
fn rows() -> Vec<(String, String, String)> {
    let page = include_str!("../../../docs/configuration.md");
    page.lines()
        .filter(|line| line.starts_with("| `"))
        .map(|line| {
            let cells: Vec<&str> = line.split('|').map(str::trim).collect();
            (
                cells[1].trim_matches('`').to_owned(),
                cells[2].to_owned(),
                cells[3].to_owned(),
            )
        })
        .collect()
}

#[test]
fn the_configuration_page_documents_every_variable_with_its_default_and_its_reader() {
    let rows = rows();
    let row = |variable: &str| {
        rows.iter()
            .find(|(name, _, _)| name == variable)
            .unwrap_or_else(|| panic!("docs/configuration.md has no row for {variable}"))
    };
    let publisher = PublisherConfig::variables();
    let consumer = ConsumerConfig::variables();
    for variable in publisher.iter().chain(&consumer) {
        let (_, _, reader) = row(variable);
        // Both services read every token list; the page says which scope each guards, and where.
        if variable.contains("_TOKENS") {
            continue;
        }
        let expected = match (publisher.contains(variable), consumer.contains(variable)) {
            (true, true) => "both",
            (true, false) => "publisher",
            _ => "consumer",
        };
        assert_eq!(
            reader, expected,
            "docs/configuration.md: who reads {variable}"
        );
    }
    for (variable, _, _) in &rows {
        assert!(
            publisher.contains(variable) || consumer.contains(variable),
            "docs/configuration.md documents {variable}, which no service reads"
        );
    }
    let defaults = PublisherConfig::default()
        .environment()
        .into_iter()
        .chain(ConsumerConfig::default().environment());
    for (variable, default) in defaults {
        let (_, documented, _) = row(&variable);
        assert!(
            documented.contains(&format!("`{default}`")),
            "docs/configuration.md: the default of {variable} is {default}, not {documented}"
        );
    }
}

/// `config` read from `vars`, then read again from the variables it writes back.
fn round_trip<C: Settings + Debug>(vars: &[(&str, &str)]) -> (C, C) {
    let config = C::from_vars(pairs(vars)).expect("valid settings");
    let again = C::from_vars(config.environment()).expect("its own variables are valid");
    (config, again)
}

#[test]
fn each_configuration_read_back_from_its_environment_is_the_same() {
    let vars = [
        ("AMQP_URL", "amqp://u:p@broker:5673/v"),
        ("AMQP_CA_FILE", "/etc/ca.pem"),
        ("QUEUE_TYPE", "classic"),
        ("PUBLISH_CHANNELS", "7"),
        ("BATCH_SIZE", "7"),
        ("PREFETCH", "9"),
        ("PUBLIC_BASE_URL", "https://api.example.com/queue"),
    ];
    let (publisher, again) = round_trip::<PublisherConfig>(&vars);
    assert_eq!(format!("{again:?}"), format!("{publisher:?}"));
    assert_eq!(publisher.links.publish_channels, 7);
    let (consumer, again) = round_trip::<ConsumerConfig>(&vars);
    assert_eq!(format!("{again:?}"), format!("{consumer:?}"));
    assert_eq!(consumer.ingest.prefetch, 9);
}

#[test]
fn each_configuration_prints_without_passwords_or_tokens() {
    let vars = pairs(&[
        ("AMQP_URL", "amqp://app:amqp-secret@10.0.0.1:5672/%2f"),
        ("DATABASE_URL", "postgres://app:db-secret@db:5432/messages"),
        ("PUBLISH_TOKENS", "publish-token-secret-0001"),
        ("READ_TOKENS", "read-token-secret-000001"),
    ]);
    let shown = format!(
        "{:?} {:?}",
        PublisherConfig::from_vars(vars.clone()).unwrap(),
        ConsumerConfig::from_vars(vars).unwrap()
    );
    for secret in ["amqp-secret", "db-secret", "token-secret"] {
        assert!(!shown.contains(secret), "{secret} in {shown}");
    }
    for shown_redacted in ["app:***@10.0.0.1", "app:***@db", "publish: 1", "read: 1"] {
        assert!(
            shown.contains(shown_redacted),
            "{shown_redacted} not in {shown}"
        );
    }
}
