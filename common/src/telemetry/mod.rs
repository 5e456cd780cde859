//! Logging and tracing set-up. `RUST_LOG` filters the log lines (default `info`), `LOG_FORMAT` picks
//! human or JSON lines. With `OTEL_EXPORTER_OTLP_ENDPOINT` set, the services' spans are also exported
//! over OTLP ([`traces`]); the span context a message carries is then that of an exported span
//! ([`spans`]).

mod probes;
mod spans;
mod traces;

use serde::{Deserialize, Serialize};
use tracing_subscriber::{fmt, layer::SubscriberExt, util::SubscriberInitExt, EnvFilter, Layer};

use crate::settings::{ensure, Vars};

pub use spans::{context_of, continue_trace, exporting, link_to};
pub use traces::SpanMetrics;

/// How log lines are written.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Coloured, multi-field lines for a terminal.
    #[default]
    Pretty,
    /// One JSON object a line, for log collectors.
    Json,
}

/// How the service logs and exports its traces (`RUST_LOG` itself is read by the filter, as tracing
/// reads it). The `OTEL_*` variables have the meaning every OpenTelemetry SDK gives them.
#[derive(Clone, Debug, Default, Deserialize, Serialize)]
#[serde(default)]
pub struct TelemetryConfig {
    /// `LOG_FORMAT`: `pretty` or `json`.
    pub log_format: LogFormat,
    /// `OTEL_EXPORTER_OTLP_ENDPOINT`: the collector's base URL (`/v1/traces` is appended); unset, no
    /// span is exported.
    pub otel_exporter_otlp_endpoint: Option<String>,
    /// `OTEL_EXPORTER_OTLP_PROTOCOL`: `http/protobuf`, the only one built in (and the default).
    pub otel_exporter_otlp_protocol: Option<String>,
    /// `OTEL_SERVICE_NAME`: the `service.name` of the exported spans; the binary's name if unset.
    pub otel_service_name: Option<String>,
    /// `OTEL_TRACES_SAMPLER`: which traces are sampled, `parentbased_always_on` if unset.
    pub otel_traces_sampler: Option<String>,
    /// `OTEL_TRACES_SAMPLER_ARG`: the ratio of the `traceidratio` samplers, from 0 to 1.
    pub otel_traces_sampler_arg: Option<String>,
}

impl crate::settings::Group for TelemetryConfig {
    /// Empty `OTEL_*` values never get here: [`Vars`] drops them as unset.
    fn complete(self, _vars: &Vars) -> anyhow::Result<Self> {
        if let Some(endpoint) = &self.otel_exporter_otlp_endpoint {
            // The exporter is built without TLS: an https:// endpoint would fail every export, quietly.
            ensure(
                endpoint.starts_with("http://"),
                &format!(
                    "OTEL_EXPORTER_OTLP_ENDPOINT must be an http:// URL (the export has no TLS: send to a \
                     collector on the node or in the pod), got {:?}",
                    crate::redact::url(endpoint)
                ),
            )?;
        }
        if let Some(arg) = &self.otel_traces_sampler_arg {
            ensure(
                arg.parse::<f64>()
                    .is_ok_and(|ratio| (0.0..=1.0).contains(&ratio)),
                &format!("OTEL_TRACES_SAMPLER_ARG must be a ratio from 0 to 1, got {arg:?}"),
            )?;
        }
        Ok(self)
    }
}

/// The variable the log filter is read from, besides those of [`TelemetryConfig`].
pub const FILTER_VARIABLE: &str = "RUST_LOG";

/// What must outlive the service for its last spans to leave: dropping it flushes and stops the
/// export, waiting a bounded time for a collector that does not answer.
#[must_use = "dropping it stops the export of traces"]
pub struct Telemetry {
    traces: Option<traces::Export>,
}

impl Drop for Telemetry {
    fn drop(&mut self) {
        if let Some(traces) = self.traces.take() {
            traces.shutdown();
        }
    }
}

