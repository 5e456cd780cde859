//! Everything about `<QUEUE_NAME>.dead`, in one place: how the consumer sends there what it can never
//! store, with the reason in a header (`outbox`), and how the admin routes look at and replay what it
//! holds (`queue`). What decides that a delivery is a dead letter lives with ingestion
//! (`ingest::poison`); the length limit is the setup step's policy (`setup`).

mod outbox;
mod queue;

pub(crate) use outbox::{
    answered, properties_bytes, Copy, CopyInFlight, DeadLetters, MAX_HEADER_BYTES,
};
pub use outbox::{CONNECTION_NAME, REASON_HEADER};
pub(crate) use queue::DeadLetterQueue;
