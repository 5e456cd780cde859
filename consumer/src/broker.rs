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

use common::amqp::{BrokerAddress, BrokerConfig};

/// The frame size the consumer proposes, unless `AMQP_URL` sets its own `?frame_max=`: RabbitMQ's
/// default `frame_max`, the largest frame a client of a default broker can send.
pub(crate) const FRAME_MAX: u32 = 128 * 1024;

/// The broker of `config`, proposing [`FRAME_MAX`] to every node whose URL does not set a frame size.
pub(crate) fn address(config: &BrokerConfig) -> anyhow::Result<BrokerAddress> {
    Ok(config.address()?.with_frame_max(FRAME_MAX))
}
