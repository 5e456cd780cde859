//! Traces exported over OTLP, received by a collector of the test's own: an HTTP server that decodes
//! each `ExportTraceServiceRequest` with the OpenTelemetry protobuf types. One message's spans form
//! one trace across both services, and the batch that stored it links to it; a collector that stops
//! answering costs the pipeline nothing but dropped spans, which are counted.

use std::{
    net::TcpListener,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use actix_web::{web, App, HttpResponse, HttpServer};
use end_to_end::{eventually, metric_value};
use opentelemetry_proto::tonic::{
    collector::trace::v1::{ExportTraceServiceRequest, ExportTraceServiceResponse},
    common::v1::any_value::Value as AnyValue,
    trace::v1::span::SpanKind,
};
use prost::Message as _;
use serde_json::json;
use uuid::Uuid;

use crate::services::Services;

/// One received span, with the name of the service that sent it.
#[derive(Debug, Clone)]
struct Received {
    service: String,
    name: String,
    kind: SpanKind,
    trace_id: String,
    span_id: String,
    parent_span_id: String,
    /// `(trace id, span id)` of each link.
    links: Vec<(String, String)>,
}

/// A collector on a port of its own, keeping every span it is sent.
struct Collector {
    port: u16,
    spans: Arc<Mutex<Vec<Received>>>,
    server: actix_web::dev::ServerHandle,
}

impl Collector {
    fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").expect("a free port");
        let port = listener.local_addr().expect("bound").port();
        let spans = Arc::new(Mutex::new(Vec::new()));
        let kept = Arc::clone(&spans);
        let server = HttpServer::new(move || {
            let kept = Arc::clone(&kept);
            App::new().route(
                "/v1/traces",
                web::post().to(move |body: web::Bytes| {
                    let kept = Arc::clone(&kept);
                    async move { receive(&body, &kept) }
                }),
            )
        })
        .workers(1)
        .listen(listener)
        .expect("the collector listens")
        .run();
        let handle = server.handle();
        tokio::spawn(server);
        Self {
            port,
            spans,
            server: handle,
        }
    }

    fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    fn spans(&self) -> Vec<Received> {
        self.spans.lock().expect("not poisoned").clone()
    }

    /// Waits for a span named `name` of `trace_id`.
    async fn span(&self, trace_id: &str, name: &str) -> Received {
        eventually(
            Duration::from_secs(20),
            &format!("a span {name:?} of trace {trace_id}"),
            || async {
                self.spans()
                    .into_iter()
                    .find(|span| span.trace_id == trace_id && span.name == name)
            },
        )
        .await
    }
}

/// Decodes one export request (a body that is not one is answered 400, as a collector would).
fn receive(body: &[u8], kept: &Mutex<Vec<Received>>) -> HttpResponse {
    let Ok(request) = ExportTraceServiceRequest::decode(body) else {
        return HttpResponse::BadRequest().finish();
    };
    let mut spans = kept.lock().expect("not poisoned");
    for resource_spans in request.resource_spans {
        let service = resource_spans
            .resource
            .iter()
            .flat_map(|resource| &resource.attributes)
            .find(|attribute| attribute.key == "service.name")
            .and_then(
                |attribute| match attribute.value.as_ref()?.value.as_ref()? {
                    AnyValue::StringValue(name) => Some(name.clone()),
                    _ => None,
                },
            )
            .unwrap_or_default();
        for scope in resource_spans.scope_spans {
            for span in scope.spans {
                spans.push(Received {
                    service: service.clone(),
                    name: span.name.clone(),
                    kind: span.kind(),
                    trace_id: hex(&span.trace_id),
                    span_id: hex(&span.span_id),
                    parent_span_id: hex(&span.parent_span_id),
                    links: span
                        .links
                        .iter()
                        .map(|link| (hex(&link.trace_id), hex(&link.span_id)))
                        .collect(),
                });
            }
        }
    }
    HttpResponse::Ok()
        .content_type("application/x-protobuf")
        .body(ExportTraceServiceResponse::default().encode_to_vec())
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|byte| format!("{byte:02x}")).collect()
}

