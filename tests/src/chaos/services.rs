//! The publishers and consumers: release binaries run as processes, each inside its own network namespace
//! on a fixed port, restartable there after a SIGKILL, and killed when dropped. Their logs are appended to
//! `<run dir>/<name>.log`.

use std::{fs::OpenOptions, path::PathBuf, sync::Arc};

use anyhow::Context;

use super::net::Netns;
use end_to_end::process::{ServiceProcess, SERVICE_LOG};

pub struct Service {
    pub name: String,
    binary: PathBuf,
    pub netns: Arc<Netns>,
    env: Vec<(String, String)>,
    port: u16,
    log: PathBuf,
    process: Option<ServiceProcess>,
}

impl Service {
    pub fn start(
        name: String,
        binary: PathBuf,
        netns: Arc<Netns>,
        env: Vec<(String, String)>,
        port: u16,
        log: PathBuf,
    ) -> anyhow::Result<Self> {
        let mut service = Self {
            name,
            binary,
            netns,
            env,
            port,
            log,
            process: None,
        };
        service.spawn()?;
        Ok(service)
    }

    fn spawn(&mut self) -> anyhow::Result<()> {
        let log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)?;
        let mut command = self
            .netns
            .command(self.binary.to_str().context("a UTF-8 path")?);
        command.envs(self.env.iter().map(|(k, v)| (k, v)));
        let process =
            ServiceProcess::spawn_logging_to(command, "0.0.0.0", self.port, SERVICE_LOG, log)
                .with_context(|| format!("starting {}", self.name))?;
        self.process = Some(process);
        Ok(())
    }

    pub fn url(&self) -> String {
        format!("http://{}:{}", self.netns.ns_ip, self.port)
    }

    pub fn signal(&self, signal: i32) {
        if let Some(process) = &self.process {
            process.signal(signal);
        }
    }

    /// SIGKILL (after SIGCONT, so a frozen process dies too), then reaped.
    pub fn kill(&mut self) {
        if let Some(mut process) = self.process.take() {
            process.kill();
        }
    }

    /// Whether the process runs (it may be stopped).
    pub fn is_running(&mut self) -> bool {
        self.process
            .as_mut()
            .is_some_and(ServiceProcess::is_running)
    }

    /// Continued if stopped, started again if it is not running.
    pub fn restore(&mut self) -> anyhow::Result<()> {
        self.signal(libc::SIGCONT);
        if !self.is_running() {
            self.kill();
            self.spawn()?;
        }
        Ok(())
    }
}
