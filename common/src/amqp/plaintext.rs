//! Saying so at start-up when credentials and messages would cross the network in plaintext: an
//! `amqp://` node, or (the consumer decides, from sqlx's reading of the URL) a `DATABASE_URL` that does
//! not require TLS, on a host other than this machine. TLS itself is the URLs' to ask for (`amqps://`,
//! `sslmode=verify-full`); this only makes the choice visible in the logs.

/// Logs a warning for each plaintext connection `amqp_url` would make off this machine.
pub fn warn_about_plaintext_amqp(amqp_url: &str) {
    for host in plaintext_amqp_hosts(amqp_url) {
        tracing::warn!(
            %host,
            "AMQP_URL speaks plaintext AMQP to a host off this machine: credentials and messages are \
             readable on the network; use amqps:// (docs/security.md, \"TLS that cannot fall back\")"
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

/// Whether `host` is this machine: a loopback name or address (bracketed or not), or a Unix socket
/// directory.
pub fn is_local(host: &str) -> bool {
    let host = host.trim_start_matches('[').trim_end_matches(']');
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
}
