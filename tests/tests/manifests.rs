//! Cross-checks the rendered Kubernetes manifests against the code: what the Services select and target,
//! what environment the services get, where the probes point, what the autoscalers scale, and which
//! network flows the NetworkPolicies allow.
//!
//! These render `kube/` with `kubectl kustomize`, so they are ignored by a plain `cargo test`;
//! `scripts/check-manifests` runs them (with `--include-ignored`).

use std::{collections::BTreeMap, path::Path, process::Command};

use common::config::{ConsumerConfig, PublisherConfig, VARIABLES};
use serde_json::Value;

const NEEDS_KUBECTL: &str = "renders kube/ with kubectl; run by scripts/check-manifests";

/// Our two services: Deployment name, container port's HTTP_PORT default.
const SERVICES: [&str; 2] = ["message-publisher", "message-consumer"];

fn render(overlay: &str) -> Vec<Value> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .join(overlay);
    let output = Command::new("kubectl")
        .arg("kustomize")
        .arg(&dir)
        .output()
        .expect("kubectl is installed");
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let text = String::from_utf8(output.stdout).expect("UTF-8 manifests");
    serde_yaml_ng::Deserializer::from_str(&text)
        .map(|document| serde::Deserialize::deserialize(document).expect("valid YAML"))
        .filter(|value: &Value| !value.is_null())
        .collect()
}

fn of_kind<'a>(objects: &'a [Value], kind: &str) -> Vec<&'a Value> {
    objects.iter().filter(|o| o["kind"] == kind).collect()
}

fn named<'a>(objects: &'a [Value], kind: &str, name: &str) -> Option<&'a Value> {
    objects
        .iter()
        .find(|o| o["kind"] == kind && o["metadata"]["name"] == name)
}

fn labels(value: &Value) -> BTreeMap<String, String> {
    value
        .as_object()
        .map(|map| {
            map.iter()
                .map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_owned()))
                .collect()
        })
        .unwrap_or_default()
}

fn selects(selector: &BTreeMap<String, String>, labels: &BTreeMap<String, String>) -> bool {
    selector.iter().all(|(k, v)| labels.get(k) == Some(v))
}

fn first_container(deployment: &Value) -> &Value {
    &deployment["spec"]["template"]["spec"]["containers"][0]
}

/// Every variable a container gets, with its value where the manifests know it: `env`, then the data of
/// the ConfigMaps and Secrets it loads with `envFrom`.
fn environment(objects: &[Value], deployment: &Value) -> BTreeMap<String, Option<String>> {
    let container = first_container(deployment);
    let mut env = BTreeMap::new();
    for source in container["envFrom"].as_array().into_iter().flatten() {
        let (kind, reference) = if source["configMapRef"].is_object() {
            ("ConfigMap", &source["configMapRef"])
        } else {
            ("Secret", &source["secretRef"])
        };
        let name = reference["name"].as_str().unwrap();
        match named(objects, kind, name) {
            Some(object) => {
                for field in ["data", "stringData"] {
                    for (key, value) in object[field].as_object().into_iter().flatten() {
                        env.insert(key.clone(), value.as_str().map(str::to_owned));
                    }
                }
            }
            None => assert_eq!(
                reference["optional"], true,
                "{kind} {name} is missing and not optional"
            ),
        }
    }
    for variable in container["env"].as_array().into_iter().flatten() {
        env.insert(
            variable["name"].as_str().unwrap().to_owned(),
            variable["value"].as_str().map(str::to_owned),
        );
    }
    env
}

