//! The consumer's decoding of a delivery: `QueuedMessage::from_payload` on any bytes, as another client
//! may put anything on the queue. It must never panic, and what it decodes must be a message the
//! publisher's own parsing accepts (every rule applied again), whose payload reads back as itself.
#![no_main]

use common::QueuedMessage;
use libfuzzer_sys::fuzz_target;
use publisher::parse_message;
use service_fuzz::{assert_round_trip, assert_valid};

fuzz_target!(|data: &[u8]| {
    let Ok(queued) = QueuedMessage::from_payload(data) else {
        return;
    };
    assert_valid(&queued.message);
    assert_round_trip(&queued.message);
    let text = serde_json::to_vec(&queued.message).expect("a message serialises");
    let reparsed = parse_message(&text, usize::MAX)
        .unwrap_or_else(|e| panic!("the consumer decoded what the publisher refuses: {e}"));
    assert_eq!(reparsed, queued.message);
    let again = QueuedMessage::from_payload(&queued.to_payload()).expect("a payload reads back");
    assert_eq!(again, queued);
});
