//! The consumer as a child process, so that tests can send it real signals.

use std::{
    process::{Child, Command, ExitStatus},
    time::{Duration, Instant},
};

use common::config::ConsumerConfig;

/// The consumer in a child process, so that it can really be killed.
pub struct ConsumerProcess {
    child: Child,
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
        let (child, port) = end_to_end::process::spawn_listening(command, None);
        Self {
            child,
            url: format!("http://127.0.0.1:{port}"),
        }
    }

    /// SIGTERM, as Kubernetes sends; returns the exit status and how long the process took to exit.
    pub fn terminate(&mut self) -> (ExitStatus, Duration) {
        let started = Instant::now();
        // SAFETY: sending a signal to a child process this struct owns and has not reaped.
        let sent = unsafe { libc::kill(self.child.id() as libc::pid_t, libc::SIGTERM) };
        assert_eq!(sent, 0, "SIGTERM sent");
        let status = self.child.wait().expect("reap consumer");
        (status, started.elapsed())
    }

    /// SIGKILL: no shutdown code runs, in-flight batches are simply gone.
    pub fn kill(&mut self) {
        self.child.kill().expect("kill consumer");
        self.child.wait().expect("reap consumer");
    }
}

impl Drop for ConsumerProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
