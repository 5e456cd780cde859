//! The message as the contract defines it, and the forms it travels in: what a client sends
//! (`message`, its `fields`), the envelope on the queue (`queued`), and the trace context beside it
//! (`trace`).

mod fields;
mod message;
mod queued;
mod trace;

pub use message::{
    Attributes, ClientTimestamp, InvalidField, Message, MessageInput, Priority, Sender,
    MAX_JSON_DEPTH, MAX_MESSAGE_BYTES, MAX_PRIORITY, SENDER_MAX_CHARS, TS_MAX_CHARS,
};
pub use queued::{fingerprint, QueuedMessage, ENVELOPE_BYTES};
pub use trace::{TraceContext, TRACEPARENT};
