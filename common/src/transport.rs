//! Saying so at start-up when credentials and messages would cross the network in plaintext: an
//! `amqp://` node, or a `DATABASE_URL` whose `sslmode` lets the connection go on without TLS, on a host
//! other than this machine. TLS itself is the URLs' to ask for (`amqps://`, `sslmode=verify-full`);
//! this only makes the choice visible in the logs.

/// Logs a warning for each plaintext connection `amqp_url` and `database_url` would make off this
/// machine.
pub fn warn_about_plaintext(amqp_url: &str, database_url: Option<&str>) {
    for host in plaintext_amqp_hosts(amqp_url) {
        tracing::warn!(
            %host,
            "AMQP_URL speaks plaintext AMQP to a host off this machine: credentials and messages are \
             readable on the network; use amqps:// (README, \"TLS that cannot fall back\")"
        );
    }
    if let Some(host) = database_url.and_then(plaintext_database_host) {
        tracing::warn!(
            %host,
            "DATABASE_URL does not require TLS (sslmode verify-full, verify-ca or require) for a host \
             off this machine: the connection may go on in plaintext"
        );
    }
}

/// The hosts of `amqp://` (not `amqps://`) nodes of `amqp_url` that are not this machine.
pub fn plaintext_amqp_hosts(amqp_url: &str) -> Vec<String> {
    crate::amqp::node_urls(amqp_url)
        .filter_map(|url| url.parse::<lapin::uri::AMQPUri>().ok())
        .filter(|uri| uri.scheme == lapin::uri::AMQPScheme::AMQP)
        .map(|uri| uri.authority.host)
        .filter(|host| !is_local(host))
        .collect()
}

/// The host of `database_url` when it is not this machine and its `sslmode` does not require TLS.
pub fn plaintext_database_host(database_url: &str) -> Option<String> {
    let (_, rest) = database_url.split_once("://")?;
    let (authority, query) = match rest.split_once('?') {
        Some((before, query)) => (before, query),
        None => (rest, ""),
    };
    let authority = authority.split('/').next().unwrap_or_default();
    let host_port = authority
        .rsplit_once('@')
        .map_or(authority, |(_, host)| host);
    let host = match host_port.strip_prefix('[') {
        Some(bracketed) => bracketed.split(']').next().unwrap_or_default(),
        None => host_port.split(':').next().unwrap_or_default(),
    };
    let host = if host.is_empty() {
        // A host in the query (`?host=/run/postgresql`), or none: a Unix socket by default.
        query
            .split('&')
            .find_map(|pair| pair.strip_prefix("host="))
            .unwrap_or("/")
    } else {
        host
    };
    let required = query.split('&').any(|pair| {
        matches!(
            pair,
            "sslmode=require" | "sslmode=verify-ca" | "sslmode=verify-full"
        )
    });
    (!required && !is_local(host)).then(|| host.to_owned())
}

/// Whether `host` is this machine: a loopback name or address, or a Unix socket directory.
fn is_local(host: &str) -> bool {
    host.starts_with('/')
        || host.eq_ignore_ascii_case("localhost")
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|address| address.is_loopback())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plaintext_amqp_off_this_machine_is_named() {
        let urls = "amqp://u:p@127.0.0.1:5672/%2f, amqps://u:p@broker-1:5671/%2f, \
                    amqp://u:p@broker-2:5672/%2f, amqp://u:p@localhost/%2f";
        assert_eq!(plaintext_amqp_hosts(urls), ["broker-2"]);
        assert!(plaintext_amqp_hosts("amqp://guest:guest@127.0.0.1:5672/%2f").is_empty());
    }

    #[test]
    fn a_database_url_that_does_not_require_tls_off_this_machine_is_named() {
        let host = |url: &str| plaintext_database_host(url);
        assert_eq!(
            host("postgres://u:p@db.example:5432/m"),
            Some("db.example".into())
        );
        assert_eq!(
            host("postgres://u:p@db.example/m?sslmode=prefer"),
            Some("db.example".into())
        );
        assert_eq!(
            host("postgres://u:p@db.example/m?sslmode=verify-full&x=1"),
            None
        );
        assert_eq!(
            host("postgres://u@db.example/m?application_name=a&sslmode=require"),
            None
        );
        assert_eq!(host("postgres://postgres@127.0.0.1:5432/messages"), None);
        assert_eq!(host("postgres://u@[::1]:5432/m"), None);
        assert_eq!(host("postgres:///messages?host=/run/postgresql"), None);
        assert_eq!(
            host("postgres://u@[2001:db8::1]:5432/m"),
            Some("2001:db8::1".into())
        );
    }
}
