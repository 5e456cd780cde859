//! A service binary as a child process that a scenario can kill, signal, restart on its port and weigh.

use std::{
    process::{Command, ExitStatus},
    time::Duration,
};

use end_to_end::{
    eventually,
    process::{release_binary, ServiceProcess, SERVICE_LOG},
    readiness,
};

/// One service binary running as a child process, restartable on the same port.
pub struct Service {
    name: &'static str,
    env: Vec<(String, String)>,
    process: Option<ServiceProcess>,
    pub url: String,
}

impl Service {
    pub fn start(name: &'static str, env: Vec<(String, String)>) -> Self {
        let mut service = Self {
            name,
            env,
            process: None,
            url: String::new(),
        };
        service.spawn();
        service
    }

    /// Starts the release binary on a port of its own choosing the first time, and on the same port
    /// after.
    fn spawn(&mut self) {
        let port = self
            .url
            .rsplit_once(':')
            .map(|(_, port)| port.parse().expect("a port"));
        let binary = release_binary(self.name).unwrap_or_else(|error| panic!("{error}"));
        let mut command = Command::new(binary);
        command.envs(self.env.iter().map(|(k, v)| (k.as_str(), v.as_str())));
        let process = ServiceProcess::spawn(command, port, SERVICE_LOG);
        self.url = process.url();
        self.process = Some(process);
    }

    /// SIGKILL: nothing of the service's own shutdown runs.
    pub fn kill(&mut self) {
        if let Some(mut process) = self.process.take() {
            process.kill();
        }
    }

    /// SIGTERM, as Kubernetes sends; returns how the process exited and how long it took.
    pub fn terminate(&mut self) -> (ExitStatus, Duration) {
        self.process.take().expect("running").terminate()
    }

    /// Starts the binary again, on the same port.
    pub fn restart(&mut self) {
        assert!(self.process.is_none(), "stop it first");
        self.spawn();
    }

    /// Whether the process is still running (not crashed, not exited).
    pub fn is_running(&mut self) -> bool {
        self.process
            .as_mut()
            .is_some_and(|process| process.is_running())
    }

    /// Resident memory of the process, in KiB.
    pub fn rss_kib(&self) -> u64 {
        self.proc_status_kib("VmRSS:")
    }

    /// Peak resident memory of the process since it started (`VmHWM`), in KiB.
    pub fn peak_rss_kib(&self) -> u64 {
        self.proc_status_kib("VmHWM:")
    }

    fn proc_status_kib(&self, field: &str) -> u64 {
        self.process
            .as_ref()
            .expect("running")
            .proc_status_kib(field)
            .unwrap_or_else(|| panic!("{field} in /proc status"))
    }
}

pub async fn wait_ready(http: &reqwest::Client, url: &str, within: Duration) {
    eventually(within, &format!("{url} to be ready"), || async {
        (readiness(http, url).await == 200).then_some(())
    })
    .await;
}
