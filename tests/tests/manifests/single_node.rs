//! The single-node stack and the compose file: the broker's plugins, the consumer's database role,
//! loopback-only ports, volumes and drains.

use std::path::Path;

use serde_json::Value;

use crate::render::{environment, first_container, named, of_kind, render};

#[test]
#[ignore = "renders kube/ with kubectl; run by scripts/check-manifests"]
fn the_single_node_broker_loads_the_hash_exchange_plugin() {
    let objects = render("kube");
    let broker = named(&objects, "Deployment", "rabbitmq").expect("the broker's Deployment");
    let mount = first_container(broker)["volumeMounts"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|m| m["mountPath"] == "/etc/rabbitmq/enabled_plugins")
        .expect("enabled_plugins is mounted");
    let volume = broker["spec"]["template"]["spec"]["volumes"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|v| v["name"] == mount["name"])
        .expect("the mounted volume exists");
    let config_map = volume["configMap"]["name"].as_str().expect("a ConfigMap");
    let plugins = named(&objects, "ConfigMap", config_map).expect("the ConfigMap exists");
    let file = plugins["data"][mount["subPath"].as_str().expect("a file of it")]
        .as_str()
        .expect("the file is in the ConfigMap");
    assert!(
        file.contains(common::amqp::CONSISTENT_HASH_PLUGIN),
        "{file}"
    );
}

/// The compose file publishes every port on loopback only: its PostgreSQL trusts every connection and its
/// management UI has the default user, so neither may be reachable from the network.
#[test]
fn the_compose_file_publishes_every_port_on_loopback_only() {
    let text = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../docker-compose.yml"
    ))
    .expect("docker-compose.yml");
    let compose: Value = serde_yaml_ng::from_str(&text).expect("valid YAML");
    let services = compose["services"].as_object().expect("services");
    let mut published = 0;
    for (name, service) in services {
        for port in service["ports"].as_array().into_iter().flatten() {
            let port = port.as_str().expect("short port syntax");
            assert!(
                port.starts_with("127.0.0.1:"),
                "{name} publishes {port} beyond loopback"
            );
            published += 1;
        }
    }
    assert_eq!(published, 5, "the five ports of the stack");
}

/// On minikube the consumer logs in to PostgreSQL as its own role, which the database's first start
/// creates without superuser, database or role rights, owning the `messages` database so its
/// migrations apply; the password it uses is the one the role is created with.
#[test]
fn the_single_node_consumer_uses_a_role_of_its_own_that_is_not_a_superuser() {
    let objects = render("kube");
    let consumer = named(&objects, "Deployment", "message-consumer").expect("consumer");
    let url = environment(&objects, consumer)["DATABASE_URL"]
        .clone()
        .expect("a DATABASE_URL");
    let (user, rest) = url
        .trim_start_matches("postgres://")
        .split_once(':')
        .expect("user and password");
    let password = rest.split_once('@').expect("a host").0;
    assert_ne!(user, "postgres", "the consumer is not the superuser");

    let database = named(&objects, "Deployment", "postgresql").expect("postgresql");
    let mounted = first_container(database)["volumeMounts"]
        .as_array()
        .expect("mounts")
        .iter()
        .find(|m| m["mountPath"] == "/docker-entrypoint-initdb.d")
        .expect("an init script directory");
    let volume = database["spec"]["template"]["spec"]["volumes"]
        .as_array()
        .expect("volumes")
        .iter()
        .find(|v| v["name"] == mounted["name"])
        .expect("the mounted volume");
    let config_map = volume["configMap"]["name"].as_str().expect("a ConfigMap");
    let script = named(&objects, "ConfigMap", config_map).expect("the init script's ConfigMap")
        ["data"]
        .as_object()
        .expect("data")
        .values()
        .map(|v| v.as_str().unwrap_or_default().to_owned())
        .collect::<String>();
    assert!(
        script.contains(&format!(
            "CREATE ROLE {user} LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE"
        )),
        "{script}"
    );
    assert!(script.contains(&format!("OWNER TO {user}")), "{script}");
    let secret_password = environment(&objects, database)["MESSAGES_PASSWORD"]
        .clone()
        .expect("the role's password in the database's environment");
    assert_eq!(
        secret_password, password,
        "the role is created with the password the consumer uses"
    );
}

/// The single-node stack can run twice in one cluster and survives a drain: no cluster-wide
/// PersistentVolume, claims on the default StorageClass, two consumers of which a drain leaves one, and
/// the `preStop` `sleep` action checked against a Kubernetes version that has it (1.30 or later).
#[test]
#[ignore = "renders kube/ with kubectl; run by scripts/check-manifests"]
fn single_node_stack_uses_dynamic_volumes_and_keeps_a_consumer_through_a_drain() {
    let objects = render("kube");
    assert!(of_kind(&objects, "PersistentVolume").is_empty());
    for claim in of_kind(&objects, "PersistentVolumeClaim") {
        assert!(claim["spec"]["storageClassName"].is_null(), "{claim}");
        assert!(claim["spec"]["volumeName"].is_null(), "{claim}");
    }
    let hpa = named(&objects, "HorizontalPodAutoscaler", "message-consumer").unwrap();
    assert!(hpa["spec"]["minReplicas"].as_u64().unwrap() >= 2);
    let pdb = named(&objects, "PodDisruptionBudget", "message-consumer").unwrap();
    assert_eq!(pdb["spec"]["minAvailable"], 1);

    let uses_sleep = of_kind(&objects, "Deployment").iter().any(|d| {
        d["spec"]["template"]["spec"]["containers"]
            .as_array()
            .unwrap()
            .iter()
            .any(|c| c["lifecycle"]["preStop"]["sleep"].is_object())
    });
    let script = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../scripts/check-manifests"),
    )
    .unwrap();
    let version = script
        .lines()
        .find_map(|line| line.strip_prefix("KUBERNETES_VERSION="))
        .expect("check-manifests names the Kubernetes version");
    let minor: u32 = version.split('.').nth(1).unwrap().parse().unwrap();
    assert!(
        !uses_sleep || minor >= 30,
        "preStop sleep needs 1.30, checked against {version}"
    );
}