/// Installs the global subscriber: log lines, and the export of spans when an endpoint is set.
/// Calling it twice (as tests do) keeps the first. `service` names the spans when
/// `OTEL_SERVICE_NAME` does not.
pub fn init(config: &TelemetryConfig, service: &str) -> anyhow::Result<Telemetry> {
    let filter = match EnvFilter::try_from_default_env() {
        Ok(filter) => filter,
        Err(error) => {
            if std::env::var_os(FILTER_VARIABLE).is_some() {
                eprintln!("RUST_LOG is not a valid filter ({error}); logging at info");
            }
            EnvFilter::new("info")
        }
    };
    let logs = match config.log_format {
        LogFormat::Pretty => fmt::layer().with_target(true).boxed(),
        LogFormat::Json => fmt::layer()
            .with_target(true)
            .json()
            .flatten_event(true)
            .boxed(),
    };
    let traces = match &config.otel_exporter_otlp_endpoint {
        Some(endpoint) => Some(traces::Export::start(config, endpoint, service)?),
        None => None,
    };
    let exported = traces.as_ref().map(|export| {
        tracing_opentelemetry::layer()
            .with_tracer(export.tracer())
            .with_location(false)
            .with_threads(false)
            .with_tracked_inactivity(false)
    });
    // One filter for both layers: the spans exported are those `RUST_LOG` enables. (A filter of each
    // layer's own would be skipped at random by libraries that ask whether a level is enabled without
    // then logging, as the database driver does for each query.)
    let installed = tracing_subscriber::registry()
        .with(filter)
        .with(probes::QuietQueueLooks)
        .with(logs)
        .with(exported)
        .try_init()
        .is_ok();
    match traces {
        Some(traces) if installed => {
            spans::set_exporting();
            tracing::info!(
                endpoint = %crate::redact::url(traces.endpoint()),
                "exporting traces over OTLP"
            );
            Ok(Telemetry {
                traces: Some(traces),
            })
        }
        Some(traces) => {
            traces.shutdown();
            Ok(Telemetry { traces: None })
        }
        None => Ok(Telemetry { traces: None }),
    }
}

#[cfg(test)]
mod tests {
    use crate::settings::{pairs, Vars};

    use super::TelemetryConfig;

    fn read(vars: &[(&str, &str)]) -> anyhow::Result<TelemetryConfig> {
        Vars::new(pairs(vars))?.read()
    }

    #[test]
    fn an_empty_opentelemetry_variable_counts_as_unset() {
        let config = read(&[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", ""),
            ("OTEL_EXPORTER_OTLP_PROTOCOL", ""),
            ("OTEL_SERVICE_NAME", " "),
            ("OTEL_TRACES_SAMPLER", ""),
            ("OTEL_TRACES_SAMPLER_ARG", ""),
        ])
        .expect("read");
        assert_eq!(config.otel_exporter_otlp_endpoint, None);
        assert_eq!(config.otel_exporter_otlp_protocol, None);
        assert_eq!(config.otel_service_name, None);
        assert_eq!(config.otel_traces_sampler, None);
        assert_eq!(config.otel_traces_sampler_arg, None);
    }

    #[test]
    fn what_the_export_cannot_do_is_refused_naming_the_variable() {
        for (name, value) in [
            ("OTEL_EXPORTER_OTLP_ENDPOINT", "https://collector:4318"),
            ("OTEL_EXPORTER_OTLP_ENDPOINT", "collector:4318"),
            ("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc"),
            ("OTEL_EXPORTER_OTLP_PROTOCOL", "http/json"),
            ("OTEL_TRACES_SAMPLER", "sometimes"),
            ("OTEL_TRACES_SAMPLER_ARG", "2"),
            ("OTEL_TRACES_SAMPLER_ARG", "half"),
        ] {
            let error = read(&[(name, value)]).expect_err("refused").to_string();
            assert!(error.contains(name), "{name}={value}: {error}");
        }
        let error = read(&[("OTEL_EXPORTER_OTLP_ENDPOINT", "https://u:secret@c:4318")])
            .expect_err("refused")
            .to_string();
        assert!(!error.contains("secret"), "{error}");
        assert!(read(&[("OTEL_EXPORTER_OTLP_ENDPOINT", "http://collector:4318")]).is_ok());
    }
}
