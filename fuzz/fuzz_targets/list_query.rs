//! `GET /message`'s query string: `consumer::parse_list_query` on any UTF-8. It must
//! never panic; what it accepts is within the documented limits; and the `Link: rel="next"` query built
//! from it (as `next_url` builds it: `limit`, `sender`, `before`, urlencoded) reads back as the same filter.
#![no_main]

use consumer::{parse_list_query, ListQuery, MAX_LIMIT};
use libfuzzer_sys::fuzz_target;
use service_fuzz::assert_renders;

fuzz_target!(|data: &[u8]| {
    let Ok(query) = std::str::from_utf8(data) else {
        return;
    };
    match parse_list_query(query) {
        Err(error) => assert_renders(&error),
        Ok(parsed) => {
            assert!((1..=MAX_LIMIT).contains(&parsed.limit));
            if let Some(sender) = &parsed.sender {
                assert!(!sender.is_empty() && !sender.contains('\0'));
            }
            let last = uuid::Uuid::from_u128(u128::from_le_bytes(mix(data)));
            let mut next = vec![("limit", parsed.limit.to_string())];
            if let Some(sender) = &parsed.sender {
                next.push(("sender", sender.clone()));
            }
            next.push(("before", last.to_string()));
            let next = serde_urlencoded::to_string(next).expect("strings always encode");
            let again = parse_list_query(&next)
                .unwrap_or_else(|e| panic!("the next page's query {next:?} is refused: {e}"));
            assert_eq!(
                again,
                ListQuery {
                    before: Some(last),
                    ..parsed
                }
            );
        }
    }
});

/// Sixteen bytes that depend on the input, so the cursor id varies without a random source.
fn mix(data: &[u8]) -> [u8; 16] {
    let mut out = [0u8; 16];
    for (i, b) in data.iter().enumerate() {
        out[i % 16] = out[i % 16].wrapping_mul(31).wrapping_add(*b);
    }
    out
}
