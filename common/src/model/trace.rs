//! W3C trace context (`traceparent`) carried from a publish request, through the queue, to the consumer,
//! so that one trace id ties the publisher's and the consumer's log lines of a message together.
//!
//! The publisher takes the request's `traceparent`, or starts a trace when there is none or it does not
//! parse, and puts its own span's `traceparent` in the message's AMQP headers; the consumer reads it
//! back. When traces are exported (`crate::telemetry`), the ids are those of the exported spans.

use std::fmt;

use lapin::types::{AMQPValue, FieldTable};
use uuid::Uuid;

/// The HTTP header, and the AMQP header of a published message, that carry the context.
pub const TRACEPARENT: &str = "traceparent";

/// A trace id and the id of the span that is the parent of whatever continues the trace.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TraceContext {
    trace_id: u128,
    span_id: u64,
    flags: u8,
}

impl TraceContext {
    /// Reads a `traceparent` value: `version-traceid-spanid-flags` in lowercase hex. Version `ff` and
    /// all-zero ids are invalid; a later version's extra fields are ignored, as the specification asks.
    pub fn parse(value: &str) -> Option<Self> {
        let mut fields = value.trim().split('-');
        let version = fields.next()?;
        let (trace, span, flags) = (fields.next()?, fields.next()?, fields.next()?);
        let hex = |field: &str, len: usize| {
            field.len() == len
                && field
                    .bytes()
                    .all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
        };
        if !hex(version, 2)
            || version == "ff"
            || !hex(trace, 32)
            || !hex(span, 16)
            || !hex(flags, 2)
        {
            return None;
        }
        if version == "00" && fields.next().is_some() {
            return None;
        }
        let context = Self {
            trace_id: u128::from_str_radix(trace, 16).ok()?,
            span_id: u64::from_str_radix(span, 16).ok()?,
            flags: u8::from_str_radix(flags, 16).ok()?,
        };
        (context.trace_id != 0 && context.span_id != 0).then_some(context)
    }

    /// A new trace, sampled.
    pub fn start() -> Self {
        Self {
            trace_id: Uuid::new_v4().as_u128(),
            span_id: random_span_id(),
            flags: 1,
        }
    }

    /// A span of the same trace, child of this one.
    pub fn child(&self) -> Self {
        Self {
            span_id: random_span_id(),
            ..*self
        }
    }

    /// The context a published message carries in its AMQP headers, if it carries a valid one.
    pub fn from_headers(headers: Option<&FieldTable>) -> Option<Self> {
        match headers?.inner().get(TRACEPARENT)? {
            AMQPValue::LongString(value) => {
                Self::parse(std::str::from_utf8(value.as_bytes()).ok()?)
            }
            _ => None,
        }
    }

    /// The context of a span known by its ids, as an exporter's span context gives them.
    pub fn from_ids(trace_id: u128, span_id: u64, sampled: bool) -> Option<Self> {
        (trace_id != 0 && span_id != 0).then_some(Self {
            trace_id,
            span_id,
            flags: u8::from(sampled),
        })
    }

    /// The trace id, the span id and whether the trace is sampled.
    pub fn ids(&self) -> (u128, u64, bool) {
        (self.trace_id, self.span_id, self.flags & 1 == 1)
    }

    /// The trace id as the 32 hex digits that log lines carry.
    pub fn trace_id(&self) -> String {
        format!("{:032x}", self.trace_id)
    }
}

/// The `traceparent` value, version 00.
impl fmt::Display for TraceContext {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "00-{:032x}-{:016x}-{:02x}",
            self.trace_id, self.span_id, self.flags
        )
    }
}

fn random_span_id() -> u64 {
    loop {
        // Truncation keeps 64 random bits of the v4 uuid (uuid's thread-local generator).
        let id = Uuid::new_v4().as_u128() as u64;
        if id != 0 {
            return id;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const EXAMPLE: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

    #[test]
    fn a_valid_traceparent_reads_back_as_itself() {
        let context = TraceContext::parse(EXAMPLE).expect("valid");
        assert_eq!(context.to_string(), EXAMPLE);
        assert_eq!(context.trace_id(), "4bf92f3577b34da6a3ce929d0e0e4736");
    }

    #[test]
    fn a_child_keeps_the_trace_and_takes_a_new_span() {
        let parent = TraceContext::parse(EXAMPLE).expect("valid");
        let child = parent.child();
        assert_eq!(child.trace_id(), parent.trace_id());
        assert_ne!(child.to_string(), parent.to_string());
        assert!(TraceContext::parse(&child.to_string()).is_some());
    }

    #[test]
    fn invalid_values_are_refused() {
        for bad in [
            "",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7",
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
            "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e473-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra",
            "0g-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
        ] {
            assert_eq!(TraceContext::parse(bad), None, "{bad}");
        }
    }

    #[test]
    fn a_later_version_with_more_fields_is_read() {
        let later = "01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-more";
        assert!(TraceContext::parse(later).is_some());
    }

    #[test]
    fn the_context_reads_back_from_amqp_headers() {
        let context = TraceContext::start();
        let mut headers = FieldTable::default();
        assert_eq!(TraceContext::from_headers(Some(&headers)), None);
        headers.insert(
            TRACEPARENT.into(),
            AMQPValue::LongString(context.to_string().into()),
        );
        assert_eq!(TraceContext::from_headers(Some(&headers)), Some(context));
        assert_eq!(TraceContext::from_headers(None), None);
    }

    #[test]
    fn each_started_trace_is_a_new_sampled_one() {
        let (first, second) = (TraceContext::start(), TraceContext::start());
        assert_eq!(first.trace_id().len(), 32);
        assert_ne!(first.trace_id(), second.trace_id());
        assert!(TraceContext::parse(&first.to_string()).is_some());
        assert!(first.to_string().ends_with("-01"), "{first}");
    }
}
