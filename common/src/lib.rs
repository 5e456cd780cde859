//! What the publisher and the consumer share, in three parts with one job each:
//!
//! - [`model`]: the message as the contract defines it, its envelope on the queue, and its trace context;
//! - [`amqp`]: reaching the broker (address, TLS, connect), the topology, and publishing with confirms;
//! - [`web`]: the HTTP server both run, guarded routes, request metrics, problem bodies and OpenAPI.
//!
//! Beside them, the few things every process needs: reading settings ([`mod@settings`]), logging
//! ([`telemetry`]), redacting secrets ([`redact`]), retry pacing ([`backoff`]), the shutdown signal and
//! the allocator's tuning.

pub mod allocator;
pub mod amqp;
pub mod backoff;
pub mod model;
pub mod redact;
pub mod settings;
pub mod shutdown;
pub mod telemetry;
pub mod web;

pub use model::{Message, MessageInput, QueuedMessage};
