//! A service binary (`publisher`, `consumer`, or one built from them) as a child process: the one way
//! the tests and the benchmark start one, signal it, read what it spent and stop it.
//!
//! On loopback the service binds port 0 and its "listening" log line says which port it got: picking a
//! free port here and handing it over would race with tests running in parallel, as another could bind
//! it first.

use std::{
    fs::File,
    io::{BufRead, BufReader},
    path::PathBuf,
    process::{Child, Command, ExitStatus, Stdio},
    sync::{mpsc, Arc, Mutex},
    time::{Duration, Instant},
};

/// The log filter that keeps the services' own lifecycle lines (among them "listening") and the
/// warnings of everything else.
pub const SERVICE_LOG: &str = "warn,publisher=info,consumer=info";

/// A release binary of the workspace: from `SERVICE_BIN_DIR`, else the workspace's `target/release`.
pub fn release_binary(name: &str) -> anyhow::Result<PathBuf> {
    let dir = std::env::var_os("SERVICE_BIN_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target/release"));
    let path = dir.join(name);
    anyhow::ensure!(
        path.exists(),
        "{} is missing: build with `cargo build --release`",
        path.display()
    );
    Ok(path)
}

/// Every JSON log line a child process has written so far.
#[derive(Clone, Default)]
pub struct LogLines(Arc<Mutex<Vec<String>>>);

impl LogLines {
    /// The lines written so far, parsed (lines that are not JSON are left out).
    pub fn events(&self) -> Vec<serde_json::Value> {
        self.0
            .lock()
            .expect("log lock")
            .iter()
            .filter_map(|line| serde_json::from_str(line).ok())
            .collect()
    }
}

/// A running service binary, killed and reaped when dropped.
pub struct ServiceProcess {
    child: Child,
    /// Set once the child is reaped: its pid may then belong to another process, so no signal is sent.
    exited: Option<ExitStatus>,
    port: u16,
    logs: LogLines,
}

impl ServiceProcess {
    /// Spawns `command` on 127.0.0.1 with `HTTP_PORT` 0, or `port` when it is given (to start it again
    /// where it was), logging JSON with the filter `rust_log`, and waits until it says which port it
    /// listens on. Its log goes to a thread that keeps every line, so that a full pipe never blocks it.
    pub fn spawn(mut command: Command, port: Option<u16>, rust_log: &str) -> Self {
        let mut child = command
            .env("HTTP_HOST", "127.0.0.1")
            .env("HTTP_PORT", port.unwrap_or(0).to_string())
            .env("LOG_FORMAT", "json")
            .env("RUST_LOG", rust_log)
            .stdout(Stdio::piped())
            .spawn()
            .expect("service starts");
        let stdout = child.stdout.take().expect("piped stdout");
        let (found, port_of) = mpsc::channel();
        let logs = LogLines::default();
        let kept = logs.clone();
        std::thread::spawn(move || {
            let mut found = Some(found);
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if let Some(port) = listening_port(&line) {
                    if let Some(found) = found.take() {
                        let _ = found.send(port);
                    }
                }
                kept.0.lock().expect("log lock").push(line);
            }
        });
        let port = port_of
            .recv_timeout(Duration::from_secs(30))
            .expect("the service says which port it listens on");
        Self {
            child,
            exited: None,
            port,
            logs,
        }
    }

    /// Spawns `command` listening on `host:port` (inside a network namespace, where the port is the
    /// namespace's own), its standard output and error appended to `log`. It does not wait for it.
    pub fn spawn_logging_to(
        mut command: Command,
        host: &str,
        port: u16,
        rust_log: &str,
        log: File,
    ) -> std::io::Result<Self> {
        let child = command
            .env("HTTP_HOST", host)
            .env("HTTP_PORT", port.to_string())
            .env("LOG_FORMAT", "json")
            .env("RUST_LOG", rust_log)
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()?;
        Ok(Self {
            child,
            exited: None,
            port,
            logs: LogLines::default(),
        })
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// `http://127.0.0.1:<port>`.
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// The lines it has logged (none when they go to a file).
    pub fn logs(&self) -> &LogLines {
        &self.logs
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Sends `signal` (SIGSTOP, SIGCONT, …); whether it was sent.
    pub fn signal(&self, signal: libc::c_int) -> bool {
        if self.exited.is_some() {
            return false;
        }
        // SAFETY: signalling a child this struct owns and has not reaped, so its pid is still its own.
        unsafe { libc::kill(self.child.id() as libc::pid_t, signal) == 0 }
    }

    /// SIGTERM, as Kubernetes sends; returns how the process exited and how long it took.
    pub fn terminate(&mut self) -> (ExitStatus, Duration) {
        let started = Instant::now();
        assert!(self.signal(libc::SIGTERM), "SIGTERM sent");
        (self.wait(), started.elapsed())
    }

    /// SIGKILL, after SIGCONT so that a stopped process dies too; nothing of the service's own shutdown
    /// runs. Then reaped.
    pub fn kill(&mut self) {
        if self.exited.is_none() {
            self.signal(libc::SIGCONT);
            let _ = self.child.kill();
            self.wait();
        }
    }

    /// Waits for the process to exit, and reaps it.
    pub fn wait(&mut self) -> ExitStatus {
        if let Some(status) = self.exited {
            return status;
        }
        let status = self.child.wait().expect("reap the service");
        self.exited = Some(status);
        status
    }

    /// Whether the process still runs (it may be stopped): not crashed, not exited.
    pub fn is_running(&mut self) -> bool {
        if self.exited.is_none() {
            self.exited = self.child.try_wait().ok().flatten();
        }
        self.exited.is_none()
    }

    /// A `kB` field of `/proc/<pid>/status` (`VmRSS:`, `VmHWM:`), if the process still has one.
    pub fn proc_status_kib(&self, field: &str) -> Option<u64> {
        std::fs::read_to_string(format!("/proc/{}/status", self.pid()))
            .ok()?
            .lines()
            .find_map(|line| line.strip_prefix(field))
            .and_then(|rest| rest.trim().trim_end_matches("kB").trim().parse().ok())
    }

    /// CPU time (user + system) it has spent so far, in seconds.
    pub fn cpu_seconds(&self) -> f64 {
        cpu_seconds(&self.pid().to_string())
    }
}

impl Drop for ServiceProcess {
    fn drop(&mut self) {
        self.kill();
    }
}

/// CPU time (user + system) that process `pid` (or `self`) has spent so far, in seconds.
pub fn cpu_seconds(pid: &str) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the command name, which is in parentheses and may contain spaces.
    let after = stat.rsplit_once(')').map_or("", |(_, rest)| rest);
    let fields: Vec<&str> = after.split_whitespace().collect();
    let ticks: f64 = fields.get(11).and_then(|f| f.parse().ok()).unwrap_or(0.0)
        + fields
            .get(12)
            .and_then(|f| f.parse::<f64>().ok())
            .unwrap_or(0.0);
    // SAFETY: a read-only query of a system constant.
    ticks / unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64
}

/// The port of a JSON log line such as `{"message":"consumer listening","port":41234,…}`.
fn listening_port(line: &str) -> Option<u16> {
    let event: serde_json::Value = serde_json::from_str(line).ok()?;
    event["message"]
        .as_str()?
        .ends_with(" listening")
        .then_some(())?;
    u16::try_from(event["port"].as_u64()?).ok()
}
