//! What exporting traces costs: the same end-to-end load (batches of 100) with no export, with every
//! span exported over OTLP to a collector that takes them and throws them away (so that what is
//! measured is the services' side of it), and with 1 % of traces sampled. CPU is both services'
//! together, per 10,000 messages stored.

use std::time::{Duration, Instant};

use actix_web::{web, App, HttpResponse, HttpServer};

use crate::{
    fixture::Scratch,
    measure::STORED_METRIC,
    services::{self, Service},
    Plan, Table,
};

pub const CPU_OFF: &str = "traces off: both services' CPU per 10,000 messages";
pub const CPU_ON: &str = "traces exported: both services' CPU per 10,000 messages";
pub const CPU_SAMPLED: &str = "traces 1 % sampled: both services' CPU per 10,000 messages";

/// A collector that answers every export with 200 and keeps nothing.
struct Sink {
    endpoint: String,
    server: actix_web::dev::ServerHandle,
}

impl Sink {
    fn start() -> anyhow::Result<Self> {
        let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
        let endpoint = format!("http://{}", listener.local_addr()?);
        let server = HttpServer::new(|| {
            App::new().route(
                "/v1/traces",
                web::post().to(|_body: web::Bytes| async {
                    HttpResponse::Ok()
                        .content_type("application/x-protobuf")
                        .finish()
                }),
            )
        })
        .workers(1)
        .listen(listener)?
        .run();
        let handle = server.handle();
        tokio::spawn(server);
        Ok(Self {
            endpoint,
            server: handle,
        })
    }
}

pub async fn measure(plan: &Plan, table: &mut Table) -> anyhow::Result<()> {
    let sink = Sink::start()?;
    for (cpu_label, env) in [
        (CPU_OFF, vec![]),
        (
            CPU_ON,
            vec![("OTEL_EXPORTER_OTLP_ENDPOINT", sink.endpoint.clone())],
        ),
        (
            CPU_SAMPLED,
            vec![
                ("OTEL_EXPORTER_OTLP_ENDPOINT", sink.endpoint.clone()),
                ("OTEL_TRACES_SAMPLER", "parentbased_traceidratio".to_owned()),
                ("OTEL_TRACES_SAMPLER_ARG", "0.01".to_owned()),
            ],
        ),
    ] {
        let scratch = Scratch::new().await?;
        let publisher = Service::start_with("publisher", &scratch, &env).await?;
        let consumer = Service::start_with("consumer", &scratch, &env).await?;
        let cpu_before = publisher.cpu_seconds() + consumer.cpu_seconds();
        let load = services::load(&publisher, 16, 100, plan.http_duration, None).await?;
        let deadline = Instant::now() + Duration::from_secs(120);
        while consumer.metric(STORED_METRIC).await? < load.accepted as f64 {
            anyhow::ensure!(Instant::now() < deadline, "the messages were not stored");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let cpu = publisher.cpu_seconds() + consumer.cpu_seconds() - cpu_before;
        table.record(cpu_label, "s", services::per_10k(cpu, load.accepted));
        if cpu_label == CPU_ON {
            // Spans leave a second after they end at most: read until the count stops moving.
            let exported = || async {
                anyhow::Ok(
                    consumer
                        .metric("consumer_trace_spans_exported_total")
                        .await?
                        + publisher
                            .metric("publisher_trace_spans_exported_total")
                            .await?,
                )
            };
            let mut last = -1.0;
            let mut now = exported().await?;
            let settled_by = Instant::now() + Duration::from_secs(30);
            while now != last && Instant::now() < settled_by {
                tokio::time::sleep(Duration::from_millis(1500)).await;
                (last, now) = (now, exported().await?);
            }
            let exported = now;
            table.record(
                "  spans exported per message",
                "",
                exported / load.accepted.max(1) as f64,
            );
        }
        drop((publisher, consumer));
        scratch.remove().await?;
    }
    // The sink's last connections may still be open; the figures are taken, so it is not waited for long.
    let _ = tokio::time::timeout(Duration::from_secs(5), sink.server.stop(false)).await;
    Ok(())
}

pub fn print_ratio(table: &Table) {
    println!(
        "  CPU a message, traces exported / off:  {:>5.1} %",
        100.0 * table.median(CPU_ON) / table.median(CPU_OFF)
    );
    println!(
        "  CPU a message, 1 % sampled / off:      {:>5.1} %",
        100.0 * table.median(CPU_SAMPLED) / table.median(CPU_OFF)
    );
}
