//! The export of spans over OTLP (HTTP and protobuf), batched and bounded in memory.
//!
//! The SDK's batch processor sends the spans from a thread of its own, so a collector that is slow,
//! frozen or gone never holds up a request or a delivery: the spans waiting for it are bounded by
//! [`QUEUE`], and what does not fit, or fails to leave, is dropped and counted. The SDK drops on a full
//! queue without telling how many, so admission is counted here ([`Admission`]): a span is admitted
//! only while fewer than [`QUEUE`] are between their end and their export, which keeps the SDK's own
//! queue from ever being the one that drops.

use std::{
    sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering},
    time::Duration,
};

use opentelemetry::{trace::TracerProvider as _, Context};
use opentelemetry_otlp::{Protocol, WithExportConfig};
use opentelemetry_sdk::{
    error::OTelSdkResult,
    trace::{
        BatchConfigBuilder, BatchSpanProcessor, Sampler, SdkTracerProvider, Span, SpanData,
        SpanExporter, SpanProcessor, Tracer,
    },
    Resource,
};
use prometheus::{core::Collector, IntCounter};

use super::TelemetryConfig;

/// Spans held at most between their end and their export, whatever the collector does: at a few
/// hundred bytes each, well under a megabyte.
const QUEUE: usize = 2048;
/// Spans sent in one request to the collector.
const BATCH: usize = 512;
/// The longest wait before ended spans are sent.
const SCHEDULE: Duration = Duration::from_secs(1);
/// How long one export may take before its spans are given up.
const EXPORT_TIMEOUT: Duration = Duration::from_secs(5);
/// How long the last export may take when the service stops: all it adds to a graceful stop.
const SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(1);
/// Links a span may carry: a stored batch links to the trace of each of its messages.
const MAX_LINKS: u32 = 4096;

/// What happened to ended spans, for the process (there is one tracer provider).
static QUEUED: AtomicUsize = AtomicUsize::new(0);
static EXPORTED: AtomicU64 = AtomicU64::new(0);
static DROPPED: AtomicU64 = AtomicU64::new(0);
/// Whether the last export failed: a failure is logged when exports start failing, not each time.
static FAILING: AtomicBool = AtomicBool::new(false);

/// The running export: the provider the tracing layer's tracer comes from.
pub(super) struct Export {
    provider: SdkTracerProvider,
    endpoint: String,
}

impl Export {
    /// Builds the exporter for `endpoint` (a base URL, to which `/v1/traces` is appended as the
    /// specification says) and starts the batch processor's thread.
    pub(super) fn start(
        config: &TelemetryConfig,
        endpoint: &str,
        service: &str,
    ) -> anyhow::Result<Self> {
        let endpoint = format!("{}/v1/traces", endpoint.trim_end_matches('/'));
        let exporter = opentelemetry_otlp::SpanExporter::builder()
            .with_http()
            .with_protocol(Protocol::HttpBinary)
            .with_endpoint(endpoint.clone())
            .with_timeout(EXPORT_TIMEOUT)
            .build()
            .map_err(|error| anyhow::anyhow!("cannot build the OTLP exporter: {error}"))?;
        let batches = BatchSpanProcessor::builder(Counting(exporter))
            .with_batch_config(
                BatchConfigBuilder::default()
                    .with_max_queue_size(QUEUE)
                    .with_max_export_batch_size(BATCH)
                    .with_scheduled_delay(SCHEDULE)
                    .build(),
            )
            .build();
        let name = config
            .otel_service_name
            .clone()
            .unwrap_or_else(|| service.to_owned());
        let provider = SdkTracerProvider::builder()
            .with_span_processor(Admission(batches))
            .with_sampler(sampler(config))
            .with_max_links_per_span(MAX_LINKS)
            .with_resource(Resource::builder().with_service_name(name).build())
            .build();
        Ok(Self { provider, endpoint })
    }

    pub(super) fn tracer(&self) -> Tracer {
        self.provider.tracer("message-queue")
    }

    pub(super) fn endpoint(&self) -> &str {
        &self.endpoint
    }

    /// Sends what is left, waiting at most [`SHUTDOWN_TIMEOUT`].
    pub(super) fn shutdown(self) {
        if let Err(error) = self.provider.shutdown_with_timeout(SHUTDOWN_TIMEOUT) {
            tracing::warn!(%error, "the last spans could not be exported");
        }
    }
}

