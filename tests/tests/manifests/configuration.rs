//! The configuration page (docs/configuration.md) against the services' own configuration types: every
//! variable either service reads has a row, with its real default and the service that reads it, and
//! every row is a variable that is read. Nothing here keeps a list of variables by hand.

use common::settings::Settings as _;
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
