//! KEDA's monitoring user checked on a real RabbitMQ node with the management plugin.

use std::{
    collections::BTreeMap,
    path::Path,
    process::{Command, Stdio},
};

use serde_json::Value;

use crate::render::{consumer_config, named, of_kind, render, the_scaled_object};

/// A RabbitMQ node of the test's own with the management plugin, beside the machine's broker: its own
/// name, ports, data and Erlang cookie under a temporary directory, stopped and removed on drop.
struct ManagementNode {
    dir: std::path::PathBuf,
    name: String,
    pub api: String,
}

impl ManagementNode {
    fn start() -> Self {
        let free = || {
            std::net::TcpListener::bind("127.0.0.1:0")
                .unwrap()
                .local_addr()
                .unwrap()
                .port()
        };
        let (amqp, http, dist) = (free(), free(), free());
        let dir = std::env::temp_dir().join(format!("keda-user-{}", uuid::Uuid::new_v4().simple()));
        std::fs::create_dir_all(dir.join("home")).unwrap();
        std::fs::write(
            dir.join("rabbitmq.conf"),
            format!(
                "listeners.tcp.default = 127.0.0.1:{amqp}\nmanagement.tcp.ip = 127.0.0.1\n\
                 management.tcp.port = {http}\n"
            ),
        )
        .unwrap();
        std::fs::write(dir.join("enabled_plugins"), "[rabbitmq_management].\n").unwrap();
        std::fs::write(dir.join("env.conf"), "").unwrap();
        let node = Self {
            name: format!("rabbit-keda-{amqp}@localhost"),
            api: format!("http://127.0.0.1:{http}/api"),
            dir,
        };
        let started = node
            .command("rabbitmq-server")
            .arg("-detached")
            .env("RABBITMQ_NODE_PORT", amqp.to_string())
            .env("RABBITMQ_DIST_PORT", dist.to_string())
            .status()
            .expect("RabbitMQ's rabbitmq-server (the distribution's package)");
        assert!(started.success(), "rabbitmq-server -detached");
        // `await_startup` fails at once until the node has registered with epmd: poll it.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(120);
        while !node.ctl(&["await_startup", "--timeout", "5"]) {
            assert!(
                std::time::Instant::now() < deadline,
                "node {} did not start",
                node.name
            );
            std::thread::sleep(std::time::Duration::from_millis(500));
        }
        node
    }

    fn command(&self, program: &str) -> Command {
        let mut command = Command::new(Path::new("/usr/lib/rabbitmq/bin").join(program));
        command
            .env("HOME", self.dir.join("home"))
            .env("RABBITMQ_NODENAME", &self.name)
            .env("RABBITMQ_USE_LONGNAME", "false")
            .env("RABBITMQ_MNESIA_BASE", self.dir.join("mnesia"))
            .env("RABBITMQ_LOG_BASE", self.dir.join("log"))
            .env("RABBITMQ_PID_FILE", self.dir.join("pid"))
            .env(
                "RABBITMQ_ENABLED_PLUGINS_FILE",
                self.dir.join("enabled_plugins"),
            )
            .env("RABBITMQ_CONF_ENV_FILE", self.dir.join("env.conf"))
            .env("RABBITMQ_CONFIG_FILE", self.dir.join("rabbitmq"))
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        command
    }

    fn ctl(&self, args: &[&str]) -> bool {
        self.command("rabbitmqctl")
            .args(["-n", &self.name])
            .args(args)
            .status()
            .is_ok_and(|status| status.success())
    }
}

