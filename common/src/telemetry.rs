//! Logging set-up: `RUST_LOG` filters (default `info`), `LOG_FORMAT` picks human or JSON lines.

use serde::{Deserialize, Serialize};
use tracing_subscriber::{fmt, EnvFilter};

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

/// How the service logs (`RUST_LOG` itself is read by the filter, as tracing reads it).
#[derive(Clone, Debug, Default, Deserialize, Serialize)]
#[serde(default)]
pub struct TelemetryConfig {
    /// `LOG_FORMAT`: `pretty` or `json`.
    pub log_format: LogFormat,
}

impl crate::settings::Group for TelemetryConfig {}

/// The variable the log filter is read from, besides those of [`TelemetryConfig`].
pub const FILTER_VARIABLE: &str = "RUST_LOG";

/// Installs the global subscriber. Calling it twice (as tests do) keeps the first.
pub fn init(config: &TelemetryConfig) {
    let format = config.log_format;
    let filter = match EnvFilter::try_from_default_env() {
        Ok(filter) => filter,
        Err(error) => {
            if std::env::var_os("RUST_LOG").is_some() {
                eprintln!("RUST_LOG is not a valid filter ({error}); logging at info");
            }
            EnvFilter::new("info")
        }
    };
    let builder = fmt().with_env_filter(filter).with_target(true);
    let _ = match format {
        LogFormat::Pretty => builder.try_init(),
        LogFormat::Json => builder.json().flatten_event(true).try_init(),
    };
}
