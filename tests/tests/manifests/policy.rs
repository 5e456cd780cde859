//! A NetworkPolicy evaluator over the rendered objects, and the pods it is asked about: the services', and
//! those the operators run with only the labels the operators give them.

use std::collections::BTreeMap;

use serde_json::Value;

use crate::render::{labels, named, of_kind, selects};

/// A pod, or a client outside the cluster, as the NetworkPolicy evaluator sees it.
#[derive(Clone)]
pub struct Endpoint {
    pub name: &'static str,
    pub namespace: Option<&'static str>,
    pub labels: BTreeMap<String, String>,
}

pub fn pod_of(objects: &[Value], deployment: &'static str) -> Endpoint {
    let deployment_object = named(objects, "Deployment", deployment).unwrap();
    Endpoint {
        name: deployment,
        namespace: Some("default"),
        labels: labels(&deployment_object["spec"]["template"]["metadata"]["labels"]),
    }
}

fn peer_matches(peer: &Value, other: &Endpoint) -> bool {
    let Some(namespace) = other.namespace else {
        return false; // a client outside the cluster is matched only by rules without `from`/`to`
    };
    let namespace_labels = BTreeMap::from([(
        "kubernetes.io/metadata.name".to_owned(),
        namespace.to_owned(),
    )]);
    let namespace_ok = if peer["namespaceSelector"].is_object() {
        selects(
            &labels(&peer["namespaceSelector"]["matchLabels"]),
            &namespace_labels,
        )
    } else {
        namespace == "default"
    };
    let pod_ok = !peer["podSelector"].is_object()
        || selects(&labels(&peer["podSelector"]["matchLabels"]), &other.labels);
    namespace_ok && pod_ok && !peer["ipBlock"].is_object()
}

/// Whether the policies of the namespace let `subject` send (egress) to, or receive (ingress) from, `other`
/// on `port`. Pods outside the namespace are not governed by these policies.
fn allows(
    policies: &[&Value],
    direction: &str,
    subject: &Endpoint,
    other: &Endpoint,
    port: u16,
    protocol: &str,
) -> bool {
    if subject.namespace != Some("default") {
        return true;
    }
    let (kind, peers_key) = if direction == "ingress" {
        ("Ingress", "from")
    } else {
        ("Egress", "to")
    };
    let governing: Vec<&&Value> = policies
        .iter()
        .filter(|p| {
            selects(
                &labels(&p["spec"]["podSelector"]["matchLabels"]),
                &subject.labels,
            )
        })
        .filter(|p| {
            p["spec"]["policyTypes"]
                .as_array()
                .unwrap()
                .iter()
                .any(|t| t == kind)
        })
        .collect();
    if governing.is_empty() {
        return true;
    }
    governing.iter().any(|policy| {
        policy["spec"][direction]
            .as_array()
            .into_iter()
            .flatten()
            .any(|rule| {
                let peer_ok = match rule[peers_key].as_array() {
                    None => true,
                    Some(peers) => peers.iter().any(|peer| peer_matches(peer, other)),
                };
                let port_ok = match rule["ports"].as_array() {
                    None => true,
                    Some(ports) => ports.iter().any(|p| {
                        // `endPort` makes `port` the first of a range.
                        let first = p["port"].as_u64();
                        let last = p["endPort"].as_u64().or(first);
                        let in_range = first
                            .zip(last)
                            .is_some_and(|(first, last)| (first..=last).contains(&u64::from(port)));
                        in_range && p["protocol"].as_str().unwrap_or("TCP") == protocol
                    }),
                };
                peer_ok && port_ok
            })
    })
}

pub fn flow_allowed(
    policies: &[&Value],
    from: &Endpoint,
    to: &Endpoint,
    port: u16,
    protocol: &str,
) -> bool {
    allows(policies, "egress", from, to, port, protocol)
        && allows(policies, "ingress", to, from, port, protocol)
}

/// The labels the RabbitMQ Cluster Operator gives the pods of a `RabbitmqCluster` (its
/// `internal/metadata/label.go`): the cluster's own `app.kubernetes.io/*` labels are not passed on.
pub fn broker_pod_of(objects: &[Value]) -> (String, Endpoint) {
    let cluster = of_kind(objects, "RabbitmqCluster")
        .into_iter()
        .next()
        .expect("a RabbitmqCluster");
    let name = cluster["metadata"]["name"].as_str().unwrap().to_owned();
    let labels = BTreeMap::from([
        ("app.kubernetes.io/name".to_owned(), name.clone()),
        (
            "app.kubernetes.io/component".to_owned(),
            "rabbitmq".to_owned(),
        ),
        (
            "app.kubernetes.io/part-of".to_owned(),
            "rabbitmq".to_owned(),
        ),
    ]);
    let endpoint = Endpoint {
        name: "rabbitmq",
        namespace: Some("default"),
        labels,
    };
    (name, endpoint)
}

/// A pod of namespace `namespace` carrying exactly `pod_labels`.
pub fn synthetic_pod(
    name: &'static str,
    namespace: &'static str,
    pod_labels: &[(&str, &str)],
) -> Endpoint {
    Endpoint {
        name,
        namespace: Some(namespace),
        labels: pod_labels
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect(),
    }
}

/// The pods the operators run in this namespace, with only the labels the operators give them: two
/// broker nodes (as `broker_pod_of`) and a PostgreSQL primary and replica (CloudNativePG's "Labels and
/// annotations": `cnpg.io/cluster`, `cnpg.io/instanceRole` and `role`, `cnpg.io/podRole`).
pub fn operators_pods(objects: &[Value]) -> [Endpoint; 4] {
    let (_, broker) = broker_pod_of(objects);
    let cluster = named(objects, "Cluster", "postgresql").expect("a CloudNativePG Cluster");
    assert_eq!(cluster["metadata"]["name"], "postgresql");
    let instance = |name: &'static str, role: &str| {
        synthetic_pod(
            name,
            "default",
            &[
                ("cnpg.io/cluster", "postgresql"),
                ("cnpg.io/instanceName", name),
                ("cnpg.io/instanceRole", role),
                ("role", role),
                ("cnpg.io/podRole", "instance"),
            ],
        )
    };
    [
        Endpoint {
            name: "rabbitmq-server-0",
            ..broker.clone()
        },
        Endpoint {
            name: "rabbitmq-server-1",
            ..broker
        },
        instance("postgresql-1", "primary"),
        instance("postgresql-2", "replica"),
    ]
}

/// Every port the broker, the database and the services open, with both ends of the CLI tools' range and
/// its neighbours outside it.
pub const SYSTEM_PORTS: [u16; 17] = [
    5671, 5672, 15671, 15672, 15692, 4369, 25672, 35671, 35672, 35677, 35682, 35683, 5432, 8000,
    9187, 8080, 8081,
];
