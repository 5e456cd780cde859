//! Everything that speaks AMQP: where the broker is and how to reach it (`connect`, with TLS), the
//! exchanges and queues both services rely on (`topology`), publishing with confirms (`confirm`), and the
//! settings that name them (`config`).

mod config;
mod confirm;
mod connect;
mod error;
mod plaintext;
mod topology;

pub use config::BrokerConfig;
pub use confirm::{ConfirmChannel, Confirmed};
pub use connect::{
    close, look_at, node_urls, queue_exists, BrokerAddress, CLOSE_TIMEOUT, DEFAULT_FRAME_MAX,
    DEFAULT_HEARTBEAT_SECS,
};
pub use error::BrokerError;
pub use plaintext::{is_local, plaintext_amqp_hosts, warn_about_plaintext_amqp};
pub use topology::{
    is_not_found, Permissions, Policy, QueueType, Topology, CONSISTENT_HASH_PLUGIN, MAX_SHARDS,
};