#[test]
#[ignore = "renders kube/ with kubectl; run by scripts/check-manifests"]
fn every_service_selects_the_pods_of_its_deployment_and_targets_a_port_they_open() {
    let _ = NEEDS_KUBECTL;
    let objects = render("kube");
    for service in of_kind(&objects, "Service") {
        let name = service["metadata"]["name"].as_str().unwrap();
        let selector = labels(&service["spec"]["selector"]);
        assert!(!selector.is_empty(), "Service {name} selects nothing");
        let matching: Vec<&Value> = of_kind(&objects, "Deployment")
            .into_iter()
            .filter(|d| {
                selects(
                    &selector,
                    &labels(&d["spec"]["template"]["metadata"]["labels"]),
                )
            })
            .collect();
        assert_eq!(
            matching.len(),
            1,
            "Service {name} should select exactly one Deployment's pods"
        );
        let deployment = matching[0];
        assert_eq!(
            deployment["metadata"]["name"], name,
            "Service {name} selects another Deployment"
        );
        let deployment_selector = labels(&deployment["spec"]["selector"]["matchLabels"]);
        assert!(
            selects(
                &deployment_selector,
                &labels(&deployment["spec"]["template"]["metadata"]["labels"])
            ),
            "Deployment {name} does not select its own pods"
        );
        let ports: Vec<&Value> = deployment["spec"]["template"]["spec"]["containers"]
            .as_array()
            .unwrap()
            .iter()
            .flat_map(|c| c["ports"].as_array().into_iter().flatten())
            .collect();
        for port in service["spec"]["ports"].as_array().unwrap() {
            let target = &port["targetPort"];
            let opened = ports.iter().any(|p| {
                (target.is_string() && p["name"] == *target) || p["containerPort"] == *target
            });
            assert!(
                opened,
                "Service {name} targets {target}, which its pods do not open"
            );
        }
    }
}

#[test]
#[ignore = "renders kube/ with kubectl; run by scripts/check-manifests"]
fn each_service_listens_on_the_port_its_container_declares_and_reads_every_variable_it_is_given() {
    for overlay in ["kube", "kube/overlays/production"] {
        let objects = render(overlay);
        for name in SERVICES {
            let deployment = named(&objects, "Deployment", name).expect("the Deployment exists");
            let env = environment(&objects, deployment);
            // Variables only used to build another one, as in `$(RABBITMQ_PASSWORD)`, are not read by the service.
            let interpolated: Vec<&String> = env
                .keys()
                .filter(|key| {
                    env.values()
                        .flatten()
                        .any(|value| value.contains(&format!("$({key})")))
                })
                .collect();
            for key in env.keys().filter(|key| !interpolated.contains(key)) {
                assert!(
                    VARIABLES.contains(&key.as_str()),
                    "{overlay}: {name} gets {key}, which no service reads"
                );
            }
            let http_port = env
                .get("HTTP_PORT")
                .cloned()
                .flatten()
                .expect("HTTP_PORT is set");
            let container_port =
                first_container(deployment)["ports"][0]["containerPort"].to_string();
            assert_eq!(
                http_port, container_port,
                "{overlay}: {name} listens elsewhere than it declares"
            );
            // The values the manifests spell out must parse as the service's configuration does.
            let known: Vec<(String, String)> = env
                .iter()
                .filter_map(|(k, v)| {
                    v.clone()
                        .filter(|v| !v.contains("$("))
                        .map(|v| (k.clone(), v))
                })
                .collect();
            let parsed = if name == "message-publisher" {
                envy::from_iter::<_, PublisherConfig>(known).map(drop)
            } else {
                envy::from_iter::<_, ConsumerConfig>(known).map(drop)
            };
            parsed.unwrap_or_else(|e| {
                panic!("{overlay}: {name}'s configuration does not parse: {e}")
            });
        }
    }
}

