//! What the publisher and the consumer share: the message model and its validation, the AMQP
//! topology, configuration, problem responses, logging, trace context, shutdown and retry pacing.

pub mod allocator;
pub mod amqp;
pub mod auth;
pub mod backoff;
pub mod config;
pub mod http;
pub mod message;
pub mod metrics;
pub mod openapi;
pub mod problem;
pub mod queued;
pub mod redact;
pub mod shutdown;
pub mod telemetry;
pub mod topology;
pub mod trace;
pub mod transport;

pub use message::{Message, MessageInput};
pub use problem::Problem;
pub use queued::QueuedMessage;
pub use topology::{QueueType, Topology};
