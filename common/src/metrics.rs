//! Prometheus plumbing shared by both services: each application owns a registry (so several can run in
//! one test process) and serves it in the text exposition format.

use prometheus::{core::Collector, Encoder, Registry, TextEncoder};

/// Registers collectors that were just created; a name clash is a programming error.
pub fn register(registry: &Registry, collectors: Vec<Box<dyn Collector>>) {
    for collector in collectors {
        registry
            .register(collector)
            .expect("metric registered once");
    }
}

/// The text exposition of every metric in `registry`.
pub fn render(registry: &Registry) -> String {
    let mut buffer = Vec::new();
    TextEncoder::new()
        .encode(&registry.gather(), &mut buffer)
        .expect("text encoding cannot fail");
    String::from_utf8(buffer).expect("text exposition is UTF-8")
}

/// Content type of [`render`]'s output.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";
