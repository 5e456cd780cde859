//! The three broker nodes of `scripts/cluster`: their processes (for SIGKILL and SIGSTOP), `rabbitmqctl`
//! on one chosen node (with the cluster's own Erlang cookie, kept in its `HOME`), and the script itself to
//! start a node again.

use std::{path::PathBuf, process::Command};

use anyhow::Context;

use super::net::output;

pub const NODES: [usize; 3] = [1, 2, 3];

pub struct Broker {
    repo: PathBuf,
}

impl Broker {
    pub fn new(repo: PathBuf) -> Self {
        Self { repo }
    }

    /// Node `n`'s AMQP port (`scripts/cluster`: 5680 + n, or `CLUSTER_PORT_BASE` + n).
    pub fn port(n: usize) -> u16 {
        let base: u16 = std::env::var("CLUSTER_PORT_BASE")
            .ok()
            .and_then(|base| base.parse().ok())
            .unwrap_or(5680);
        base + n as u16
    }

    fn dir(&self) -> PathBuf {
        self.repo.join(".run/cluster")
    }

    pub fn pid(&self, n: usize) -> Option<i32> {
        std::fs::read_to_string(self.dir().join(format!("node{n}/pid")))
            .ok()?
            .trim()
            .parse()
            .ok()
    }

    pub fn signal(&self, n: usize, signal: i32) -> anyhow::Result<()> {
        let pid = self.pid(n).context("the node's pid file")?;
        // SAFETY: signalling a broker node of the soak's cluster.
        if unsafe { libc::kill(pid, signal) } != 0 {
            anyhow::bail!("node {n} (pid {pid}) is not running");
        }
        Ok(())
    }

    fn script(&self, args: &[&str]) -> anyhow::Result<String> {
        output(Command::new(self.repo.join("scripts/cluster")).args(args))
    }

    /// Starts node `n` again (it rejoins by itself) and waits until it has booted.
    pub fn restart(&self, n: usize) -> anyhow::Result<()> {
        self.script(&["restart", &n.to_string()]).map(drop)
    }

    /// `rabbitmqctl args` on node `n`.
    pub fn ctl(&self, n: usize, args: &[&str]) -> anyhow::Result<String> {
        output(
            Command::new("/usr/lib/rabbitmq/bin/rabbitmqctl")
                .env("HOME", self.dir().join("home"))
                .args(["-n", &format!("rabbit-cluster-{n}@localhost"), "-q"])
                .args(args),
        )
    }

    /// Messages (ready and unacknowledged) in every queue whose name starts with `prefix`.
    pub fn queue_messages(&self, prefix: &str) -> anyhow::Result<Vec<(String, u64)>> {
        let listed = self.script(&[
            "ctl",
            "-q",
            "list_queues",
            "--no-table-headers",
            "name",
            "messages",
        ])?;
        Ok(listed
            .lines()
            .filter_map(|line| {
                let (name, count) = line.split_once(char::is_whitespace)?;
                let count = count.trim().parse().ok()?;
                name.starts_with(prefix).then(|| (name.to_owned(), count))
            })
            .collect())
    }

    /// Every node continued, running, and without a memory alarm.
    pub fn restore(&self) -> anyhow::Result<()> {
        for n in NODES {
            let _ = self.signal(n, libc::SIGCONT);
        }
        self.script(&["start"])?;
        for n in NODES {
            self.ctl(n, &["set_vm_memory_high_watermark", "0.4"])?;
        }
        Ok(())
    }
}
