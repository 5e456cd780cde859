//! Which network flows the NetworkPolicies allow: between the services, for KEDA, into and out of
//! the operators' pods, and to DNS on each kind of cluster.

use std::{collections::BTreeMap, path::Path, process::Command};

use serde_json::Value;

use crate::policy::{
    broker_pod_of, flow_allowed, operators_pods, pod_of, synthetic_pod, Endpoint, SYSTEM_PORTS,
};
use crate::render::{named, of_kind, render};

#[test]
#[ignore = "renders kube/ with kubectl; run by scripts/check-manifests"]
fn the_network_policies_allow_exactly_the_flows_the_system_needs() {
    let objects = render("kube");
    let policies = of_kind(&objects, "NetworkPolicy");
    let publisher = pod_of(&objects, "message-publisher");
    let consumer = pod_of(&objects, "message-consumer");
    let rabbitmq = pod_of(&objects, "rabbitmq");
    let postgresql = pod_of(&objects, "postgresql");
    let client = Endpoint {
        name: "client",
        namespace: None,
        labels: BTreeMap::new(),
    };
    let dns = Endpoint {
        name: "kube-dns",
        namespace: Some("kube-system"),
        labels: BTreeMap::from([("k8s-app".to_owned(), "kube-dns".to_owned())]),
    };
    let needed = [
        ("client", "message-publisher", 8080),
        ("client", "message-consumer", 8081),
        ("message-publisher", "rabbitmq", 5672),
        ("message-consumer", "rabbitmq", 5672),
        ("message-consumer", "postgresql", 5432),
    ];
    let endpoints = [
        client,
        publisher.clone(),
        consumer.clone(),
        rabbitmq.clone(),
        postgresql.clone(),
    ];

    for from in &endpoints {
        for to in endpoints
            .iter()
            .filter(|to| to.name != from.name && to.name != "client")
        {
            for port in [8080, 8081, 5672, 15672, 5432] {
                let allowed = flow_allowed(&policies, from, to, port, "TCP");
                let wanted = needed.contains(&(from.name, to.name, port));
                assert_eq!(
                    allowed, wanted,
                    "{} -> {}:{port} allowed: {allowed}, needed: {wanted}",
                    from.name, to.name
                );
            }
        }
    }
    for pod in [&publisher, &consumer, &rabbitmq, &postgresql] {
        assert!(
            flow_allowed(&policies, pod, &dns, 53, "UDP"),
            "{} cannot resolve names",
            pod.name
        );
        assert!(
            !flow_allowed(&policies, pod, &dns, 443, "TCP"),
            "{} reaches kube-system beyond DNS",
            pod.name
        );
    }
}

/// KEDA's operator pods (namespace keda) must reach the broker's management port under this overlay's
/// NetworkPolicies, while the services still reach what they need and no more than before.
#[test]
#[ignore = "renders kube/ with kubectl; run by scripts/check-manifests"]
fn the_network_policies_let_keda_read_the_brokers_management_api() {
    let objects = render("kube/overlays/keda");
    let policies = of_kind(&objects, "NetworkPolicy");
    let (_, broker) = broker_pod_of(&objects);
    let keda = Endpoint {
        name: "keda-operator",
        namespace: Some("keda"),
        labels: BTreeMap::from([
            ("app".to_owned(), "keda-operator".to_owned()),
            (
                "app.kubernetes.io/name".to_owned(),
                "keda-operator".to_owned(),
            ),
        ]),
    };
    let consumer = pod_of(&objects, "message-consumer");
    let publisher = pod_of(&objects, "message-publisher");
    let database = Endpoint {
        name: "postgresql",
        namespace: Some("default"),
        labels: BTreeMap::from([("cnpg.io/cluster".to_owned(), "postgresql".to_owned())]),
    };

    assert!(flow_allowed(&policies, &keda, &broker, 15671, "TCP"));
    assert!(
        !flow_allowed(&policies, &keda, &broker, 15672, "TCP"),
        "no plaintext HTTP"
    );
    assert!(flow_allowed(&policies, &consumer, &broker, 5671, "TCP"));
    assert!(flow_allowed(&policies, &publisher, &broker, 5671, "TCP"));
    assert!(flow_allowed(&policies, &consumer, &database, 5432, "TCP"));
    assert!(!flow_allowed(&policies, &consumer, &broker, 15671, "TCP"));
    assert!(!flow_allowed(&policies, &publisher, &database, 5432, "TCP"));
    // Only KEDA's operator: another pod of its namespace, or the operator on another port, stays out.
    let neighbour = synthetic_pod("keda-neighbour", "keda", &[("app", "other")]);
    assert!(!flow_allowed(&policies, &neighbour, &broker, 15671, "TCP"));
    assert!(!flow_allowed(&policies, &keda, &broker, 5671, "TCP"));
}

