//! The `Idempotency-Key` header: `IdempotencyKey::parse` on any bytes, and `from_request` on every value
//! an HTTP header can carry. A key is accepted exactly when it is 1 to 200 visible ASCII characters, and
//! the ids derived from it are stable and tell apart a single message from each element of a batch.
#![no_main]

use actix_web::{http::header::HeaderValue, test::TestRequest};
use common::Message;
use libfuzzer_sys::fuzz_target;
use publisher::{IdempotencyKey, IDEMPOTENCY_KEY as HEADER};
use service_fuzz::assert_renders;

fuzz_target!(|data: &[u8]| {
    let rule = (1..=200).contains(&data.len()) && data.iter().all(|b| (0x21..=0x7e).contains(b));
    let parsed = IdempotencyKey::parse(data);
    assert_eq!(parsed.is_ok(), rule, "parse disagrees with the rule");
    if let Err(error) = &parsed {
        assert_renders(error);
    }

    if let Ok(value) = HeaderValue::from_bytes(data) {
        let request = TestRequest::default()
            .insert_header((HEADER, value))
            .to_http_request();
        match IdempotencyKey::from_request(&request) {
            Ok(Some(_)) => assert!(rule, "a header broke the rule and was taken"),
            Ok(None) => panic!("a header that is present read as absent"),
            Err(error) => {
                assert!(!rule, "a header within the rule was refused: {error}");
                assert_renders(&error);
            }
        }
    }

    if let Ok(key) = parsed {
        let message: Message = serde_json::from_str(r#"{"sender":"s"}"#).unwrap();
        let single = key.message_id(&message, None, None);
        assert_eq!(single, key.message_id(&message, None, None), "unstable id");
        let first = key.message_id(&message, Some(0), None);
        let second = key.message_id(&message, Some(1), None);
        assert!(single != first && first != second && single != second);
    }
});
