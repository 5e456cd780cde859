//! The bridge between a message's [`TraceContext`] (what travels in the `traceparent` headers) and the
//! exported spans: while traces are exported, a request's span continues the caller's trace, and the
//! context a message carries on is that of the span that published it. Without an export these do
//! nothing, and the services make up their own ids as before.

use std::sync::atomic::{AtomicBool, Ordering};

use opentelemetry::{
    trace::{SpanContext, SpanId, TraceContextExt, TraceFlags, TraceId, TraceState},
    Context,
};
use tracing_opentelemetry::OpenTelemetrySpanExt;

use crate::model::TraceContext;

static EXPORTING: AtomicBool = AtomicBool::new(false);

pub(super) fn set_exporting() {
    EXPORTING.store(true, Ordering::Release);
}

/// Whether spans are exported: per-message spans are only worth making then.
pub fn exporting() -> bool {
    EXPORTING.load(Ordering::Acquire)
}

/// Makes `span` (not entered yet) a child of the remote span `parent`.
pub fn continue_trace(span: &tracing::Span, parent: &TraceContext) {
    if !exporting() {
        return;
    }
    let parent = Context::new().with_remote_span_context(span_context(parent, true));
    // It fails only for a span the export does not see (filtered out), which has no trace to join.
    let _ = span.set_parent(parent);
}

/// The context of `span` as exported, to carry on in a message's headers; `None` without an export.
pub fn context_of(span: &tracing::Span) -> Option<TraceContext> {
    if !exporting() {
        return None;
    }
    let context = span.context();
    let span_context = context.span().span_context().clone();
    span_context.is_valid().then_some(())?;
    TraceContext::from_ids(
        u128::from_be_bytes(span_context.trace_id().to_bytes()),
        u64::from_be_bytes(span_context.span_id().to_bytes()),
        span_context.is_sampled(),
    )
}

/// Links `span` (not entered yet) to the span of another trace, `to`.
pub fn link_to(span: &tracing::Span, to: &TraceContext) {
    if exporting() {
        span.add_link(span_context(to, false));
    }
}

fn span_context(context: &TraceContext, remote: bool) -> SpanContext {
    let (trace_id, span_id, sampled) = context.ids();
    SpanContext::new(
        TraceId::from_bytes(trace_id.to_be_bytes()),
        SpanId::from_bytes(span_id.to_be_bytes()),
        if sampled {
            TraceFlags::SAMPLED
        } else {
            TraceFlags::default()
        },
        remote,
        TraceState::NONE,
    )
}
