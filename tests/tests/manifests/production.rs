//! The production overlay's broker and database: replication, clustering, disruption budget, backups
//! and listeners.

use std::{collections::BTreeMap, path::Path};

use serde_json::Value;

use crate::policy::broker_pod_of;
use crate::render::{
    environment, named, of_kind, render, selector_selects, NEEDS_KUBECTL, SERVICES,
};

#[test]
#[ignore = "renders kube/ with kubectl; run by scripts/check-manifests"]
fn the_production_database_commits_on_a_synchronous_standby_before_the_consumer_acks() {
    let _ = NEEDS_KUBECTL;
    let objects = render("kube/overlays/production");
    let cluster = named(&objects, "Cluster", "postgresql").expect("a CloudNativePG Cluster");
    let instances = cluster["spec"]["instances"].as_u64().unwrap_or(1);
    let synchronous = &cluster["spec"]["postgresql"]["synchronous"];
    let number = synchronous["number"].as_u64().unwrap_or(0);
    assert!(
        number >= 1,
        "at least one synchronous standby: {synchronous:?}"
    );
    assert!(
        number < instances,
        "{number} synchronous standbys need more than {instances} instances"
    );
    assert_eq!(synchronous["dataDurability"].as_str(), Some("required"));
}

#[test]
#[ignore = "renders kube/ with kubectl; run by scripts/check-manifests"]
fn the_production_broker_is_three_nodes_with_the_hash_exchange_and_both_services_agree_on_shards_and_nodes(
) {
    let objects = render("kube/overlays/production");
    let cluster = named(&objects, "RabbitmqCluster", "rabbitmq").expect("a RabbitmqCluster");
    let replicas = cluster["spec"]["replicas"].as_u64().unwrap_or(1);
    assert_eq!(replicas, 3, "three broker nodes");
    let plugins = &cluster["spec"]["rabbitmq"]["additionalPlugins"];
    assert!(
        plugins
            .as_array()
            .into_iter()
            .flatten()
            .any(|p| p == common::amqp::CONSISTENT_HASH_PLUGIN),
        "the operator enables {}: {plugins:?}",
        common::amqp::CONSISTENT_HASH_PLUGIN
    );
    let settings: Vec<BTreeMap<String, Option<String>>> = SERVICES
        .iter()
        .map(|name| {
            let deployment = named(&objects, "Deployment", name).expect("the Deployment exists");
            environment(&objects, deployment)
        })
        .collect();
    for key in ["QUEUE_SHARDS", "AMQP_URL", "QUEUE_NAME", "QUEUE_TYPE"] {
        assert_eq!(
            settings[0].get(key),
            settings[1].get(key),
            "the publisher and the consumer disagree on {key}"
        );
    }
    let shards: u64 = settings[0]["QUEUE_SHARDS"]
        .as_deref()
        .expect("QUEUE_SHARDS is spelled out")
        .parse()
        .expect("QUEUE_SHARDS is a number");
    assert!(
        shards > 1 && shards.is_multiple_of(replicas),
        "{shards} shards spread evenly over {replicas} nodes"
    );
    // Every node by its own address, each once, through the operator's headless Service.
    let url = settings[0]["AMQP_URL"].as_deref().expect("AMQP_URL is set");
    let hosts: Vec<&str> = common::amqp::node_urls(url)
        .map(|node| {
            let after_at = node.rsplit_once('@').map_or(node, |(_, host)| host);
            after_at.split([':', '/']).next().unwrap_or_default()
        })
        .collect();
    let expected: Vec<String> = (0..replicas)
        .map(|i| format!("rabbitmq-server-{i}.rabbitmq-nodes"))
        .collect();
    assert_eq!(hosts, expected, "AMQP_URL names every node");
}