/// The operators label their pods with labels of their own, not those of the custom resource, so a policy
/// that selects this system's labels leaves the broker and the database open to every pod. Under the
/// production overlay the pods as the operators label them take exactly the flows the system needs: AMQP
/// from both services, SQL from the consumer alone, clustering and replication between their own pods,
/// and each operator's ports from its own namespace; nothing from any other pod, here or elsewhere.
#[test]
#[ignore = "renders kube/ with kubectl; run by scripts/check-manifests"]
fn the_production_network_policies_let_into_the_operators_pods_exactly_the_flows_they_need() {
    let objects = render("kube/overlays/production");
    let policies = of_kind(&objects, "NetworkPolicy");
    let publisher = pod_of(&objects, "message-publisher");
    let consumer = pod_of(&objects, "message-consumer");
    let [broker, other_broker, primary, replica] = operators_pods(&objects);
    let unrelated = synthetic_pod("unrelated", "default", &[("app", "other")]);
    let rabbitmq_operator = synthetic_pod(
        "rabbitmq-operator",
        "rabbitmq-system",
        &[("app.kubernetes.io/name", "rabbitmq-cluster-operator")],
    );
    let cnpg_operator = synthetic_pod(
        "cnpg-operator",
        "cnpg-system",
        &[("app.kubernetes.io/name", "cloudnative-pg")],
    );
    let keda = synthetic_pod("keda-operator", "keda", &[("app", "keda-operator")]);
    let client = Endpoint {
        name: "client",
        namespace: None,
        labels: BTreeMap::new(),
    };
    let flow =
        |from: &Endpoint, to: &Endpoint, port| flow_allowed(&policies, from, to, port, "TCP");

    assert!(flow(&publisher, &broker, 5671));
    assert!(flow(&consumer, &broker, 5671));
    assert!(!flow(&publisher, &broker, 5672), "no plaintext AMQP");
    assert!(!flow(&consumer, &broker, 5672), "no plaintext AMQP");
    assert!(flow(&consumer, &primary, 5432));
    assert!(!flow(&publisher, &primary, 5432));
    assert!(!flow(&unrelated, &broker, 5671));
    assert!(!flow(&unrelated, &broker, 15672));
    assert!(!flow(&unrelated, &primary, 5432));
    assert!(
        flow(&rabbitmq_operator, &broker, 15671),
        "the Messaging Topology Operator reaches the management API over HTTPS"
    );
    assert!(
        !flow(&rabbitmq_operator, &broker, 15672),
        "no plaintext HTTP"
    );
    assert!(flow(&broker, &other_broker, 25672));
    assert!(flow(&other_broker, &broker, 25672));
    assert!(flow(&primary, &replica, 5432));
    assert!(flow(&replica, &primary, 5432));
    assert!(flow(&cnpg_operator, &primary, 8000));
    assert!(
        !flow(&keda, &broker, 15671),
        "KEDA is let in by its overlay alone"
    );

    let brokers = [broker.name, other_broker.name];
    let instances = [primary.name, replica.name];
    let needed = |from: &Endpoint, to: &Endpoint, port: u16| {
        let to_broker = brokers.contains(&to.name);
        let to_instance = instances.contains(&to.name);
        match from.name {
            "message-publisher" => to_broker && port == 5671,
            "message-consumer" => to_broker && port == 5671 || to_instance && port == 5432,
            "rabbitmq-operator" => to_broker && port == 15671,
            "cnpg-operator" => to_instance && [8000, 5432].contains(&port),
            name if brokers.contains(&name) => {
                to_broker && ([4369, 25672].contains(&port) || (35672..=35682).contains(&port))
            }
            name if instances.contains(&name) => to_instance && port == 5432,
            _ => false,
        }
    };
    let sources = [
        client,
        publisher,
        consumer,
        unrelated.clone(),
        rabbitmq_operator,
        cnpg_operator,
        keda,
        broker.clone(),
        other_broker.clone(),
        primary.clone(),
        replica.clone(),
    ];
    let targets = [broker, other_broker, primary, replica, unrelated];
    for from in &sources {
        for to in targets.iter().filter(|to| to.name != from.name) {
            for port in SYSTEM_PORTS {
                let allowed = flow(from, to, port);
                let wanted = needed(from, to, port);
                assert_eq!(
                    allowed, wanted,
                    "{} -> {}:{port} allowed: {allowed}, needed: {wanted}",
                    from.name, to.name
                );
            }
        }
    }
}

