//! Prometheus plumbing shared by both services: each application owns a registry (so several can run in
//! one test process) and serves it in the text exposition format.

use actix_web::HttpResponse;
use prometheus::{core::Collector, Encoder, Registry, TextEncoder};

/// Registers collectors that were just created; a name clash is a programming error.
pub fn register(registry: &Registry, collectors: Vec<Box<dyn Collector>>) {
    for collector in collectors {
        registry
            .register(collector)
            .expect("metric registered once");
    }
}

/// The answer to `GET /metrics`: every metric in `registry`, in the text exposition format.
pub fn response(registry: &Registry) -> HttpResponse {
    let mut buffer = Vec::new();
    TextEncoder::new()
        .encode(&registry.gather(), &mut buffer)
        .expect("text encoding cannot fail");
    HttpResponse::Ok()
        .content_type("text/plain; version=0.0.4; charset=utf-8")
        .body(buffer)
}