#[test]
#[ignore = "renders kube/ with kubectl; run by scripts/check-manifests"]
fn the_autoscalers_scale_deployments_that_request_cpu_and_leave_them_their_replica_count() {
    for overlay in ["kube", "kube/overlays/production"] {
        let objects = render(overlay);
        let autoscalers = of_kind(&objects, "HorizontalPodAutoscaler");
        assert_eq!(
            autoscalers.len(),
            2,
            "{overlay}: one autoscaler per service"
        );
        for hpa in autoscalers {
            let target = &hpa["spec"]["scaleTargetRef"];
            assert_eq!(target["kind"], "Deployment");
            let name = target["name"].as_str().unwrap();
            let deployment = named(&objects, "Deployment", name)
                .unwrap_or_else(|| panic!("{overlay}: no Deployment {name}"));
            assert!(
                deployment["spec"]["replicas"].is_null(),
                "{overlay}: {name} sets replicas, which its autoscaler owns"
            );
            for container in deployment["spec"]["template"]["spec"]["containers"]
                .as_array()
                .unwrap()
            {
                assert!(
                    container["resources"]["requests"]["cpu"].is_string(),
                    "{overlay}: {name} requests no CPU"
                );
            }
        }
        let publisher = named(&objects, "HorizontalPodAutoscaler", "message-publisher").unwrap();
        assert_eq!(publisher["spec"]["minReplicas"], 2);
        assert_eq!(publisher["spec"]["maxReplicas"], 20);
        assert_eq!(
            publisher["spec"]["metrics"][0]["resource"]["target"]["averageUtilization"],
            80
        );
        assert!(
            publisher["spec"]["behavior"]["scaleDown"]["stabilizationWindowSeconds"]
                .as_u64()
                .unwrap()
                > 0
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "renders kube/ with kubectl; run by scripts/check-manifests"]
async fn every_probe_points_at_a_route_the_service_serves() {
    // Arrange: both services, with peers that do not exist (a probe route must exist whatever their state).
    let objects = render("kube");
    let unreachable = [
        ("AMQP_URL", "amqp://guest:guest@127.0.0.1:1/%2f"),
        ("DATABASE_URL", "postgres://postgres@127.0.0.1:1/none"),
        ("HTTP_HOST", "127.0.0.1"),
        ("HTTP_PORT", "0"),
        ("HTTP_WORKERS", "1"),
    ];
    let env = || {
        unreachable
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
    };
    let publisher = end_to_end::spawn_publisher(&envy::from_iter(env()).unwrap());
    let consumer = end_to_end::spawn_consumer(&envy::from_iter(env()).unwrap());
    let http = reqwest::Client::new();

    for (name, service) in [
        ("message-publisher", &publisher),
        ("message-consumer", &consumer),
    ] {
        let container = first_container(named(&objects, "Deployment", name).unwrap());
        for probe in ["startupProbe", "livenessProbe", "readinessProbe"] {
            // Act
            let path = container[probe]["httpGet"]["path"]
                .as_str()
                .unwrap_or_else(|| panic!("{name} has no HTTP {probe}"));
            let status = http
                .get(format!("{}{path}", service.url))
                .send()
                .await
                .unwrap()
                .status();

            // Assert: liveness must not depend on peers; readiness may say 503, but the route exists.
            assert_ne!(
                status, 404,
                "{name}'s {probe} points at {path}, which does not exist"
            );
            if probe != "readinessProbe" {
                assert_eq!(
                    status, 200,
                    "{name}'s {probe} at {path} fails while its peers are down"
                );
            }
        }
    }
}

/// A pod, or a client outside the cluster, as the NetworkPolicy evaluator sees it.
#[derive(Clone)]
struct Endpoint {
    name: &'static str,
    namespace: Option<&'static str>,
    labels: BTreeMap<String, String>,
}

fn pod_of(objects: &[Value], deployment: &'static str) -> Endpoint {
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
                        p["port"] == port && p["protocol"].as_str().unwrap_or("TCP") == protocol
                    }),
                };
                peer_ok && port_ok
            })
    })
}

fn flow_allowed(
    policies: &[&Value],
    from: &Endpoint,
    to: &Endpoint,
    port: u16,
    protocol: &str,
) -> bool {
    allows(policies, "egress", from, to, port, protocol)
        && allows(policies, "ingress", to, from, port, protocol)
}

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
            .any(|p| p == common::topology::CONSISTENT_HASH_PLUGIN),
        "the operator enables {}: {plugins:?}",
        common::topology::CONSISTENT_HASH_PLUGIN
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
        file.contains(common::topology::CONSISTENT_HASH_PLUGIN),
        "{file}"
    );
}
