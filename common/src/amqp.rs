//! Opening a connection to RabbitMQ, shared by both services' reconnect loops.

use lapin::{uri::AMQPUri, Connection, ConnectionProperties};

/// Connects to the broker at `url`, after checking that its port accepts TCP connections at all.
///
/// lapin 4.12 can go on to connect after it has reported an attempt as refused (seen while a broker is
/// starting), leaving behind a connection that nobody holds. Probing the port first keeps the attempts
/// that can fail that way from reaching lapin.
pub async fn connect(url: &str, properties: ConnectionProperties) -> lapin::Result<Connection> {
    let uri: AMQPUri = url.parse().map_err(|e: String| {
        lapin::Error::from(std::io::Error::new(std::io::ErrorKind::InvalidInput, e))
    })?;
    let address = (uri.authority.host.clone(), uri.authority.port);
    drop(tokio::net::TcpStream::connect(address).await?);
    Connection::connect_uri(uri, properties).await
}
