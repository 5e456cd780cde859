//! HTTP routes of the consumer, one module an endpoint group.

pub mod dead_letters;
pub mod health;
pub mod messages;
