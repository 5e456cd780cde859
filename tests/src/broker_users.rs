//! Broker users and policies for one test, made with `rabbitmqctl` on the machine's broker and removed
//! when dropped, so that tests can run a service as a user with only the permissions it is documented
//! to need, and put the limits the setup step applies on their own queues.

use std::process::Command;

use common::amqp::Permissions;
use uuid::Uuid;

/// A user of the test broker's `/` virtual host with a random name and password.
pub struct BrokerUser {
    pub name: String,
    password: String,
}

/// `rabbitmqctl`, which reads the broker's Erlang cookie: as root, or through `sudo -n` otherwise.
fn ctl() -> Command {
    // SAFETY: geteuid has no preconditions and cannot fail.
    if unsafe { libc::geteuid() } == 0 {
        Command::new("rabbitmqctl")
    } else {
        let mut sudo = Command::new("sudo");
        sudo.args(["-n", "rabbitmqctl"]);
        sudo
    }
}

fn rabbitmqctl(args: &[&str]) {
    let output = ctl()
        .args(args)
        .output()
        .expect("rabbitmqctl runs (the broker's own command-line tool)");
    assert!(
        output.status.success(),
        "rabbitmqctl {args:?}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
}

impl BrokerUser {
    /// Creates the user with `permissions` on `/`.
    pub fn create(role: &str, permissions: &Permissions) -> Self {
        let suffix = Uuid::new_v4().simple().to_string();
        let user = Self {
            name: format!("test-{role}-{}", &suffix[..12]),
            password: suffix,
        };
        rabbitmqctl(&["add_user", &user.name, &user.password]);
        user.grant(permissions);
        user
    }

    /// Replaces the user's permissions on `/` with `permissions`.
    pub fn grant(&self, permissions: &Permissions) {
        rabbitmqctl(&[
            "set_permissions",
            "-p",
            "/",
            &self.name,
            &permissions.configure,
            &permissions.write,
            &permissions.read,
        ]);
    }

    /// The `AMQP_URL` of this user on the test broker.
    pub fn url(&self) -> String {
        let address = crate::url_address(&crate::amqp_url());
        format!(
            "amqp://{}:{}@{}:{}/%2f",
            self.name,
            self.password,
            address.ip(),
            address.port()
        )
    }
}

impl Drop for BrokerUser {
    fn drop(&mut self) {
        let _ = ctl().args(["delete_user", &self.name]).output();
    }
}

/// A policy on the test broker's `/` virtual host, cleared when dropped.
pub struct BrokerPolicy {
    name: String,
}

impl BrokerPolicy {
    /// Applies `policy` to the queues it matches.
    pub fn apply(policy: &common::amqp::Policy) -> Self {
        set_policy(policy);
        Self {
            name: policy.name.clone(),
        }
    }

    /// Replaces the policy with `policy`, which must have the same name.
    pub fn replace(&self, policy: &common::amqp::Policy) {
        assert_eq!(policy.name, self.name, "a policy replaces one of its name");
        set_policy(policy);
    }
}

fn set_policy(policy: &common::amqp::Policy) {
    rabbitmqctl(&[
        "set_policy",
        "--apply-to",
        "queues",
        &policy.name,
        &policy.pattern,
        &policy.definition.to_string(),
    ]);
}

/// `messages` of `queue` as the broker reports it: ready, unacknowledged, and (for a quorum queue) the
/// dead-lettered messages it keeps until their target queue takes them. The broker refreshes these
/// figures every few seconds.
pub fn broker_message_count(queue: &str) -> Option<u64> {
    let output = ctl()
        .args([
            "list_queues",
            "-q",
            "--no-table-headers",
            "name",
            "messages",
        ])
        .output()
        .ok()?;
    String::from_utf8_lossy(&output.stdout)
        .lines()
        .filter_map(|line| line.split_once('\t'))
        .find(|(name, _)| *name == queue)
        .and_then(|(_, count)| count.trim().parse().ok())
}

impl Drop for BrokerPolicy {
    fn drop(&mut self) {
        let _ = ctl().args(["clear_policy", &self.name]).output();
    }
}
