//! The broker as the consumer reaches it: the nodes of `AMQP_URL`, with AMQP frames as large as
//! RabbitMQ accepts by default.
//!
//! RabbitMQ sends a message's content header (its properties and headers) as one frame, however large,
//! and lapin closes the connection on a frame larger than the negotiated `frame_max`. A message that
//! another client wrote with large headers would then end every session that receives it, and every
//! delivery that session held would come back with a higher delivery count. Any header an AMQP client
//! can publish fits in the broker's own `frame_max` (131,072 bytes unless the operator changed it), so
//! the consumer negotiates that much; the poison check then dead-letters oversized headers with a
//! reason. The cost is lapin's buffers: 32 frames each way, 8 MiB a connection instead of 1 MiB.

use common::{amqp::node_urls, config::ServiceConfig};

/// The frame size the consumer proposes, unless `AMQP_URL` sets its own `?frame_max=`: RabbitMQ's
/// default `frame_max`, the largest frame a client of a default broker can send.
pub const FRAME_MAX: u32 = 128 * 1024;

/// The broker of `service`, with [`FRAME_MAX`] added to every node URL that does not set a frame size.
pub fn address(service: &ServiceConfig) -> anyhow::Result<common::amqp::BrokerAddress> {
    let mut service = service.clone();
    service.amqp_url = with_frame_max(&service.amqp_url, FRAME_MAX);
    service.broker()
}

/// `urls` (one URL, or several separated by commas), each with `frame_max=<frame_max>` in its query
/// unless it already sets one.
fn with_frame_max(urls: &str, frame_max: u32) -> String {
    node_urls(urls)
        .map(|url| {
            let query = url.split_once('?').map(|(_, query)| query);
            if query.is_some_and(|q| q.split('&').any(|pair| pair.starts_with("frame_max="))) {
                url.to_owned()
            } else {
                let separator = if query.is_some() { '&' } else { '?' };
                format!("{url}{separator}frame_max={frame_max}")
            }
        })
        .collect::<Vec<_>>()
        .join(",")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_node_gets_the_frame_size_unless_its_url_sets_one() {
        assert_eq!(
            with_frame_max("amqp://a:1/%2f, amqp://b:2/%2f?heartbeat=5", 131_072),
            "amqp://a:1/%2f?frame_max=131072,amqp://b:2/%2f?heartbeat=5&frame_max=131072"
        );
        assert_eq!(
            with_frame_max("amqp://a:1/%2f?frame_max=65536", 131_072),
            "amqp://a:1/%2f?frame_max=65536"
        );
    }

    #[test]
    fn the_url_still_parses_with_the_frame_size_added() {
        let url: lapin::uri::AMQPUri = with_frame_max("amqp://u:p@h:5672/%2f", 131_072)
            .parse()
            .expect("a valid URL");
        assert_eq!(url.query.frame_max, Some(131_072));
    }
}