/// The production broker keeps a majority through voluntary disruptions (the Cluster Operator makes no
/// disruption budget of its own), the operators reach the management API's name on the broker's
/// certificate with the broker's authority (the patch for the Messaging Topology Operator), the images
/// are exact versions, and both overlays share one namespace.
#[test]
#[ignore = "renders kube/ with kubectl; run by scripts/check-manifests"]
fn production_broker_has_a_disruption_budget_pinned_images_and_one_namespace() {
    let objects = render("kube/overlays/production");
    let (_, broker) = broker_pod_of(&objects);
    let budgets: Vec<&Value> = of_kind(&objects, "PodDisruptionBudget")
        .into_iter()
        .filter(|pdb| selector_selects(&pdb["spec"]["selector"], &broker.labels))
        .collect();
    assert_eq!(budgets.len(), 1, "one budget for the broker's pods");
    assert_eq!(budgets[0]["spec"]["maxUnavailable"], 1);
    assert_eq!(
        named(&objects, "RabbitmqCluster", "rabbitmq").unwrap()["spec"]["replicas"],
        3
    );

    let exact = |image: &str| {
        let tag = image.rsplit_once(':').map_or("", |(_, tag)| tag);
        let version = tag.split('-').next().unwrap_or_default();
        version.split('.').count() >= 2 && version.split('.').all(|p| p.parse::<u32>().is_ok())
    };
    let rabbitmq = named(&objects, "RabbitmqCluster", "rabbitmq").unwrap()["spec"]["image"]
        .as_str()
        .expect("the broker's image is set, not the operator's default");
    assert!(exact(rabbitmq) && rabbitmq.contains(":4."), "{rabbitmq}");
    let postgresql = of_kind(&objects, "Cluster")[0]["spec"]["imageName"]
        .as_str()
        .expect("the database's image is set, not the operator's default");
    assert!(exact(postgresql), "{postgresql}");
    for container in of_kind(&render("kube"), "Deployment")
        .into_iter()
        .flat_map(|d| {
            let spec = &d["spec"]["template"]["spec"];
            spec["initContainers"]
                .as_array()
                .into_iter()
                .chain(spec["containers"].as_array())
                .flatten()
                .cloned()
                .collect::<Vec<_>>()
        })
    {
        let image = container["image"].as_str().unwrap();
        assert!(exact(image), "{image} is not an exact version");
    }

    let namespace =
        &named(&objects, "Deployment", "message-consumer").unwrap()["metadata"]["namespace"];
    assert!(namespace.is_string());
    for object in objects.iter().chain(render("kube/overlays/keda").iter()) {
        assert_eq!(
            &object["metadata"]["namespace"], namespace,
            "{} {}",
            object["kind"], object["metadata"]["name"]
        );
    }

    let patch: Value = serde_yaml_ng::from_str(
        &std::fs::read_to_string(
            Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("../kube/operators/messaging-topology-operator-ca-patch.yaml"),
        )
        .unwrap(),
    )
    .unwrap();
    assert_eq!(patch["metadata"]["name"], "messaging-topology-operator");
    assert_eq!(patch["metadata"]["namespace"], "rabbitmq-system");
    let spec = &patch["spec"]["template"]["spec"];
    let mount = &spec["containers"][0]["volumeMounts"][0];
    assert_eq!(spec["containers"][0]["name"], "manager");
    assert!(mount["mountPath"]
        .as_str()
        .unwrap()
        .starts_with("/etc/ssl/certs/"));
    let volume = spec["volumes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|v| v["name"] == mount["name"])
        .expect("the mounted volume");
    assert_eq!(volume["secret"]["items"][0]["key"], mount["subPath"]);
    assert_eq!(mount["subPath"], "ca.crt");
}

/// WAL is archived and base backups are taken to an object store whose credentials a Secret gives:
/// the Cluster archives through the Barman Cloud plugin to the ObjectStore of the overlay, and a
/// ScheduledBackup of that cluster uses the same plugin.
#[test]
#[ignore = "renders kube/ with kubectl; run by scripts/check-manifests"]
fn production_database_archives_wal_and_backs_up_nightly_to_the_object_store() {
    let objects = render("kube/overlays/production");
    let cluster = named(&objects, "Cluster", "postgresql").unwrap();
    let plugin = cluster["spec"]["plugins"]
        .as_array()
        .expect("plugins")
        .iter()
        .find(|p| p["name"] == "barman-cloud.cloudnative-pg.io")
        .expect("the Barman Cloud plugin");
    assert_eq!(plugin["isWALArchiver"], true);
    let store_name = plugin["parameters"]["barmanObjectName"].as_str().unwrap();
    let store = named(&objects, "ObjectStore", store_name).expect("the ObjectStore it names");
    let configuration = &store["spec"]["configuration"];
    assert!(configuration["destinationPath"].is_string());
    for key in ["accessKeyId", "secretAccessKey"] {
        assert_eq!(
            configuration["s3Credentials"][key]["name"], "postgresql-backup-credentials",
            "{key}"
        );
    }
    assert!(store["spec"]["retentionPolicy"].is_string());
    let backup = of_kind(&objects, "ScheduledBackup")[0];
    assert_eq!(backup["spec"]["cluster"]["name"], "postgresql");
    assert_eq!(backup["spec"]["method"], "plugin");
    assert_eq!(
        backup["spec"]["pluginConfiguration"]["name"],
        "barman-cloud.cloudnative-pg.io"
    );
    assert_eq!(
        backup["spec"]["schedule"]
            .as_str()
            .unwrap()
            .split(' ')
            .count(),
        6,
        "CloudNativePG's schedules start with seconds"
    );
}

/// The production broker opens no plaintext listener: TLS on, and the plaintext ones disabled, so that
/// nothing but the NetworkPolicies would otherwise keep 5672 and 15672 closed.
#[test]
#[ignore = "renders kube/ with kubectl; run by scripts/check-manifests"]
fn the_production_broker_opens_no_plaintext_listener() {
    for overlay in ["kube/overlays/production", "kube/overlays/keda"] {
        let objects = render(overlay);
        let cluster = of_kind(&objects, "RabbitmqCluster")[0];
        assert!(
            cluster["spec"]["tls"]["secretName"].is_string(),
            "{overlay}"
        );
        assert_eq!(
            cluster["spec"]["tls"]["disableNonTLSListeners"], true,
            "{overlay}"
        );
    }
}
