//! What the fault scenarios share: the release binaries as child processes, control of the machine's
//! RabbitMQ and PostgreSQL (always restored, even when a scenario fails), a load of concurrent clients
//! that records every attempt, and the final accounting.

mod load;
mod machine;
mod pipeline;
mod retrying;
mod service;

pub use end_to_end::readiness;
pub use load::{Load, LoadReport};
pub use machine::{Cluster, Machine};
pub use pipeline::Pipeline;
pub use retrying::RetryingLoad;
pub use service::wait_ready;