async fn start_exporting_to(endpoint: &str) -> Services {
    Services::start_with(&[("OTEL_EXPORTER_OTLP_ENDPOINT", endpoint)], &[]).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_is_one_trace_from_the_request_to_the_insert_and_its_batch_links_to_it() {
    let collector = Collector::start();
    let services = start_exporting_to(&collector.endpoint()).await;
    let caller_trace = "5bf92f3577b34da6a3ce929d0e0e4736";
    let caller_span = "10f067aa0ba902b7";
    let traceparent = format!("00-{caller_trace}-{caller_span}-01");
    let id = services
        .publish(
            &json!({"sender": "otlp"}),
            &[("traceparent", traceparent.as_str())],
        )
        .await;
    services.wait_stored(&[id]).await;

    // The publisher: the request's server span continues the caller's; publishing is its child, and
    // sending and confirming are the publish's.
    let request = collector.span(caller_trace, "POST /message/publish").await;
    assert_eq!(request.service, "publisher");
    assert_eq!(request.kind, SpanKind::Server);
    assert_eq!(request.parent_span_id, caller_span);
    let publish = collector.span(caller_trace, "publish").await;
    assert_eq!(publish.kind, SpanKind::Producer);
    assert_eq!(publish.parent_span_id, request.span_id);
    for step in ["send", "confirm"] {
        let span = collector.span(caller_trace, step).await;
        assert_eq!(span.parent_span_id, publish.span_id, "{step}");
        assert_eq!(span.service, "publisher", "{step}");
    }

    // The consumer: the delivery continues the same trace, as a child of the publish.
    let delivery = collector.span(caller_trace, "deliver").await;
    assert_eq!(delivery.service, "consumer");
    assert_eq!(delivery.kind, SpanKind::Consumer);
    assert_eq!(delivery.parent_span_id, publish.span_id);

    // The batch that stored it is a trace of its own, linked to the delivery; the insert (one
    // statement, committed with it) is its child.
    let batch = eventually(
        Duration::from_secs(20),
        "a stored batch linked to the delivery",
        || async {
            collector.spans().into_iter().find(|span| {
                span.name == "store batch"
                    && span
                        .links
                        .contains(&(caller_trace.to_owned(), delivery.span_id.clone()))
            })
        },
    )
    .await;
    assert_eq!(batch.service, "consumer");
    assert_ne!(batch.trace_id, caller_trace);
    let insert = collector.span(&batch.trace_id, "insert batch").await;
    assert_eq!(insert.parent_span_id, batch.span_id);

    // The trace id in the log lines is the exported one.
    let logged = services
        .consumer
        .logs
        .events()
        .iter()
        .any(|event| event.to_string().contains(caller_trace));
    assert!(logged, "the consumer's log lines name trace {caller_trace}");

    // A request without a traceparent starts a trace of its own, exported whole too.
    let id = services.publish(&json!({"sender": "otlp-new"}), &[]).await;
    services.wait_stored(&[id]).await;
    let started = eventually(Duration::from_secs(20), "a new trace", || async {
        collector.spans().into_iter().find(|span| {
            span.name == "POST /message/publish"
                && span.trace_id != caller_trace
                && span.parent_span_id.is_empty()
        })
    })
    .await;
    collector.span(&started.trace_id, "deliver").await;

    let text = services.metrics(&services.consumer.url).await;
    assert!(
        metric_value(&text, "consumer_trace_spans_exported_total") > 0.0,
        "{text}"
    );
    collector.server.stop(false).await;
}

/// Publishes `batches` batches of `size` messages, one request at a time; returns the ids and how long
/// it took, waiting until all are stored.
async fn load(services: &Services, batches: usize, size: usize) -> (Vec<Uuid>, Duration) {
    let started = Instant::now();
    let mut ids = Vec::with_capacity(batches * size);
    for batch in 0..batches {
        let body: Vec<_> = (0..size)
            .map(|i| json!({"sender": "otlp-load", "messageAttributes": {"batch": batch, "i": i}}))
            .collect();
        let response = services
            .http
            .post(format!("{}/message/publish/batch", services.publisher.url))
            .json(&body)
            .send()
            .await
            .expect("publisher reachable");
        assert_eq!(response.status(), 202, "{:?}", response.text().await);
        let answer: serde_json::Value = response.json().await.expect("JSON");
        ids.extend(
            answer["ids"]
                .as_array()
                .expect("ids")
                .iter()
                .map(|id| id.as_str().expect("id").parse::<Uuid>().expect("uuid")),
        );
    }
    services.wait_stored(&ids).await;
    (ids, started.elapsed())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_collector_that_stops_answering_costs_the_pipeline_nothing_but_dropped_spans() {
    let collector = Collector::start();
    let services = start_exporting_to(&collector.endpoint()).await;
    let (batches, size) = (30, 100);
    let (_, answered) = load(&services, batches, size).await;
    let exported = eventually(Duration::from_secs(20), "spans exported", || async {
        let text = services.metrics(&services.consumer.url).await;
        let exported = metric_value(&text, "consumer_trace_spans_exported_total");
        (exported >= (batches * size) as f64).then_some(exported)
    })
    .await;
    let peak_before = services.consumer.peak_rss_kib();

    // The collector goes, and something takes its port that accepts connections and never answers:
    // each export waits out its timeout.
    let port = collector.port;
    collector.server.stop(false).await;
    let frozen = eventually(Duration::from_secs(10), "the port free again", || async {
        TcpListener::bind(("127.0.0.1", port)).ok()
    })
    .await;
    let (_, unanswered) = load(&services, batches, size).await;
    let (_, unanswered_again) = load(&services, batches, size).await;
    let dropped = eventually(
        Duration::from_secs(30),
        "spans counted as dropped",
        || async {
            let text = services.metrics(&services.consumer.url).await;
            let dropped = metric_value(&text, "consumer_trace_spans_dropped_total");
            (dropped > 0.0).then_some(dropped)
        },
    )
    .await;
    let peak_after = services.consumer.peak_rss_kib();
    println!(
        "{batches}x{size} messages: {answered:?} exporting, {unanswered:?} and {unanswered_again:?} \
         with a collector that never answers; consumer peak RSS {peak_before} KiB then \
         {peak_after} KiB; {exported} spans exported, {dropped} dropped"
    );
    // An export that held the pipeline up would cost each batch its 5 s timeout, several minutes in
    // all; the bound is loose so that a busy machine does not fail it.
    let slowest = unanswered.max(unanswered_again);
    assert!(
        slowest < answered * 3 + Duration::from_secs(5),
        "the pipeline slowed down with the collector gone: {answered:?} then {slowest:?}"
    );
    // The spans waiting for the collector are bounded (2,048 of them), whatever it does.
    assert!(
        peak_after < peak_before + 16 * 1024,
        "the consumer's peak RSS grew from {peak_before} KiB to {peak_after} KiB"
    );
    drop(frozen);
}
