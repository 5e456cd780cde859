//! `POST /message/publish/batch`'s body: `publisher::parse_batch` on any bytes, with limits taken
//! from the first three bytes (1 to 8 messages, 1 to 1021 bytes each, depth 2 to 17). It must never
//! panic, and must agree with parsing the array element by element: a batch is accepted exactly when it
//! holds 1 to `max_len` elements, each within `max_message_bytes` and each one `parse_message` accepts.
#![no_main]

use libfuzzer_sys::fuzz_target;
use publisher::{parse_batch, parse_message};
use serde_json::value::RawValue;
use service_fuzz::{assert_renders, assert_round_trip, assert_valid};

fuzz_target!(|data: &[u8]| {
    let Some((&[len, bytes, depth], body)) = data.split_first_chunk::<3>() else {
        return;
    };
    let max_len = 1 + usize::from(len % 8);
    let max_message_bytes = 1 + usize::from(bytes) * 4;
    let max_depth = 2 + usize::from(depth % 16);
    let batch = parse_batch(body, max_len, max_message_bytes, max_depth, |i, m| (i, m));

    // The same decision, element by element.
    let expected = serde_json::from_slice::<Vec<&RawValue>>(body)
        .ok()
        .filter(|elements| (1..=max_len).contains(&elements.len()))
        .filter(|elements| elements.iter().all(|e| e.get().len() <= max_message_bytes))
        .and_then(|elements| {
            elements
                .iter()
                .map(|e| parse_message(e.get().as_bytes(), max_depth).ok())
                .collect::<Option<Vec<_>>>()
        });

    match batch {
        Err(error) => {
            assert_renders(&error);
            assert!(
                expected.is_none(),
                "a batch of valid messages was refused: {error}"
            );
        }
        Ok(items) => {
            let expected = expected.expect("a batch was accepted that its elements refuse");
            assert_eq!(items.len(), expected.len());
            for (position, ((index, message), alone)) in items.iter().zip(&expected).enumerate() {
                assert_eq!(*index, position, "indexes out of order");
                assert_eq!(message, alone);
                assert!(message.attributes().depth() < max_depth);
                assert_valid(message);
                assert_round_trip(message);
            }
            let messages: Vec<_> = items.into_iter().map(|(_, m)| m).collect();
            let text = serde_json::to_vec(&messages).expect("a batch serialises");
            let again = parse_batch(&text, max_len, usize::MAX, max_depth, |_, m| m)
                .expect("an accepted batch parses back from its own serialisation");
            assert_eq!(again, messages);
        }
    }
});
