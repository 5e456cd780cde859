//! Broker users for one test, made with `rabbitmqctl` on the machine's broker and deleted when dropped,
//! so that tests can run a service as a user with only the permissions it is documented to need.

use std::process::Command;

use common::topology::Permissions;
use uuid::Uuid;

/// A user of the test broker's `/` virtual host with a random name and password.
pub struct BrokerUser {
    pub name: String,
    password: String,
}

fn rabbitmqctl(args: &[&str]) {
    let output = Command::new("rabbitmqctl")
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
        rabbitmqctl(&[
            "set_permissions",
            "-p",
            "/",
            &user.name,
            &permissions.configure,
            &permissions.write,
            &permissions.read,
        ]);
        user
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
        let _ = Command::new("rabbitmqctl")
            .args(["delete_user", &self.name])
            .output();
    }
}
