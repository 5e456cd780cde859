//! Starting a service binary as a child process on a port of its own choosing. Picking a free port in the
//! test and handing it over would race with tests running in parallel: another could bind it first. The
//! service binds port 0 instead and its "listening" log line says which port it got.

use std::{
    io::{BufRead, BufReader},
    process::{Child, Command, Stdio},
    sync::{mpsc, Arc, Mutex},
    time::Duration,
};

/// Spawns `command` (a `publisher` or `consumer` binary, or one built from them) with `HTTP_PORT`, or
/// `port` when it is given (to start it again where it was), and returns the child and its port. Its
/// log goes to a thread that reads it, so that a full pipe never blocks the service.
pub fn spawn_listening(command: Command, port: Option<u16>) -> (Child, u16) {
    let (child, port, _) = spawn_logged(command, port, "warn,publisher=info,consumer=info");
    (child, port)
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

/// [`spawn_listening`] with the log filter `rust_log`, keeping every line it writes.
pub fn spawn_logged(
    mut command: Command,
    port: Option<u16>,
    rust_log: &str,
) -> (Child, u16, LogLines) {
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
    (child, port, logs)
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
