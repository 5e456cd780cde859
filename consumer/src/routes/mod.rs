//! HTTP routes of the consumer, one module an endpoint group.

pub mod health;
pub mod messages;
