//! The publishers and consumers: release binaries run as processes, each inside its own network namespace
//! on a fixed port, restartable there after a SIGKILL. Their logs are appended to `<run dir>/<name>.log`.

use std::{
    fs::OpenOptions,
    path::PathBuf,
    process::{Child, Stdio},
    sync::Arc,
};

use anyhow::Context;

use super::net::Netns;

pub struct Service {
    pub name: String,
    binary: PathBuf,
    pub netns: Arc<Netns>,
    env: Vec<(String, String)>,
    port: u16,
    log: PathBuf,
    child: Option<Child>,
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
            child: None,
        };
        service.spawn()?;
        Ok(service)
    }

    fn spawn(&mut self) -> anyhow::Result<()> {
        let log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)?;
        let child = self
            .netns
            .command(self.binary.to_str().context("a UTF-8 path")?)
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .env("HTTP_HOST", "0.0.0.0")
            .env("HTTP_PORT", self.port.to_string())
            .env("LOG_FORMAT", "json")
            .env("RUST_LOG", "warn,publisher=info,consumer=info")
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .with_context(|| format!("starting {}", self.name))?;
        self.child = Some(child);
        Ok(())
    }

    pub fn url(&self) -> String {
        format!("http://{}:{}", self.netns.ns_ip, self.port)
    }

    pub fn signal(&self, signal: i32) {
        if let Some(child) = &self.child {
            // SAFETY: signalling a child this struct owns and has not reaped.
            unsafe { libc::kill(child.id() as libc::pid_t, signal) };
        }
    }

    /// SIGKILL (after SIGCONT, so a frozen process dies too), then reaped.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            // SAFETY: as in `signal`.
            unsafe { libc::kill(child.id() as libc::pid_t, libc::SIGCONT) };
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Whether the process runs (it may be stopped).
    pub fn is_running(&mut self) -> bool {
        self.child
            .as_mut()
            .is_some_and(|child| child.try_wait().ok().flatten().is_none())
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

impl Drop for Service {
    fn drop(&mut self) {
        self.kill();
    }
}