/// Default-deny covers the operators' pods too, so each is let out only to what it talks to: its own
/// peers, DNS, and the Kubernetes API (RabbitMQ's peer discovery, CloudNativePG's instance manager),
/// which is not a pod and is reached on its ports 443 and 6443. Nothing else leaves them.
#[test]
#[ignore = "renders kube/ with kubectl; run by scripts/check-manifests"]
fn the_production_network_policies_let_the_operators_pods_out_only_to_their_peers_dns_and_the_api()
{
    let objects = render("kube/overlays/production");
    let policies = of_kind(&objects, "NetworkPolicy");
    let consumer = pod_of(&objects, "message-consumer");
    let [broker, other_broker, primary, replica] = operators_pods(&objects);
    let dns = synthetic_pod("kube-dns", "kube-system", &[("k8s-app", "kube-dns")]);
    let kubernetes_api = Endpoint {
        name: "kubernetes-api",
        namespace: None,
        labels: BTreeMap::new(),
    };
    let operator = synthetic_pod(
        "rabbitmq-operator",
        "rabbitmq-system",
        &[("app.kubernetes.io/name", "rabbitmq-cluster-operator")],
    );

    for pod in [&broker, &other_broker, &primary, &replica] {
        assert!(
            flow_allowed(&policies, pod, &dns, 53, "UDP"),
            "{}",
            pod.name
        );
        for port in [443, 6443] {
            assert!(
                flow_allowed(&policies, pod, &kubernetes_api, port, "TCP"),
                "{} cannot reach the Kubernetes API on {port}",
                pod.name
            );
        }
        for port in [80, 5672, 5432, 8080, 8081, 15672] {
            assert!(!flow_allowed(&policies, pod, &kubernetes_api, port, "TCP"));
            assert!(!flow_allowed(&policies, pod, &operator, port, "TCP"));
            assert!(!flow_allowed(&policies, pod, &consumer, port, "TCP"));
        }
    }
    assert!(!flow_allowed(&policies, &broker, &primary, 5432, "TCP"));
    assert!(!flow_allowed(&policies, &primary, &broker, 5672, "TCP"));
}

/// The DNS policy assumes kube-dns pods in kube-system; each component of kube/components/ for other
/// setups renders on top of the stack and lets every pod reach its DNS, and still nothing else.
#[test]
#[ignore = "renders kube/ with kubectl; run by scripts/check-manifests"]
fn each_dns_component_lets_every_pod_resolve_names_on_its_kind_of_cluster() {
    // kustomize takes relative paths only: the kustomizations are written under the target directory,
    // which shares the repository's root with kube/.
    let root = Path::new(env!("CARGO_TARGET_TMPDIR"))
        .canonicalize()
        .unwrap()
        .join(format!("manifests-dns-{}", uuid::Uuid::new_v4().simple()));
    let kube = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../kube")
        .canonicalize()
        .unwrap();
    let relative = |from: &Path, to: &Path| {
        let common = from
            .components()
            .zip(to.components())
            .take_while(|(a, b)| a == b)
            .count();
        let ups = from.components().count() - common;
        let mut path = std::path::PathBuf::new();
        for _ in 0..ups {
            path.push("..");
        }
        path.extend(to.components().skip(common));
        path
    };
    for (component, dns, port) in [
        (
            "dns-nodelocal",
            Endpoint {
                name: "node-local-dns",
                namespace: None,
                labels: BTreeMap::new(),
            },
            53,
        ),
        (
            "dns-openshift",
            synthetic_pod(
                "dns-default",
                "openshift-dns",
                &[("dns.operator.openshift.io/daemonset-dns", "default")],
            ),
            5353,
        ),
    ] {
        let dir = root.join(component);
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(
            dir.join("kustomization.yaml"),
            format!(
                "resources:\n  - {}\ncomponents:\n  - {}\n",
                relative(&dir, &kube).display(),
                relative(&dir, &kube.join("components").join(component)).display()
            ),
        )
        .unwrap();
        let output = Command::new("kubectl")
            .args(["kustomize", "--load-restrictor", "LoadRestrictionsNone"])
            .arg(&dir)
            .output()
            .unwrap();
        assert!(
            output.status.success(),
            "{}",
            String::from_utf8_lossy(&output.stderr)
        );
        let objects: Vec<Value> =
            serde_yaml_ng::Deserializer::from_str(std::str::from_utf8(&output.stdout).unwrap())
                .map(|d| serde::Deserialize::deserialize(d).unwrap())
                .filter(|v: &Value| !v.is_null())
                .collect();
        let policies = of_kind(&objects, "NetworkPolicy");
        let dns_policy = named(&objects, "NetworkPolicy", "dns-egress").unwrap();
        for pod in [
            "message-publisher",
            "message-consumer",
            "rabbitmq",
            "postgresql",
        ] {
            let pod = pod_of(&objects, pod);
            // An ipBlock peer (node-local DNS) is not a pod: checked on the policy itself.
            let allowed = if dns.namespace.is_none() {
                dns_policy["spec"]["egress"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .any(|rule| {
                        rule["to"][0]["ipBlock"]["cidr"] == "169.254.20.10/32"
                            && rule["ports"]
                                .as_array()
                                .unwrap()
                                .iter()
                                .any(|p| p["port"] == port)
                    })
            } else {
                flow_allowed(&policies, &pod, &dns, port, "UDP")
            };
            assert!(allowed, "{component}: {} cannot resolve names", pod.name);
            if dns.namespace.is_some() {
                assert!(
                    !flow_allowed(&policies, &pod, &dns, 443, "TCP"),
                    "{component}"
                );
            }
        }
    }
    std::fs::remove_dir_all(&root).unwrap();
}
