//! The consumer as a child process, so that tests can send it real signals.

use common::settings::Settings as _;
use std::{process::Command, time::Duration};

use consumer::config::Config as ConsumerConfig;
use end_to_end::process::{ServiceProcess, SERVICE_LOG};

/// The consumer in a child process, so that it can really be killed.
pub struct ConsumerProcess {
    process: ServiceProcess,
    pub url: String,
}

impl ConsumerProcess {
    pub fn spawn(config: &ConsumerConfig) -> Self {
        Self::spawn_with(config, &[])
    }

    /// Spawns with every setting of `config`, then `extra` environment variables on top.
    pub fn spawn_with(config: &ConsumerConfig, extra: &[(&str, &str)]) -> Self {
        let mut command = Command::new(env!("CARGO_BIN_EXE_consumer-process"));
        command
            .envs(config.environment())
            .env("HTTP_WORKERS", "1")
            .envs(extra.iter().copied());
        let process = ServiceProcess::spawn(command, None, SERVICE_LOG);
        Self {
            url: process.url(),
            process,
        }
    }

    /// SIGTERM, as Kubernetes sends; returns the exit status and how long the process took to exit.
    pub fn terminate(&mut self) -> (std::process::ExitStatus, Duration) {
        self.process.terminate()
    }

    /// SIGKILL: no shutdown code runs, in-flight batches are simply gone.
    pub fn kill(&mut self) {
        self.process.kill();
    }
}
