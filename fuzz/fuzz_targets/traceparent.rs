//! The `traceparent` a publish request carries and a delivery's AMQP headers carry on: `TraceContext::parse`
//! on any UTF-8 and `from_headers` on any bytes. It must never panic, and a context that parses writes
//! out as version 00 and reads back as itself.
#![no_main]

use common::model::{TraceContext, TRACEPARENT};
use lapin::types::{AMQPValue, FieldTable, LongString};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let mut headers = FieldTable::default();
    headers.insert(
        TRACEPARENT.into(),
        AMQPValue::LongString(LongString::from(data.to_vec())),
    );
    let from_headers = TraceContext::from_headers(Some(&headers));
    let Ok(text) = std::str::from_utf8(data) else {
        assert!(from_headers.is_none(), "a non-UTF-8 header was read");
        return;
    };
    let parsed = TraceContext::parse(text);
    assert_eq!(parsed, from_headers);
    if let Some(context) = parsed {
        let written = context.to_string();
        assert_eq!(TraceContext::parse(&written), Some(context));
        assert_eq!(written.len(), 55);
        assert_eq!(context.trace_id(), written[3..35]);
        assert_eq!(context.child().trace_id(), context.trace_id());
    }
});
