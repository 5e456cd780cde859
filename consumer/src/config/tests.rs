//! The consumer's configuration as users meet it: defaults, refusals naming the variable, the round
//! trip through variables, redaction, and the configuration page that documents it.

use common::{
    settings::{pairs, Settings},
    web::Scope,
};

use super::*;

#[test]
fn an_empty_environment_gives_the_contract_defaults() {
    let config = Config::from_vars([]).unwrap();
    assert_eq!(config.http.http_port, 8081);
    assert_eq!(
        config.database.database_url,
        "postgres://postgres@127.0.0.1:5432/messages"
    );
    assert_eq!(config.broker.queue_name, "messages");
    assert_eq!(format!("{config:?}"), format!("{:?}", Config::default()));
}

#[test]
fn a_value_that_does_not_parse_is_reported_with_its_variable() {
    let err = Config::from_vars(pairs(&[("DELIVERY_LIMIT", "many")])).unwrap_err();
    assert!(err.to_string().contains("DELIVERY_LIMIT"), "{err}");
    let err = Config::from_vars(pairs(&[("BATCH_SIZE", "10"), ("PREFETCH", "5")])).unwrap_err();
    assert!(
        err.to_string()
            .contains("PREFETCH must be at least BATCH_SIZE"),
        "{err}"
    );
    let err = Config::from_vars(pairs(&[("QUEUE_SHARDS", "257")])).unwrap_err();
    assert!(err.to_string().contains("QUEUE_SHARDS"), "{err}");
}

#[test]
fn required_tokens_stop_the_consumer_naming_the_scope_it_lacks() {
    const READ: &str = "read-token-secret-000001";
    const ADMIN: &str = "admin-token-secret-00001";
    let required = ("REQUIRE_TOKENS", "true");
    let check = |vars: &[(&str, &str)]| {
        Config::from_vars(pairs(vars))
            .unwrap()
            .http
            .require_tokens_for(&[Scope::Read, Scope::Admin])
    };
    let err = check(&[required, ("READ_TOKENS", READ)]).unwrap_err();
    assert!(err.to_string().contains("ADMIN_TOKENS"), "{err}");
    let err = check(&[required, ("ADMIN_TOKENS", ADMIN)]).unwrap_err();
    assert!(err.to_string().contains("READ_TOKENS"), "{err}");
    // The consumer does not need the publisher's scope.
    assert!(check(&[required, ("READ_TOKENS", READ), ("ADMIN_TOKENS", ADMIN)]).is_ok());
    assert!(check(&[]).is_ok());
}

#[test]
fn the_prefetch_is_lowered_until_that_many_of_the_largest_payloads_fit() {
    let ingest = IngestConfig {
        prefetch: 1_000,
        prefetch_bytes: 10 * (64 * 1024 + common::model::ENVELOPE_BYTES),
        ..IngestConfig::default()
    };
    assert_eq!(ingest.effective_prefetch(), 10);
    let tiny = IngestConfig {
        prefetch_bytes: 1,
        ..IngestConfig::default()
    };
    assert_eq!(tiny.effective_prefetch(), 1);
}

#[test]
fn retention_is_off_or_whole_hours_or_days_and_anything_else_names_the_variable() {
    let kept = |value: &str| {
        Config::from_vars(pairs(&[("RETENTION", value)])).map(|c| c.retention.kept().unwrap())
    };
    assert_eq!(kept("off").unwrap(), None);
    assert_eq!(kept("0").unwrap(), None);
    assert_eq!(
        kept("7d").unwrap(),
        Some(std::time::Duration::from_secs(7 * 86_400))
    );
    assert_eq!(
        kept("12h").unwrap(),
        Some(std::time::Duration::from_secs(12 * 3600))
    );
    assert_eq!(
        Config::from_vars(pairs(&[]))
            .unwrap()
            .retention
            .kept()
            .unwrap(),
        None
    );
    for bad in [
        "",
        "7",
        "1h",
        "d",
        "-1d",
        "+7d",
        "7w",
        "1.5d",
        "7 d",
        "999999999999999999d",
    ] {
        let error = kept(bad).unwrap_err().to_string();
        assert!(error.contains("RETENTION"), "{bad}: {error}");
    }
}