/// The sampler `OTEL_TRACES_SAMPLER` and its argument name, as the specification defines them (the
/// values were checked when the configuration was read).
fn sampler(config: &TelemetryConfig) -> Sampler {
    let ratio = config
        .otel_traces_sampler_arg
        .as_deref()
        .and_then(|arg| arg.parse().ok())
        .unwrap_or(1.0);
    match config.otel_traces_sampler.as_deref() {
        Some("always_on") => Sampler::AlwaysOn,
        Some("always_off") => Sampler::AlwaysOff,
        Some("traceidratio") => Sampler::TraceIdRatioBased(ratio),
        Some("parentbased_always_off") => Sampler::ParentBased(Box::new(Sampler::AlwaysOff)),
        Some("parentbased_traceidratio") => {
            Sampler::ParentBased(Box::new(Sampler::TraceIdRatioBased(ratio)))
        }
        _ => Sampler::ParentBased(Box::new(Sampler::AlwaysOn)),
    }
}

/// Admits an ended span to the batch processor only while fewer than [`QUEUE`] wait for export, and
/// counts the rest as dropped.
#[derive(Debug)]
struct Admission(BatchSpanProcessor);

impl SpanProcessor for Admission {
    fn on_start(&self, span: &mut Span, cx: &Context) {
        self.0.on_start(span, cx);
    }

    fn on_end(&self, span: SpanData) {
        // The processor ignores spans that are not sampled, so they are not counted in.
        if !span.span_context.is_sampled() {
            return;
        }
        let admitted = QUEUED
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |queued| {
                (queued < QUEUE).then_some(queued + 1)
            })
            .is_ok();
        if admitted {
            self.0.on_end(span);
        } else {
            DROPPED.fetch_add(1, Ordering::Relaxed);
        }
    }

    fn force_flush(&self) -> OTelSdkResult {
        self.0.force_flush()
    }

    fn shutdown_with_timeout(&self, timeout: Duration) -> OTelSdkResult {
        self.0.shutdown_with_timeout(timeout)
    }

    fn set_resource(&mut self, resource: &Resource) {
        self.0.set_resource(resource);
    }
}

/// The OTLP exporter, counting the spans it sends and those it fails to.
#[derive(Debug)]
struct Counting<E>(E);

impl<E: SpanExporter> SpanExporter for Counting<E> {
    async fn export(&self, batch: Vec<SpanData>) -> OTelSdkResult {
        let count = batch.len();
        // Saturating, in one step: spans handed over at shutdown may never have been admitted.
        let _ = QUEUED.fetch_update(Ordering::AcqRel, Ordering::Acquire, |queued| {
            Some(queued.saturating_sub(count))
        });
        let outcome = self.0.export(batch).await;
        match &outcome {
            Ok(()) => {
                EXPORTED.fetch_add(count as u64, Ordering::Relaxed);
                if FAILING.swap(false, Ordering::Relaxed) {
                    tracing::info!("the OTLP collector takes spans again");
                }
            }
            Err(error) => {
                DROPPED.fetch_add(count as u64, Ordering::Relaxed);
                if !FAILING.swap(true, Ordering::Relaxed) {
                    tracing::warn!(%error, spans = count, "the OTLP collector did not take spans; they are dropped, and counted in *_trace_spans_dropped_total");
                }
            }
        }
        outcome
    }

    fn shutdown_with_timeout(&self, timeout: Duration) -> OTelSdkResult {
        self.0.shutdown_with_timeout(timeout)
    }

    fn force_flush(&self) -> OTelSdkResult {
        self.0.force_flush()
    }

    fn set_resource(&mut self, resource: &Resource) {
        self.0.set_resource(resource);
    }
}

/// `<service>_trace_spans_exported_total` and `<service>_trace_spans_dropped_total`, read from the
/// export's counts at each scrape. Both stay 0 while no endpoint is set.
pub struct SpanMetrics {
    exported: IntCounter,
    dropped: IntCounter,
}

impl SpanMetrics {
    pub fn new(service: &str) -> Self {
        let counter = |name: &str, help: &str| {
            IntCounter::new(format!("{service}_trace_spans_{name}_total"), help)
                .expect("valid metric")
        };
        Self {
            exported: counter("exported", "Spans the OTLP collector took"),
            dropped: counter(
                "dropped",
                "Spans given up: the export queue was full, or the collector failed or did not answer",
            ),
        }
    }
}

impl Collector for SpanMetrics {
    fn desc(&self) -> Vec<&prometheus::core::Desc> {
        let mut descs = self.exported.desc();
        descs.extend(self.dropped.desc());
        descs
    }

    fn collect(&self) -> Vec<prometheus::proto::MetricFamily> {
        for (counter, total) in [(&self.exported, &EXPORTED), (&self.dropped, &DROPPED)] {
            let total = total.load(Ordering::Relaxed);
            counter.inc_by(total.saturating_sub(counter.get()));
        }
        let mut families = self.exported.collect();
        families.extend(self.dropped.collect());
        families
    }
}