impl Drop for ManagementNode {
    fn drop(&mut self) {
        self.ctl(&["stop"]);
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// KEDA's user, made as the overlay's `User` and `Permission` make it (its tags and permissions, read
/// from the render), on a real RabbitMQ with the management plugin, asks the management API what KEDA's
/// RabbitMQ scaler asks (`GET /api/queues/<vhost>?use_regex=true&name=<queueName>`): it must see every
/// queue the consumer drains with its messages, not the dead letters, and be refused the messages
/// themselves and any publish.
#[tokio::test]
#[ignore = "renders kube/ with kubectl and starts a RabbitMQ node; run by scripts/check-manifests"]
async fn the_keda_monitoring_user_reads_the_queue_lengths_it_scales_on_and_nothing_else() {
    // Arrange: the user as the overlay declares it, and the consumer's queues with one message each.
    let objects = render("kube/overlays/keda");
    let user = named(&objects, "User", "message-queue-keda").expect("KEDA's User");
    let permission = of_kind(&objects, "Permission")
        .into_iter()
        .find(|p| p["spec"]["userReference"]["name"] == "message-queue-keda")
        .expect("KEDA's Permission");
    let tags: Vec<&str> = user["spec"]["tags"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t.as_str().unwrap())
        .collect();
    let vhost = permission["spec"]["vhost"].as_str().unwrap();
    let rights = &permission["spec"]["permissions"];
    let regex = the_scaled_object(&objects)["spec"]["triggers"][0]["metadata"]["queueName"]
        .as_str()
        .unwrap()
        .to_owned();
    let topology = consumer_config(&objects).broker.topology();

    let node = ManagementNode::start();
    assert!(node.ctl(&["add_user", "admin", "admin-password"]));
    assert!(node.ctl(&["set_user_tags", "admin", "administrator"]));
    assert!(node.ctl(&["set_permissions", "-p", vhost, "admin", ".*", ".*", ".*"]));
    assert!(node.ctl(&["add_user", "keda", "keda-password"]));
    let mut set_tags = vec!["set_user_tags", "keda"];
    set_tags.extend(&tags);
    assert!(node.ctl(&set_tags));
    assert!(node.ctl(&[
        "set_permissions",
        "-p",
        vhost,
        "keda",
        rights["configure"].as_str().unwrap(),
        rights["write"].as_str().unwrap(),
        rights["read"].as_str().unwrap(),
    ]));
    let http = reqwest::Client::new();
    let encoded_vhost = vhost.replace('/', "%2F");
    let mut queues: Vec<String> = topology
        .drained_queues()
        .into_iter()
        .map(str::to_owned)
        .collect();
    queues.push(topology.dead_letter_queue().to_owned());
    for queue in &queues {
        let declared = http
            .put(format!("{}/queues/{encoded_vhost}/{queue}", node.api))
            .basic_auth("admin", Some("admin-password"))
            .json(&serde_json::json!({"durable": true}))
            .send()
            .await
            .unwrap();
        assert!(declared.status().is_success(), "declare {queue}");
        let published: Value = http
            .post(format!(
                "{}/exchanges/{encoded_vhost}/amq.default/publish",
                node.api
            ))
            .basic_auth("admin", Some("admin-password"))
            .json(&serde_json::json!({"properties": {}, "routing_key": queue,
                "payload": "x", "payload_encoding": "string"}))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert_eq!(published["routed"], true, "{queue}");
    }

    // Act: KEDA's question, until the broker's statistics have caught up with the publishes.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    let counted = loop {
        let answer = http
            .get(format!("{}/queues/{encoded_vhost}", node.api))
            .query(&[
                ("page", "1"),
                ("use_regex", "true"),
                ("pagination", "false"),
                ("page_size", "500"),
                ("name", regex.as_str()),
            ])
            .basic_auth("keda", Some("keda-password"))
            .send()
            .await
            .unwrap();
        assert!(answer.status().is_success(), "KEDA's query: {answer:?}");
        let body: Value = answer.json().await.unwrap();
        let items = body["items"].as_array().cloned().unwrap_or_default();
        let counted: BTreeMap<String, u64> = items
            .iter()
            .map(|q| {
                (
                    q["name"].as_str().unwrap().to_owned(),
                    q["messages"].as_u64().unwrap_or(0),
                )
            })
            .collect();
        if counted.values().sum::<u64>() == queues.len() as u64 - 1
            || std::time::Instant::now() > deadline
        {
            break counted;
        }
        tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    };
    let read = http
        .post(format!(
            "{}/queues/{encoded_vhost}/{}/get",
            node.api, queues[0]
        ))
        .basic_auth("keda", Some("keda-password"))
        .json(&serde_json::json!({"count": 1, "ackmode": "ack_requeue_true", "encoding": "auto"}))
        .send()
        .await
        .unwrap();
    let publish = http
        .post(format!(
            "{}/exchanges/{encoded_vhost}/amq.default/publish",
            node.api
        ))
        .basic_auth("keda", Some("keda-password"))
        .json(
            &serde_json::json!({"properties": {}, "routing_key": queues[0],
            "payload": "x", "payload_encoding": "string"}),
        )
        .send()
        .await
        .unwrap();
    let (read_status, publish_status) = (read.status(), publish.status());
    let publish_body = publish.text().await.unwrap_or_default();
    drop(node);

    // Assert
    let drained: Vec<&String> = queues[..queues.len() - 1].iter().collect();
    assert_eq!(
        counted.keys().collect::<Vec<_>>(),
        {
            let mut sorted = drained.clone();
            sorted.sort();
            sorted
        },
        "KEDA sees exactly the drained queues"
    );
    assert!(
        counted.values().all(|&messages| messages == 1),
        "{counted:?}"
    );
    assert!(
        read_status.is_client_error(),
        "reading messages: {read_status}"
    );
    assert!(
        publish_status.is_client_error() || publish_body.contains("ACCESS_REFUSED"),
        "publishing: {publish_status} {publish_body}"
    );
}
