//! What operators see: trace ids joining both services' log lines, both `/metrics` read by a real
//! Prometheus and by `promtool`, and the worker monitor in a real browser. Each test runs both services
//! as processes of their own, with a database and queues of its own.

mod browser;
mod dashboard;
mod monitor;
mod monitor_charts;
mod otlp;
mod prometheus;
mod quiet;
mod reads;
mod secrets;
mod services;
mod trace;
