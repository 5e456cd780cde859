//! `POST /message/publish`'s body: `publisher::parse_message` on any bytes. It must never panic;
//! what it accepts obeys every rule and reads back as itself; the depth limit refuses exactly the
//! messages that nest deeper than it (the first byte picks the limit, 2 to 33).
#![no_main]

use libfuzzer_sys::fuzz_target;
use publisher::parse_message;
use service_fuzz::{assert_renders, assert_round_trip, assert_valid};

fuzz_target!(|data: &[u8]| {
    let Some((&knob, body)) = data.split_first() else {
        return;
    };
    let max_depth = 2 + usize::from(knob % 32);
    let limited = parse_message(body, max_depth);
    if let Err(error) = &limited {
        assert_renders(error);
    }
    match parse_message(body, usize::MAX) {
        Err(_) => assert!(
            limited.is_err(),
            "accepted under a limit, refused without one"
        ),
        Ok(message) => {
            let depth = message.attributes().depth() + 1;
            match &limited {
                Ok(same) => {
                    assert!(
                        depth <= max_depth,
                        "{depth} levels accepted under {max_depth}"
                    );
                    assert_eq!(same, &message);
                }
                Err(error) => assert!(
                    depth > max_depth,
                    "{depth} levels refused under {max_depth}: {error}"
                ),
            }
            assert_valid(&message);
            assert_round_trip(&message);
        }
    }
});
