//! HTTP routes of the publisher, one module an endpoint group.

pub mod health;
pub mod publish;
