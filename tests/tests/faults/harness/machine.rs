//! The machine's RabbitMQ and PostgreSQL, and the three-node cluster of `scripts/cluster`, each put back
//! as it was when dropped.

use std::{
    path::PathBuf,
    process::{Command, Stdio},
    time::{Duration, Instant},
};

/// The machine's RabbitMQ and PostgreSQL. Dropping it starts both again, whatever state a failed
/// scenario left them in.
pub struct Machine;

fn run(program: &str, args: &[&str]) -> bool {
    Command::new(program)
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

fn postgres_version() -> String {
    std::fs::read_dir("/etc/postgresql")
        .expect("PostgreSQL from the distribution's package")
        .filter_map(|entry| entry.ok()?.file_name().into_string().ok())
        .max()
        .expect("a cluster")
}

impl Machine {
    pub fn stop_broker_app(&self) {
        assert!(run("rabbitmqctl", &["stop_app"]), "rabbitmqctl stop_app");
    }

    pub fn start_broker_app(&self) {
        assert!(run("rabbitmqctl", &["start_app"]), "rabbitmqctl start_app");
    }

    /// Stops the whole Erlang node, as a crash or a host restart would.
    pub fn stop_broker_node(&self) {
        assert!(run("rabbitmqctl", &["stop"]), "rabbitmqctl stop");
    }

    pub fn start_broker_node(&self) {
        run("rabbitmq-server", &["-detached"]);
        let deadline = Instant::now() + Duration::from_secs(90);
        while !run("rabbitmqctl", &["await_startup"]) {
            assert!(Instant::now() < deadline, "RabbitMQ did not come back");
            std::thread::sleep(Duration::from_millis(500));
        }
    }

    pub fn stop_database(&self) {
        let version = postgres_version();
        assert!(run(
            "pg_ctlcluster",
            &[
                "--skip-systemctl-redirect",
                &version,
                "main",
                "stop",
                "-m",
                "fast"
            ]
        ));
    }

    pub fn start_database(&self) {
        let version = postgres_version();
        run(
            "pg_ctlcluster",
            &["--skip-systemctl-redirect", &version, "main", "start"],
        );
    }

    /// Puts back the watermark `scripts/fault-suite` found (`BROKER_MEMORY_WATERMARK`: a fraction, or
    /// `absolute <bytes>`), or RabbitMQ's default 0.4 when run without it.
    pub fn restore_memory_watermark(&self) {
        let found = std::env::var("BROKER_MEMORY_WATERMARK").unwrap_or_else(|_| "0.4".into());
        let mut args = vec!["set_vm_memory_high_watermark"];
        args.extend(found.split_whitespace());
        assert!(run("rabbitmqctl", &args), "watermark {found} put back");
    }

    pub fn set_memory_watermark(&self, fraction: &str) {
        assert!(run(
            "rabbitmqctl",
            &["set_vm_memory_high_watermark", fraction]
        ));
    }
}

impl Drop for Machine {
    fn drop(&mut self) {
        self.restore_memory_watermark();
        // Running, or only the app stopped (start it), or the whole node down (start the node).
        if !run("rabbitmqctl", &["await_startup", "--timeout", "2"])
            && !run("rabbitmqctl", &["start_app"])
        {
            self.start_broker_node();
        }
        self.start_database();
    }
}

/// The three-node RabbitMQ cluster of `scripts/cluster`, which `scripts/fault-suite` starts and names in
/// `CLUSTER_AMQP_URL`. Dropping it starts every node that is down again, whatever a failed scenario left.
pub struct Cluster {
    pub url: String,
}

fn cluster_script(args: &[&str]) -> std::process::Output {
    Command::new(PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../scripts/cluster"))
        .args(args)
        .stderr(Stdio::inherit())
        .output()
        .expect("scripts/cluster runs")
}

impl Cluster {
    pub fn get() -> Self {
        let url = std::env::var("CLUSTER_AMQP_URL").expect(
            "CLUSTER_AMQP_URL names the nodes of scripts/cluster; scripts/fault-suite starts it and sets it",
        );
        Self { url }
    }

    /// SIGKILL to node `n` (1-3), as a crash would.
    pub fn kill(&self, n: usize) {
        assert!(cluster_script(&["kill", &n.to_string()]).status.success());
    }

    /// Starts node `n` again and waits until it has booted and rejoined.
    pub fn restart(&self, n: usize) {
        assert!(cluster_script(&["restart", &n.to_string()])
            .status
            .success());
    }

    /// How many nodes run.
    pub fn running(&self) -> usize {
        let status = cluster_script(&["status"]);
        String::from_utf8_lossy(&status.stdout)
            .lines()
            .filter(|line| line.starts_with("node ") && line.ends_with(" running"))
            .count()
    }

    /// The node (1-3) that leads the most of `queues`, and how many it leads.
    pub fn node_leading_most(&self, queues: &[String]) -> (usize, usize) {
        let listed = cluster_script(&[
            "ctl",
            "-q",
            "list_queues",
            "--no-table-headers",
            "name",
            "leader",
        ]);
        assert!(listed.status.success(), "list_queues");
        let mut led = [0usize; 4];
        for line in String::from_utf8_lossy(&listed.stdout).lines() {
            let mut fields = line.split_whitespace();
            let (Some(name), Some(leader)) = (fields.next(), fields.next()) else {
                continue;
            };
            if queues.iter().any(|queue| queue == name) {
                let node = (1..=3)
                    .find(|n| leader.starts_with(&format!("rabbit-cluster-{n}@")))
                    .unwrap_or_else(|| panic!("leader {leader} is not a node of the cluster"));
                led[node] += 1;
            }
        }
        (1..=3)
            .map(|n| (n, led[n]))
            .max_by_key(|&(_, count)| count)
            .unwrap()
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        let _ = cluster_script(&["start"]);
    }
}
