//! Opening a connection to RabbitMQ and publishing with confirms, shared by both services.

use std::time::Duration;

use lapin::{
    options::BasicPublishOptions, uri::AMQPUri, BasicProperties, Channel, Confirmation, Connection,
    ConnectionProperties,
};

/// Longest wait for the broker to answer a close (or a cancel); a dead peer never answers.
pub const CLOSE_TIMEOUT: Duration = Duration::from_secs(2);

/// The largest AMQP frame proposed to the broker unless `AMQP_URL` sets `?frame_max=`.
///
/// lapin keeps a send and a receive buffer of 32 frames per connection, allocated and filled in full, so
/// RabbitMQ's default of 128 KiB costs 8 MiB of resident memory per connection. 16 KiB frames keep that
/// to 1 MiB. A message larger than a frame is sent as several body frames, which the protocol allows.
pub const DEFAULT_FRAME_MAX: u32 = 16 * 1024;

/// Connects to the broker at `url`, after checking that its port accepts TCP connections at all.
///
/// lapin 4.12 can go on to connect after it has reported an attempt as refused (seen while a broker is
/// starting), leaving behind a connection that nobody holds. Probing the port first keeps the attempts
/// that can fail that way from reaching lapin.
/// The frame size is [`DEFAULT_FRAME_MAX`] unless the URL sets its own.
pub async fn connect(url: &str, properties: ConnectionProperties) -> lapin::Result<Connection> {
    let mut uri: AMQPUri = url.parse().map_err(|e: String| {
        lapin::Error::from(std::io::Error::new(std::io::ErrorKind::InvalidInput, e))
    })?;
    uri.query.frame_max.get_or_insert(DEFAULT_FRAME_MAX);
    let address = (uri.authority.host.clone(), uri.authority.port);
    drop(tokio::net::TcpStream::connect(address).await?);
    Connection::connect_uri(uri, properties).await
}

/// Closes `connection` cleanly, waiting at most [`CLOSE_TIMEOUT`] for the broker; a connection that is
/// already gone is left as it is.
pub async fn close(connection: &Connection, reason: &str) {
    let _ = tokio::time::timeout(CLOSE_TIMEOUT, connection.close(200, reason.into())).await;
}

/// What the broker said of one publish, once it answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Confirmed {
    /// Routed to a queue and taken: the message is the broker's now.
    Acked,
    /// No queue was bound for it (`mandatory`), so the broker returned it.
    Returned,
    /// The broker refused it.
    Nacked,
    /// The channel is not in confirm mode, so nothing can be known.
    NotRequested,
}

/// Publishes `payload` as `mandatory` on `channel` (in confirm mode) and waits for the broker's answer
/// for this very message: a confirm is awaited per publish, never for the channel as a whole, since
/// lapin cannot tell which message a channel-wide wait was for.
pub async fn publish_confirmed(
    channel: &Channel,
    exchange: &str,
    routing_key: &str,
    payload: &[u8],
    properties: BasicProperties,
) -> lapin::Result<Confirmed> {
    let options = BasicPublishOptions {
        mandatory: true,
        ..BasicPublishOptions::default()
    };
    let confirmation = channel
        .basic_publish(
            exchange.into(),
            routing_key.into(),
            options,
            payload,
            properties,
        )
        .await?
        .await?;
    Ok(match confirmation {
        Confirmation::Ack(None) => Confirmed::Acked,
        Confirmation::Ack(Some(_returned)) => Confirmed::Returned,
        Confirmation::Nack(_) => Confirmed::Nacked,
        Confirmation::NotRequested => Confirmed::NotRequested,
    })
}
