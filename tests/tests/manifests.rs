//! Cross-checks the rendered Kubernetes manifests against the code: what the Services select and target,
//! what environment the services get, where the probes point, what the autoscalers scale, which
//! network flows the NetworkPolicies allow, and how KEDA and Prometheus see the services.
//!
//! These render `kube/` with `kubectl kustomize`, so they are ignored by a plain `cargo test`;
//! `scripts/check-manifests` runs them (with `--include-ignored`).

use std::{
    collections::BTreeMap,
    io::Write,
    path::Path,
    process::{Command, Stdio},
};

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
            None => match USER_MADE_SECRETS
                .iter()
                .find(|(secret, _)| kind == "Secret" && *secret == name)
            {
                Some((_, keys)) => {
                    for (key, value) in keys.iter() {
                        env.insert((*key).to_owned(), Some((*value).to_owned()));
                    }
                }
                None => assert_eq!(
                    reference["optional"], true,
                    "{kind} {name} is missing and not optional"
                ),
            },
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

/// The labels the RabbitMQ Cluster Operator gives the pods of a `RabbitmqCluster` (its
/// `internal/metadata/label.go`): the cluster's own `app.kubernetes.io/*` labels are not passed on.
fn broker_pod_of(objects: &[Value]) -> (String, Endpoint) {
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

/// Whether RabbitMQ's management API lists `queue` for the `name` regex KEDA sends with `use_regex`: the
/// broker matches with Erlang's `re` (PCRE), unanchored and caseless, which `grep -P -i` reproduces.
fn rabbitmq_lists(regex: &str, queue: &str) -> bool {
    let mut grep = Command::new("grep")
        .args(["-q", "-P", "-i", "--", regex])
        .stdin(Stdio::piped())
        .spawn()
        .expect("grep is installed");
    grep.stdin
        .take()
        .unwrap()
        .write_all(format!("{queue}\n").as_bytes())
        .unwrap();
    match grep.wait().unwrap().code() {
        Some(0) => true,
        Some(1) => false,
        _ => panic!("PCRE refuses the queue regex {regex}"),
    }
}

/// Whether a Kubernetes label selector (`matchLabels` and `matchExpressions`) selects `object_labels`.
fn selector_selects(selector: &Value, object_labels: &BTreeMap<String, String>) -> bool {
    let expressions_hold = selector["matchExpressions"]
        .as_array()
        .into_iter()
        .flatten()
        .all(|expression| {
            let value = object_labels
                .get(expression["key"].as_str().unwrap())
                .map(String::as_str);
            let listed = |v: &str| {
                expression["values"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .any(|listed| listed == v)
            };
            match expression["operator"].as_str().unwrap() {
                "In" => value.is_some_and(listed),
                "NotIn" => !value.is_some_and(listed),
                "Exists" => value.is_some(),
                "DoesNotExist" => value.is_none(),
                other => panic!("unknown selector operator {other}"),
            }
        });
    selects(&labels(&selector["matchLabels"]), object_labels) && expressions_hold
}

/// The value of variable `name` in `container` as the kubelet, and KEDA reading the same container, work
/// it out: `$(VAR)` names a variable defined earlier in `env`, and a variable from a Secret's key takes
/// what `secret_value(secret, key)` says that key holds.
fn resolved_variable(
    container: &Value,
    name: &str,
    secret_value: impl Fn(&str, &str) -> String,
) -> Option<String> {
    let mut known: Vec<(String, String)> = Vec::new();
    for variable in container["env"].as_array().into_iter().flatten() {
        let value = if let Some(literal) = variable["value"].as_str() {
            known
                .iter()
                .fold(literal.to_owned(), |value, (earlier, resolved)| {
                    value.replace(&format!("$({earlier})"), resolved)
                })
        } else {
            let reference = &variable["valueFrom"]["secretKeyRef"];
            secret_value(reference["name"].as_str()?, reference["key"].as_str()?)
        };
        known.push((variable["name"].as_str()?.to_owned(), value));
    }
    known.into_iter().find(|(n, _)| n == name).map(|(_, v)| v)
}

fn the_scaled_object(objects: &[Value]) -> &Value {
    let scaled_objects = of_kind(objects, "ScaledObject");
    assert_eq!(scaled_objects.len(), 1, "one ScaledObject");
    scaled_objects[0]
}

fn consumer_config(objects: &[Value]) -> ConsumerConfig {
    let consumer = named(objects, "Deployment", "message-consumer").expect("the consumer");
    let known = environment(objects, consumer)
        .into_iter()
        .filter_map(|(k, v)| v.filter(|v| !v.contains("$(")).map(|v| (k, v)));
    ConsumerConfig::from_vars(known).expect("the consumer's configuration parses")
}

/// KEDA must count what the consumer has yet to store: every queue it drains, ready and unacknowledged
/// (amqp mode counts ready messages only, and would take pods away mid-batch), but not the dead letters,
/// which wait for a person whatever the number of pods. The queues come from the consumer's own topology
/// with the overlay's QUEUE_NAME and QUEUE_SHARDS, so a change to either shows here.
#[test]
#[ignore = "renders kube/ with kubectl; run by scripts/check-manifests"]
fn the_keda_overlay_scales_the_consumer_on_every_queue_it_drains_but_not_on_dead_letters() {
    let objects = render("kube/overlays/keda");
    let scaled = the_scaled_object(&objects);
    let target = &scaled["spec"]["scaleTargetRef"];
    assert_eq!(
        target["kind"].as_str().unwrap_or("Deployment"),
        "Deployment"
    );
    assert_eq!(
        target["apiVersion"].as_str().unwrap_or("apps/v1"),
        "apps/v1"
    );
    let name = target["name"].as_str().expect("a target name");
    assert_eq!(name, "message-consumer");
    let deployment = named(&objects, "Deployment", name).expect("the target Deployment exists");
    if let Some(container) = target["envSourceContainerName"].as_str() {
        assert!(
            deployment["spec"]["template"]["spec"]["containers"]
                .as_array()
                .unwrap()
                .iter()
                .any(|c| c["name"] == container),
            "envSourceContainerName {container} is not a container of {name}"
        );
    }

    let triggers = scaled["spec"]["triggers"].as_array().expect("triggers");
    assert_eq!(triggers.len(), 1, "one trigger: {triggers:?}");
    let trigger = &triggers[0];
    let metadata = &trigger["metadata"];
    assert_eq!(trigger["type"], "rabbitmq");
    assert_eq!(
        metadata["protocol"], "http",
        "amqp mode counts ready messages only"
    );
    assert_eq!(metadata["mode"], "QueueLength");
    assert_eq!(metadata["useRegex"], "true");
    assert_eq!(
        metadata["operation"], "sum",
        "the queues' lengths are added up"
    );
    assert_ne!(metadata["excludeUnacknowledged"], "true");

    let config = consumer_config(&objects);
    let value: f64 = metadata["value"].as_str().unwrap().parse().unwrap();
    let activation: f64 = metadata["activationValue"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!(
        value > f64::from(config.prefetch),
        "a pod's own prefetched deliveries ({}) would keep pods up by themselves at {value} a pod",
        config.prefetch
    );
    assert!((0.0..=value).contains(&activation));

    let regex = metadata["queueName"].as_str().expect("a queue regex");
    let topology = config.service.topology();
    let drained = topology.drained_queues();
    assert!(drained.len() > 2, "the overlay runs shards: {drained:?}");
    for queue in &drained {
        assert!(rabbitmq_lists(regex, queue), "{regex} misses {queue}");
    }
    let queue = topology.queue();
    for other in [
        topology.dead_letter_queue().to_owned(),
        format!("{}.dead", drained[0]),
        format!("other.{queue}"),
        format!("{queue}-other"),
        format!("{queue}.0x"),
    ] {
        assert!(!rabbitmq_lists(regex, &other), "{regex} counts {other}");
    }
}

/// KEDA's operator runs in its own namespace and reads the broker's management API: it needs the
/// broker's fully qualified address, over HTTPS with the broker's authority to trust, and credentials of
/// a user of its own that may only monitor, all of which must come from what the cluster really holds
/// (Secrets the operators write), never from a value someone has to remember to fill in; and never the
/// administrator's.
#[test]
#[ignore = "renders kube/ with kubectl; run by scripts/check-manifests"]
fn the_keda_overlay_reads_the_management_api_over_tls_as_a_monitoring_user_of_its_own() {
    let objects = render("kube/overlays/keda");
    let (cluster, _) = broker_pod_of(&objects);
    let operator_secret = format!("{cluster}-default-user");
    let scaled = the_scaled_object(&objects);
    let reference = &scaled["spec"]["triggers"][0]["authenticationRef"];
    assert_eq!(
        reference["kind"]
            .as_str()
            .unwrap_or("TriggerAuthentication"),
        "TriggerAuthentication"
    );
    let authentication = named(
        &objects,
        "TriggerAuthentication",
        reference["name"].as_str().expect("an authenticationRef"),
    )
    .expect("the TriggerAuthentication it names exists");

    // The user KEDA logs in as: the Messaging Topology Operator's User, tagged monitoring, with a
    // Permission that grants nothing but access to the vhost, and its generated Secret.
    let users: Vec<&Value> = of_kind(&objects, "User")
        .into_iter()
        .filter(|u| {
            u["spec"]["tags"]
                .as_array()
                .is_some_and(|tags| tags.iter().any(|t| t == "monitoring"))
        })
        .collect();
    assert_eq!(users.len(), 1, "one monitoring user");
    let user = users[0]["metadata"]["name"].as_str().unwrap();
    assert_eq!(users[0]["spec"]["tags"], serde_json::json!(["monitoring"]));
    let permission = of_kind(&objects, "Permission")
        .into_iter()
        .find(|p| p["spec"]["userReference"]["name"] == user)
        .expect("a Permission for KEDA's user");
    assert_eq!(permission["spec"]["vhost"], "/");
    for grant in ["configure", "write", "read"] {
        assert_eq!(permission["spec"]["permissions"][grant], "^$", "{grant}");
    }
    let credentials = format!("{user}-user-credentials");

    let tls_secret = named(&objects, "RabbitmqCluster", &cluster).unwrap()["spec"]["tls"]
        ["secretName"]
        .as_str()
        .expect("the broker has TLS")
        .to_owned();
    let mut parameters = BTreeMap::new();
    for target in authentication["spec"]["secretTargetRef"]
        .as_array()
        .into_iter()
        .flatten()
    {
        let (secret, key) = (
            target["name"].as_str().unwrap(),
            target["key"].as_str().unwrap(),
        );
        assert_ne!(
            secret, operator_secret,
            "KEDA does not log in as the administrator"
        );
        let exists = (secret == credentials && ["username", "password"].contains(&key))
            || (secret == tls_secret && key == "ca.crt");
        assert!(exists, "Secret {secret} has no key {key}");
        parameters.insert(
            target["parameter"].as_str().unwrap().to_owned(),
            format!("{secret}/{key}"),
        );
    }

    let consumer = named(&objects, "Deployment", "message-consumer").unwrap();
    // Only the operator's `host` is known to hold a host name; any other Secret key stays opaque.
    let operator_value = |secret: &str, key: &str| {
        if secret == operator_secret && key == "host" {
            format!("{cluster}.NAMESPACE.svc")
        } else {
            format!("<{secret}/{key}>")
        }
    };
    for variable in authentication["spec"]["env"]
        .as_array()
        .into_iter()
        .flatten()
    {
        let container_name = variable["containerName"].as_str().unwrap_or_else(|| {
            scaled["spec"]["scaleTargetRef"]["envSourceContainerName"]
                .as_str()
                .unwrap()
        });
        let container = consumer["spec"]["template"]["spec"]["containers"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["name"] == container_name)
            .expect("the container KEDA reads exists");
        let name = variable["name"].as_str().unwrap();
        let value = resolved_variable(container, name, operator_value)
            .unwrap_or_else(|| panic!("{container_name} has no variable {name}"));
        assert!(
            !value.contains("$("),
            "{name} = {value} refers to a later or unknown variable"
        );
        parameters.insert(variable["parameter"].as_str().unwrap().to_owned(), value);
    }

    // The operator's Service `<cluster>` serves the management API over HTTPS on 15671; "%2F" is "/".
    assert_eq!(
        parameters.get("host").map(String::as_str),
        Some(format!("https://{cluster}.NAMESPACE.svc:15671/%2F").as_str()),
        "the management API's URL, by the name KEDA's namespace can resolve"
    );
    assert_eq!(parameters.get("tls").map(String::as_str), Some("enable"));
    assert_eq!(
        parameters.get("ca"),
        Some(&format!("{tls_secret}/ca.crt")),
        "KEDA trusts the broker's authority"
    );
    assert_eq!(
        parameters.get("username"),
        Some(&format!("{credentials}/username"))
    );
    assert_eq!(
        parameters.get("password"),
        Some(&format!("{credentials}/password"))
    );
}

/// Two autoscalers on one Deployment fight over its replica count: in the KEDA overlay the consumer is
/// the ScaledObject's alone, between bounds that make sense for the production shards, without bouncing,
/// and the publisher keeps scaling on CPU.
#[test]
#[ignore = "renders kube/ with kubectl; run by scripts/check-manifests"]
fn the_keda_overlay_leaves_the_consumer_to_keda_and_the_publisher_to_its_cpu_autoscaler() {
    let objects = render("kube/overlays/keda");
    let autoscalers = of_kind(&objects, "HorizontalPodAutoscaler");
    assert!(
        autoscalers
            .iter()
            .all(|hpa| hpa["spec"]["scaleTargetRef"]["name"] != "message-consumer"),
        "a CPU autoscaler still scales message-consumer"
    );
    let publisher = named(&objects, "HorizontalPodAutoscaler", "message-publisher")
        .expect("the publisher keeps its autoscaler");
    assert_eq!(
        publisher["spec"]["scaleTargetRef"]["name"],
        "message-publisher"
    );
    assert_eq!(publisher["spec"]["metrics"][0]["resource"]["name"], "cpu");
    let consumer = named(&objects, "Deployment", "message-consumer").unwrap();
    assert!(
        consumer["spec"]["replicas"].is_null(),
        "KEDA owns the count"
    );

    let spec = &the_scaled_object(&objects)["spec"];
    let min = spec["minReplicaCount"].as_u64().unwrap_or(0);
    let max = spec["maxReplicaCount"].as_u64().unwrap_or(100);
    let shards = u64::from(consumer_config(&objects).service.queue_shards);
    assert!(min >= 1, "scaled to zero, nobody would serve GET /message");
    assert!(
        min <= max && max <= shards,
        "{min}..{max} pods for {shards} shards"
    );

    let hpa = &spec["advanced"]["horizontalPodAutoscalerConfig"];
    let scale_down = &hpa["behavior"]["scaleDown"];
    assert!(
        scale_down["stabilizationWindowSeconds"]
            .as_u64()
            .unwrap_or(0)
            >= 60,
        "scaling down waits for demand to stay low: {scale_down:?}"
    );
    let policies = scale_down["policies"]
        .as_array()
        .expect("scale-down policies");
    assert!(!policies.is_empty());
    for policy in policies {
        let value = policy["value"].as_u64().unwrap();
        let limited = match policy["type"].as_str().unwrap() {
            "Pods" => value < max,
            "Percent" => value < 100,
            other => panic!("unknown policy type {other}"),
        };
        assert!(limited, "a policy lets every pod go at once: {policy:?}");
    }

    // Applied over the production overlay, KEDA must adopt its CPU autoscaler, or its webhook refuses
    // the ScaledObject (the Deployment would already be scaled by another autoscaler).
    let production = render("kube/overlays/production");
    let replaced = of_kind(&production, "HorizontalPodAutoscaler")
        .into_iter()
        .find(|h| h["spec"]["scaleTargetRef"]["name"] == "message-consumer")
        .expect("the production overlay scales the consumer on CPU");
    assert_eq!(hpa["name"], replaced["metadata"]["name"]);
    assert_eq!(
        the_scaled_object(&objects)["metadata"]["annotations"]
            ["scaledobject.keda.sh/transfer-hpa-ownership"],
        "true"
    );
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

/// A pod of namespace `namespace` carrying exactly `pod_labels`.
fn synthetic_pod(
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
fn operators_pods(objects: &[Value]) -> [Endpoint; 4] {
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
const SYSTEM_PORTS: [u16; 17] = [
    5671, 5672, 15671, 15672, 15692, 4369, 25672, 35671, 35672, 35677, 35682, 35683, 5432, 8000,
    9187, 8080, 8081,
];

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

/// The Prometheus Operator scrapes both services through the ServiceMonitor of the production overlay;
/// a Prometheus that discovers pods by annotation finds the same endpoint. minikube, without the
/// operator, must not get kinds its API server does not know.
#[test]
#[ignore = "renders kube/ with kubectl; run by scripts/check-manifests"]
fn both_services_are_scraped_on_the_port_and_path_they_serve_metrics_on() {
    let objects = render("kube/overlays/production");
    let monitors = of_kind(&objects, "ServiceMonitor");
    assert_eq!(monitors.len(), 1, "one ServiceMonitor");
    let monitor = monitors[0];
    let selected: Vec<&Value> = of_kind(&objects, "Service")
        .into_iter()
        .filter(|s| {
            selector_selects(
                &monitor["spec"]["selector"],
                &labels(&s["metadata"]["labels"]),
            )
        })
        .collect();
    let names: Vec<&str> = selected
        .iter()
        .map(|s| s["metadata"]["name"].as_str().unwrap())
        .collect();
    assert_eq!(names.len(), 2, "it selects {names:?}");
    for service in SERVICES {
        assert!(
            names.contains(&service),
            "{service} is not scraped: {names:?}"
        );
    }
    let endpoints = monitor["spec"]["endpoints"].as_array().expect("endpoints");
    assert!(!endpoints.is_empty());
    for endpoint in endpoints {
        assert_eq!(endpoint["path"].as_str().unwrap_or("/metrics"), "/metrics");
        let port = endpoint["port"].as_str().expect("a port by name");
        for service in &selected {
            assert!(
                service["spec"]["ports"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .any(|p| p["name"] == port),
                "{} has no port named {port}",
                service["metadata"]["name"]
            );
        }
    }

    for name in SERVICES {
        let deployment = named(&objects, "Deployment", name).unwrap();
        let annotations = &deployment["spec"]["template"]["metadata"]["annotations"];
        assert_eq!(annotations["prometheus.io/scrape"], "true", "{name}");
        assert_eq!(annotations["prometheus.io/path"], "/metrics", "{name}");
        assert_eq!(
            annotations["prometheus.io/port"].as_str(),
            Some(
                first_container(deployment)["ports"][0]["containerPort"]
                    .to_string()
                    .as_str()
            ),
            "{name} is scraped elsewhere than it listens"
        );
    }

    let minikube = render("kube");
    for kind in ["ServiceMonitor", "PrometheusRule"] {
        assert!(of_kind(&minikube, kind).is_empty(), "kube/ has a {kind}");
    }
}

/// Minutes in a promtool duration such as `25m`, `1h30m` or `90s`.
fn minutes(duration: &str) -> f64 {
    let mut total = 0.0;
    let mut number = String::new();
    for c in duration.chars() {
        if c.is_ascii_digit() || c == '.' {
            number.push(c);
        } else {
            let n: f64 = number.parse().expect("a number before the unit");
            number.clear();
            total += match c {
                'h' => n * 60.0,
                'm' => n,
                's' => n / 60.0,
                other => panic!("unknown unit {other} in {duration}"),
            };
        }
    }
    total
}

/// The alerts docs/operations.md lists and on-call relies on exist in the production overlay with a
/// severity and words for a person, and their promtool unit tests (scripts/check-alerts) show each one
/// quiet while its condition is young, firing, and quiet again after.
#[test]
#[ignore = "renders kube/ with kubectl; run by scripts/check-manifests"]
fn the_production_overlay_carries_the_seven_alerts_each_tested_firing_and_clearing() {
    let objects = render("kube/overlays/production");
    let rules = named(&objects, "PrometheusRule", "message-queue").expect("the PrometheusRule");
    let alerts: Vec<&Value> = rules["spec"]["groups"]
        .as_array()
        .expect("rule groups")
        .iter()
        .flat_map(|group| group["rules"].as_array().unwrap())
        .filter(|rule| rule["alert"].is_string())
        .collect();
    let mut names: Vec<&str> = alerts
        .iter()
        .map(|a| a["alert"].as_str().unwrap())
        .collect();
    names.sort_unstable();
    assert_eq!(
        names,
        [
            "MessageBacklogGrowing",
            "MessageDeadLettersPresent",
            "MessageDeadLettersRefused",
            "MessagePublisherConfirmsSlow",
            "MessageQueueWithoutConsumers",
            "MessageServiceHttpErrors",
            "MessageServiceNotReady",
        ]
    );
    for alert in &alerts {
        let name = &alert["alert"];
        assert!(
            ["warning", "critical"].contains(&alert["labels"]["severity"].as_str().unwrap_or("")),
            "{name} has no severity"
        );
        for annotation in ["summary", "description"] {
            assert!(
                alert["annotations"][annotation].is_string(),
                "{name} has no {annotation}"
            );
        }
    }
    let keda = render("kube/overlays/keda");
    assert!(named(&keda, "PrometheusRule", "message-queue").is_some());

    let path =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../kube/monitoring/tests/alerts-test.yaml");
    let tests: Value =
        serde_yaml_ng::from_str(&std::fs::read_to_string(path).expect("the alert tests")).unwrap();
    let cases: Vec<(&str, f64, bool)> = tests["tests"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|test| test["alert_rule_test"].as_array().into_iter().flatten())
        .map(|case| {
            (
                case["alertname"].as_str().unwrap(),
                minutes(case["eval_time"].as_str().unwrap()),
                case["exp_alerts"].as_array().is_some_and(|a| !a.is_empty()),
            )
        })
        .collect();
    for name in names {
        let firing: Vec<f64> = cases
            .iter()
            .filter(|(n, _, fires)| *n == name && *fires)
            .map(|(_, at, _)| *at)
            .collect();
        let quiet = |before: bool| {
            cases.iter().any(|(n, at, fires)| {
                *n == name && !*fires && firing.iter().any(|f| if before { at < f } else { at > f })
            })
        };
        assert!(!firing.is_empty(), "no test makes {name} fire");
        assert!(quiet(true), "no test shows {name} quiet before it fires");
        assert!(quiet(false), "no test shows {name} clearing");
    }
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

/// The consumer's topology as the manifests configure it (QUEUE_NAME, QUEUE_SHARDS, …).
fn configured_topology(objects: &[Value]) -> common::Topology {
    consumer_config(objects).service.topology()
}

/// The container of `deployment` named `name`, among its init containers and its containers.
fn container_named<'a>(deployment: &'a Value, name: &str) -> &'a Value {
    let spec = &deployment["spec"]["template"]["spec"];
    spec["initContainers"]
        .as_array()
        .into_iter()
        .chain(spec["containers"].as_array())
        .flatten()
        .find(|c| c["name"] == name)
        .unwrap_or_else(|| panic!("a container {name}"))
}

/// Under the production overlay each service logs in as a broker user of its own whose permissions are
/// exactly those the code says it needs, neither service declares anything, the setup step declares the
/// topology as the operator's administrator, and `.dead` has the policy of `DEAD_LETTER_LIMIT`.
#[test]
#[ignore = "renders kube/ with kubectl; run by scripts/check-manifests"]
fn production_services_log_in_as_users_with_exactly_the_permissions_the_code_needs() {
    let objects = render("kube/overlays/production");
    let topology = configured_topology(&objects);
    for (service, needed) in [
        ("message-publisher", topology.publisher_permissions()),
        ("message-consumer", topology.consumer_permissions()),
    ] {
        let user = named(&objects, "User", service).expect("a User for the service");
        assert_eq!(user["spec"]["rabbitmqClusterReference"]["name"], "rabbitmq");
        let permission = of_kind(&objects, "Permission")
            .into_iter()
            .find(|p| p["spec"]["userReference"]["name"] == service)
            .expect("a Permission for the service's user");
        assert_eq!(permission["spec"]["vhost"], "/");
        let granted = &permission["spec"]["permissions"];
        assert_eq!(granted["configure"], needed.configure.as_str(), "{service}");
        assert_eq!(granted["write"], needed.write.as_str(), "{service}");
        assert_eq!(granted["read"], needed.read.as_str(), "{service}");

        let deployment = named(&objects, "Deployment", service).expect("the Deployment");
        let env = environment(&objects, deployment);
        assert_eq!(env["DECLARE_TOPOLOGY"].as_deref(), Some("false"));
        let credentials = format!("{service}-user-credentials");
        let secret_of = |name: &str| {
            let variable = first_container(deployment)["env"]
                .as_array()
                .expect("env")
                .iter()
                .find(|v| v["name"] == name)
                .unwrap_or_else(|| panic!("{name} is set"));
            variable["valueFrom"]["secretKeyRef"]["name"].clone()
        };
        assert_eq!(secret_of("RABBITMQ_USERNAME"), credentials.as_str());
        assert_eq!(secret_of("RABBITMQ_PASSWORD"), credentials.as_str());
    }

    let consumer = named(&objects, "Deployment", "message-consumer").expect("the consumer");
    let setup = container_named(consumer, "declare-topology");
    assert_eq!(setup["args"], serde_json::json!(["declare-topology"]));
    let admin = setup["env"]
        .as_array()
        .expect("env")
        .iter()
        .find(|v| v["name"] == "RABBITMQ_PASSWORD")
        .expect("the administrator's password");
    assert_eq!(
        admin["valueFrom"]["secretKeyRef"]["name"],
        "rabbitmq-default-user"
    );

    let limit: u64 = environment(&objects, consumer)["DEAD_LETTER_LIMIT"]
        .clone()
        .expect("DEAD_LETTER_LIMIT is set")
        .parse()
        .expect("a number");
    let expected = topology.dead_letter_policy(limit);
    let policy = of_kind(&objects, "Policy")
        .into_iter()
        .find(|p| p["spec"]["name"] == expected.name.as_str())
        .expect("the dead-letter policy");
    assert_eq!(policy["spec"]["pattern"], expected.pattern.as_str());
    assert_eq!(policy["spec"]["applyTo"], "queues");
    assert_eq!(policy["spec"]["definition"], expected.definition);
}

/// The file a container reads at `path`: the Secret key behind the volume mounted above it.
fn mounted_secret_key(deployment: &Value, container: &Value, path: &str) -> (String, String) {
    let mount = container["volumeMounts"]
        .as_array()
        .expect("volume mounts")
        .iter()
        .find(|m| path.starts_with(&format!("{}/", m["mountPath"].as_str().unwrap())))
        .unwrap_or_else(|| panic!("{path} is mounted"));
    let file = &path[mount["mountPath"].as_str().unwrap().len() + 1..];
    let volume = deployment["spec"]["template"]["spec"]["volumes"]
        .as_array()
        .expect("volumes")
        .iter()
        .find(|v| v["name"] == mount["name"])
        .expect("the mounted volume");
    let item = volume["secret"]["items"]
        .as_array()
        .expect("the volume names its items")
        .iter()
        .find(|i| i["path"] == file)
        .expect("the file is an item of the Secret");
    (
        volume["secret"]["secretName"].as_str().unwrap().to_owned(),
        item["key"].as_str().unwrap().to_owned(),
    )
}

/// Under the production overlay every connection to the broker is `amqps://` on its TLS port, trusting
/// the `ca.crt` of the very Secret that holds the broker's certificate; and the consumer reaches
/// PostgreSQL with `sslmode=verify-full` against CloudNativePG's authority.
#[test]
#[ignore = "renders kube/ with kubectl; run by scripts/check-manifests"]
fn production_connections_use_tls_that_verifies_the_servers() {
    let objects = render("kube/overlays/production");
    let cluster = of_kind(&objects, "RabbitmqCluster")[0];
    let tls_secret = cluster["spec"]["tls"]["secretName"]
        .as_str()
        .expect("the broker has a TLS certificate");
    let certificate = of_kind(&objects, "Certificate")
        .into_iter()
        .find(|c| c["spec"]["secretName"] == tls_secret)
        .expect("cert-manager issues that Secret");
    assert!(certificate["spec"]["dnsNames"].is_array());

    let mut connections = 0;
    for (deployment, container) in [
        ("message-publisher", "publisher"),
        ("message-consumer", "consumer"),
        ("message-consumer", "declare-topology"),
    ] {
        let deployment = named(&objects, "Deployment", deployment).expect("the Deployment");
        let container = container_named(deployment, container);
        let url = resolved_variable(container, "AMQP_URL", |_, _| "x".to_owned())
            .expect("AMQP_URL is set");
        for node in common::amqp::node_urls(&url) {
            let uri: lapin::uri::AMQPUri = node.parse().expect("an AMQP URL");
            assert_eq!(uri.scheme, lapin::uri::AMQPScheme::AMQPS, "{node}");
            assert_eq!(uri.authority.port, 5671, "{node}");
            // Whether the certificate's names cover this host is proven by the services' own code:
            // production_tls_is_accepted_by_the_services_own_code_for_every_host_they_dial.
            connections += 1;
        }
        let ca_file = resolved_variable(container, "AMQP_CA_FILE", |_, _| String::new())
            .expect("AMQP_CA_FILE is set");
        assert_eq!(
            mounted_secret_key(deployment, container, &ca_file),
            (tls_secret.to_owned(), "ca.crt".to_owned())
        );
    }
    assert_eq!(connections, 9, "three containers, three nodes each");

    let consumer = named(&objects, "Deployment", "message-consumer").expect("the consumer");
    let container = container_named(consumer, "consumer");
    let url = resolved_variable(container, "DATABASE_URL", |_, _| {
        "postgresql://messages:x@postgresql-rw.NAMESPACE:5432/messages".to_owned()
    })
    .expect("DATABASE_URL is set");
    let options: sqlx::postgres::PgConnectOptions = url.parse().expect("a PostgreSQL URL");
    assert!(
        matches!(
            options.get_ssl_mode(),
            sqlx::postgres::PgSslMode::VerifyFull
        ),
        "{url}"
    );
    let root = url
        .split_once("sslrootcert=")
        .expect("a root certificate")
        .1
        .split('&')
        .next()
        .unwrap();
    let database = of_kind(&objects, "Cluster")[0]["metadata"]["name"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_eq!(
        mounted_secret_key(consumer, container, root),
        (format!("{database}-ca"), "ca.crt".to_owned()),
        "CloudNativePG's authority"
    );
}

/// In the single-node stack the broker's postStart hook gives each service a user with exactly the
/// permissions the code says it needs, with the password the service's Secret uses, and `.dead` the
/// policy of `DEAD_LETTER_LIMIT`; the setup step alone logs in as the administrator.
#[test]
#[ignore = "renders kube/ with kubectl; run by scripts/check-manifests"]
fn single_node_services_log_in_as_users_with_exactly_the_permissions_the_code_needs() {
    let objects = render("kube");
    let topology = configured_topology(&objects);
    let broker = named(&objects, "Deployment", "rabbitmq").expect("the broker");
    let hook = first_container(broker)["lifecycle"]["postStart"]["exec"]["command"]
        .as_array()
        .expect("a postStart hook")
        .iter()
        .map(|part| part.as_str().unwrap().to_owned())
        .collect::<Vec<_>>()
        .join(" ");
    assert!(
        hook.contains("/etc/rabbitmq/setup/service-users.sh"),
        "{hook}"
    );
    let volume = broker["spec"]["template"]["spec"]["volumes"]
        .as_array()
        .expect("volumes")
        .iter()
        .find(|v| v["name"] == "setup")
        .expect("the setup volume");
    let config_map = volume["configMap"]["name"].as_str().expect("a ConfigMap");
    let script = named(&objects, "ConfigMap", config_map).expect("the hook's ConfigMap")["data"]
        ["service-users.sh"]
        .as_str()
        .expect("the script")
        .to_owned();
    let broker_env = environment(&objects, broker);
    for (service, needed) in [
        ("message-publisher", topology.publisher_permissions()),
        ("message-consumer", topology.consumer_permissions()),
    ] {
        let line = format!(
            "set_permissions -p / {service} '{}' '{}' '{}'",
            needed.configure, needed.write, needed.read
        );
        assert!(script.contains(&line), "{line}\n{script}");
        let deployment = named(&objects, "Deployment", service).expect("the Deployment");
        let env = environment(&objects, deployment);
        assert_eq!(env["DECLARE_TOPOLOGY"].as_deref(), Some("false"));
        let uri: lapin::uri::AMQPUri = env["AMQP_URL"]
            .as_deref()
            .expect("AMQP_URL")
            .parse()
            .expect("an AMQP URL");
        assert_eq!(uri.authority.userinfo.username, service);
        let variable = format!("{}_PASSWORD", service.to_uppercase().replace('-', "_"));
        assert!(script.contains(&format!("user {service} \"${variable}\"")));
        assert_eq!(
            broker_env[&variable].as_deref(),
            Some(uri.authority.userinfo.password.as_str()),
            "{service} logs in with the password its user is made with"
        );
    }
    let consumer = named(&objects, "Deployment", "message-consumer").expect("the consumer");
    let limit: u64 = environment(&objects, consumer)["DEAD_LETTER_LIMIT"]
        .clone()
        .expect("DEAD_LETTER_LIMIT")
        .parse()
        .expect("a number");
    let policy = topology.dead_letter_policy(limit);
    let line = format!(
        "set_policy --apply-to queues {} '{}' '{}'",
        policy.name, policy.pattern, policy.definition
    );
    assert!(script.contains(&line), "{line}\n{script}");

    let setup = container_named(consumer, "declare-topology");
    let secret = setup["envFrom"]
        .as_array()
        .expect("envFrom")
        .iter()
        .find_map(|source| source["secretRef"]["name"].as_str())
        .expect("the setup step's Secret");
    let admin_url = named(&objects, "Secret", secret).expect("the Secret")["stringData"]
        ["AMQP_URL"]
        .as_str()
        .expect("AMQP_URL")
        .to_owned();
    let admin: lapin::uri::AMQPUri = admin_url.parse().expect("an AMQP URL");
    assert_eq!(
        broker_env["RABBITMQ_DEFAULT_USER"].as_deref(),
        Some(admin.authority.userinfo.username.as_str())
    );
    assert_eq!(
        broker_env["RABBITMQ_DEFAULT_PASS"].as_deref(),
        Some(admin.authority.userinfo.password.as_str())
    );
}

/// The Secrets a platform engineer makes before applying the production overlay (docs/production.md),
/// with the keys the services read from them, given test values here.
const USER_MADE_SECRETS: [(&str, &[(&str, &str)]); 2] = [
    (
        "message-publisher",
        &[("PUBLISH_TOKENS", "test-publish-token-0000000000001")],
    ),
    (
        "message-consumer",
        &[
            ("READ_TOKENS", "test-read-token-00000000000000001"),
            ("ADMIN_TOKENS", "test-admin-token-0000000000000001"),
        ],
    ),
];

/// Every variable container `name` of `deployment` gets, as the kubelet works it out: the ConfigMaps and
/// Secrets of `envFrom` (Secrets the cluster makes or a person makes, from `secret_value`), then `env` in
/// order, each `$(VAR)` replaced by a variable defined before it.
fn container_environment(
    objects: &[Value],
    deployment: &Value,
    name: &str,
    secret_value: &dyn Fn(&str, &str) -> String,
) -> BTreeMap<String, String> {
    let container = container_named(deployment, name);
    let mut env = BTreeMap::new();
    for source in container["envFrom"].as_array().into_iter().flatten() {
        let (kind, reference) = if source["configMapRef"].is_object() {
            ("ConfigMap", &source["configMapRef"])
        } else {
            ("Secret", &source["secretRef"])
        };
        let object_name = reference["name"].as_str().unwrap();
        if let Some(object) = named(objects, kind, object_name) {
            for field in ["data", "stringData"] {
                for (key, value) in object[field].as_object().into_iter().flatten() {
                    env.insert(key.clone(), value.as_str().unwrap_or_default().to_owned());
                }
            }
        } else if let Some((_, keys)) = USER_MADE_SECRETS
            .iter()
            .find(|(secret, _)| kind == "Secret" && *secret == object_name)
        {
            for (key, value) in keys.iter() {
                env.insert((*key).to_owned(), (*value).to_owned());
            }
        } else {
            assert_eq!(
                reference["optional"], true,
                "{kind} {object_name} is neither rendered nor made by a person, and not optional"
            );
        }
    }
    for variable in container["env"].as_array().into_iter().flatten() {
        let value = if let Some(literal) = variable["value"].as_str() {
            env.iter()
                .fold(literal.to_owned(), |value, (earlier, known)| {
                    value.replace(&format!("$({earlier})"), known)
                })
        } else {
            let reference = &variable["valueFrom"]["secretKeyRef"];
            secret_value(
                reference["name"].as_str().unwrap(),
                reference["key"].as_str().unwrap(),
            )
        };
        env.insert(variable["name"].as_str().unwrap().to_owned(), value);
    }
    env
}

/// The names CloudNativePG puts on its server certificate for Cluster `cluster` in `namespace`
/// (`GetClusterAltDNSNames` in its api/v1 cluster types): each of its three Services (`-rw`, `-r`,
/// `-ro`), short, with the namespace, with `.svc`, and with the cluster domain.
fn cloudnative_pg_server_names(cluster: &str, namespace: &str) -> Vec<String> {
    ["rw", "r", "ro"]
        .iter()
        .flat_map(|suffix| {
            let service = format!("{cluster}-{suffix}");
            [
                service.clone(),
                format!("{service}.{namespace}"),
                format!("{service}.{namespace}.svc"),
                format!("{service}.{namespace}.svc.cluster.local"),
            ]
        })
        .collect()
}

/// What the production overlay makes the cluster dial over TLS, with everything a dial needs.
struct ProductionDials {
    namespace: String,
    broker_names: Vec<String>,
    database_names: Vec<String>,
    /// The plan for the `dial` helper, with the files it reads under `root`.
    plan: Vec<Value>,
    /// Every host dialled, and the ports dialled on each kind of listener.
    hosts: Vec<String>,
    amqp_ports: Vec<u16>,
    https_ports: Vec<u16>,
    postgres_ports: Vec<u16>,
}

/// Reads the rendered production and KEDA overlays: the services' and the setup step's AMQP_URL nodes,
/// the consumer's DATABASE_URL, and the management API as the Messaging Topology Operator (documented:
/// `https://<cluster>.<namespace>.svc:15671` once the RabbitmqCluster has TLS) and KEDA (its
/// TriggerAuthentication's `host`) reach it. The files the containers read at the paths their mounts
/// give are written under `root` (the Secret's `ca.crt` each mount names) and the variables point there.
fn production_dials(root: &Path, broker_ca: &str, database_ca: &str) -> ProductionDials {
    let objects = render("kube/overlays/production");
    let keda = render("kube/overlays/keda");
    let consumer = named(&objects, "Deployment", "message-consumer").expect("the consumer");
    let namespace = consumer["metadata"]["namespace"]
        .as_str()
        .expect("the overlay sets a namespace")
        .to_owned();
    let cluster = named(&objects, "RabbitmqCluster", "rabbitmq").expect("the broker");
    let tls_secret = cluster["spec"]["tls"]["secretName"]
        .as_str()
        .expect("the broker has TLS")
        .to_owned();
    let certificate = of_kind(&objects, "Certificate")
        .into_iter()
        .find(|c| c["spec"]["secretName"] == tls_secret.as_str())
        .expect("cert-manager issues the broker's Secret");
    let broker_names: Vec<String> = certificate["spec"]["dnsNames"]
        .as_array()
        .expect("dnsNames")
        .iter()
        .map(|n| n.as_str().unwrap().to_owned())
        .collect();
    let database = of_kind(&objects, "Cluster")[0]["metadata"]["name"]
        .as_str()
        .unwrap()
        .to_owned();
    let database_names = cloudnative_pg_server_names(&database, &namespace);
    // What the operators' Secrets hold: the broker's `host` as its operator writes it; CloudNativePG's
    // `uri` as it writes it (`<cluster>-rw.<namespace>:5432`), with a role the test's server trusts.
    let operator_secret = |secret: &str, key: &str| -> String {
        match (secret, key) {
            (_, "username") | (_, "password") => "guest".to_owned(),
            (_, "host") => format!("rabbitmq.{namespace}.svc"),
            (_, "uri") => {
                format!("postgresql://postgres:x@{database}-rw.{namespace}:5432/postgres")
            }
            _ => panic!("no test value for {secret}/{key}"),
        }
    };
    let ca_of = |secret: &str| -> &str {
        if secret == tls_secret {
            broker_ca
        } else if secret == format!("{database}-ca") {
            database_ca
        } else {
            panic!("a mount of an unknown authority {secret}")
        }
    };

    let mut plan = Vec::new();
    let (mut hosts, mut amqp_ports, mut postgres_ports) = (Vec::new(), Vec::new(), Vec::new());
    for (deployment_name, container, service) in [
        ("message-publisher", "publisher", "publisher"),
        ("message-consumer", "consumer", "consumer"),
        ("message-consumer", "declare-topology", "consumer"),
    ] {
        let deployment = named(&objects, "Deployment", deployment_name).expect("the Deployment");
        let mut env = container_environment(&objects, deployment, container, &operator_secret);
        // The trust files: where the container's mounts put a Secret's key, written under root.
        let spec = container_named(deployment, container);
        for mount in spec["volumeMounts"].as_array().into_iter().flatten() {
            let mount_path = mount["mountPath"].as_str().unwrap();
            for value in env.values_mut() {
                let Some(at) = value.find(mount_path) else {
                    continue;
                };
                let file = value[at..]
                    .split(['&', ' ', ','])
                    .next()
                    .unwrap()
                    .to_owned();
                let (secret, key) = mounted_secret_key(deployment, spec, &file);
                assert_eq!(key, "ca.crt", "{file} is an authority's certificate");
                let local = root.join(file.trim_start_matches('/'));
                std::fs::create_dir_all(local.parent().unwrap()).unwrap();
                std::fs::write(&local, ca_of(&secret)).unwrap();
                *value = value.replace(&file, local.to_str().unwrap());
            }
        }
        for node in common::amqp::node_urls(&env["AMQP_URL"]) {
            let uri: lapin::uri::AMQPUri = node.parse().expect("an AMQP URL");
            assert_eq!(uri.scheme, lapin::uri::AMQPScheme::AMQPS, "{node}");
            hosts.push(uri.authority.host.clone());
            amqp_ports.push(uri.authority.port);
        }
        plan.push(serde_json::json!({"amqp": {"service": service, "env": env}}));
        if container == "consumer" {
            let options: sqlx::postgres::PgConnectOptions =
                env["DATABASE_URL"].parse().expect("a PostgreSQL URL");
            assert!(
                matches!(
                    options.get_ssl_mode(),
                    sqlx::postgres::PgSslMode::VerifyFull
                ),
                "the consumer verifies the database's certificate and name"
            );
            hosts.push(options.get_host().to_owned());
            postgres_ports.push(options.get_port());
            plan.push(serde_json::json!({"postgres": {"env": env}}));
        }
    }

    // The management API over HTTPS, as the Messaging Topology Operator and KEDA dial it.
    let broker_ca_file = root.join("management-ca.crt");
    std::fs::write(&broker_ca_file, broker_ca).unwrap();
    let mut https = vec![(format!("rabbitmq.{namespace}.svc"), 15671_u16)];
    let keda_consumer = named(&keda, "Deployment", "message-consumer").expect("the consumer");
    let keda_env = container_environment(&keda, keda_consumer, "consumer", &operator_secret);
    let authentication = named(&keda, "TriggerAuthentication", "message-consumer-rabbitmq")
        .expect("KEDA's TriggerAuthentication");
    let host_variable = authentication["spec"]["env"]
        .as_array()
        .expect("env parameters")
        .iter()
        .find(|p| p["parameter"] == "host")
        .expect("a host parameter")["name"]
        .as_str()
        .unwrap();
    let management = keda_env[host_variable]
        .strip_prefix("https://")
        .expect("KEDA reads the management API over TLS");
    let authority = management.split('/').next().unwrap();
    let (host, port) = authority.rsplit_once(':').expect("an explicit port");
    https.push((host.to_owned(), port.parse().expect("a port")));
    let mut https_ports = Vec::new();
    for (host, port) in https {
        hosts.push(host.clone());
        https_ports.push(port);
        plan.push(serde_json::json!({"tls": {
            "host": host, "port": port, "ca_file": broker_ca_file.to_str().unwrap()
        }}));
    }
    for ports in [&mut amqp_ports, &mut https_ports, &mut postgres_ports] {
        ports.sort_unstable();
        ports.dedup();
    }
    hosts.sort();
    hosts.dedup();
    ProductionDials {
        namespace,
        broker_names,
        database_names,
        plan,
        hosts,
        amqp_ports,
        https_ports,
        postgres_ports,
    }
}

/// A loopback address of this test's own, so that its listeners can take the ports the manifests name
/// (5671, 15671, 5432) without meeting anything else on this machine.
fn private_loopback() -> std::net::Ipv4Addr {
    let bytes = uuid::Uuid::new_v4().into_bytes();
    std::net::Ipv4Addr::new(127, 100 + bytes[0] % 100, bytes[1], 1 + bytes[2] % 250)
}

/// Runs the `dial` helper on `plan` in a mount namespace of its own, whose /etc/hosts (a bind mount of
/// a file written here) resolves every host of `hosts` to `address`: the system's file is not touched.
/// Returns its lines, `ok <target>` or `error <target>: <why>`.
fn dial_in_namespace(
    root: &Path,
    plan: &[Value],
    hosts: &[String],
    address: std::net::Ipv4Addr,
) -> Vec<String> {
    let plan_file = root.join("plan.json");
    std::fs::write(&plan_file, serde_json::to_vec(plan).unwrap()).unwrap();
    let hosts_file = root.join("hosts");
    let mut table = String::from("127.0.0.1 localhost\n::1 localhost\n");
    for host in hosts {
        table.push_str(&format!("{address} {host}\n"));
    }
    std::fs::write(&hosts_file, table).unwrap();
    let mut unshare = Command::new("unshare");
    // As root (here and in CI) a mount namespace alone; otherwise one owned by a new user namespace.
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        unshare.arg("--map-root-user");
    }
    let output = unshare
        .args(["--mount", "--propagation", "private", "sh", "-c"])
        .arg(r#"mount --bind "$1" /etc/hosts && exec "$2" "$3""#)
        .arg("sh")
        .arg(&hosts_file)
        .arg(env!("CARGO_BIN_EXE_dial"))
        .arg(&plan_file)
        .output()
        .expect("unshare (util-linux) is installed");
    assert!(
        output.status.success(),
        "the dial helper failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout)
        .unwrap()
        .lines()
        .map(str::to_owned)
        .collect()
}

/// Starts, at `address`, the listeners a production cluster would answer on: AMQP over TLS in front of
/// the machine's RabbitMQ, HTTPS (TLS in front of anything), and PostgreSQL's TLS in front of the
/// machine's PostgreSQL, presenting `broker` and `database` certificates.
async fn production_listeners(
    dials: &ProductionDials,
    address: std::net::Ipv4Addr,
    broker: &end_to_end::tls::TestAuthority,
    broker_names: &[String],
    database: &end_to_end::tls::TestAuthority,
) -> Vec<end_to_end::tls::TlsListener> {
    use end_to_end::tls::{TlsListener, Upstream};
    use std::net::SocketAddr;
    fn names(names: &[String]) -> Vec<&str> {
        names.iter().map(String::as_str).collect()
    }
    let rabbitmq = SocketAddr::from(([127, 0, 0, 1], 5672));
    let postgresql = SocketAddr::from(([127, 0, 0, 1], 5432));
    let mut listeners = Vec::new();
    for (ports, protocol, upstream) in [
        (&dials.amqp_ports, Upstream::Amqp, rabbitmq),
        (&dials.https_ports, Upstream::Amqp, rabbitmq),
        (&dials.postgres_ports, Upstream::Postgres, postgresql),
    ] {
        for port in ports {
            let identity = if protocol == Upstream::Postgres {
                database.issue(&names(&dials.database_names))
            } else {
                broker.issue(&names(broker_names))
            };
            let at = SocketAddr::from((address, *port));
            listeners.push(TlsListener::start_at(identity, protocol, upstream, at).await);
        }
    }
    listeners
}

/// The production overlay's TLS works the first time: a certificate issued for exactly the names of the
/// rendered broker Certificate is accepted, by the services' own code (`ServiceConfig::broker()` and
/// lapin over rustls, reading AMQP_CA_FILE as mounted), by every node of every AMQP_URL the publisher,
/// the consumer and the setup step are given, with the host names and ports as rendered; and the same
/// authority verifies the management API's name as the Messaging Topology Operator and KEDA dial it. The
/// consumer's `sslmode=verify-full` connection (its own pool) accepts a server certificate bearing the
/// names CloudNativePG gives its own. The broker certificate the overlay had (`rabbitmq` and
/// `*.rabbitmq-nodes`) is refused by the same code: rustls takes no wildcard before a single label.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "renders kube/ with kubectl; run by scripts/check-manifests"]
async fn production_tls_is_accepted_by_the_services_own_code_for_every_host_they_dial() {
    // Arrange
    let root =
        std::env::temp_dir().join(format!("manifests-tls-{}", uuid::Uuid::new_v4().simple()));
    std::fs::create_dir_all(&root).unwrap();
    let broker = end_to_end::tls::TestAuthority::new("message-queue-ca");
    let database = end_to_end::tls::TestAuthority::new("postgresql-ca");
    let dials = production_dials(&root, &broker.pem(), &database.pem());
    assert!(
        dials
            .broker_names
            .iter()
            .all(|name| !name.contains("NAMESPACE")),
        "the namespace is filled into {:?}",
        dials.broker_names
    );
    assert!(dials
        .broker_names
        .contains(&format!("rabbitmq.{}.svc", dials.namespace)));
    let address = private_loopback();

    // Act: the certificate of the rendered names.
    let listeners =
        production_listeners(&dials, address, &broker, &dials.broker_names, &database).await;
    let lines = dial_in_namespace(&root, &dials.plan, &dials.hosts, address);

    // Assert: three containers, three nodes each; the database; the management API twice.
    assert_eq!(lines.len(), 9 + 1 + 2, "{lines:#?}");
    for line in &lines {
        assert!(line.starts_with("ok "), "{line}\n(all: {lines:#?})");
    }
    let handshakes: usize = listeners.iter().map(|l| l.handshakes()).sum();
    assert!(
        handshakes >= lines.len(),
        "every dial went through a listener"
    );
    drop(listeners);

    // Act: the certificate the overlay had before, on another address (the listeners above close
    // their sockets only once their tasks have stopped).
    let address = private_loopback();
    let old_names = ["rabbitmq".to_owned(), "*.rabbitmq-nodes".to_owned()];
    let listeners = production_listeners(&dials, address, &broker, &old_names, &database).await;
    let lines = dial_in_namespace(&root, &dials.plan, &dials.hosts, address);
    drop(listeners);
    std::fs::remove_dir_all(&root).unwrap();

    // Assert: every broker dial is refused for the name, the database still verifies.
    for line in &lines {
        if line.contains("postgres") {
            assert!(line.starts_with("ok "), "{line}");
        } else {
            assert!(
                line.starts_with("error ") && line.contains("not valid for name"),
                "{line}"
            );
        }
    }
}

/// The production consumer's settings obey the rules the code and docs/configuration.md state, read
/// with the consumer's own configuration (`ConsumerConfig::from_vars`, `effective_prefetch`, the
/// topology's drained queues): each shard's share of the prefetch fills a whole batch even at the most
/// writers (a batch is at most `prefetch / (writers + 1)`, consumer/src/ingest/flow.rs); the writers of
/// every drained queue fit the ingestion pool (docs/configuration.md: "keep `WRITERS_MAX` × queues
/// within `DB_POOL_SIZE`"); and the most pods that can run, with their pools, fit PostgreSQL's
/// max_connections.
#[test]
#[ignore = "renders kube/ with kubectl; run by scripts/check-manifests"]
fn production_consumer_settings_obey_the_rules_of_the_code_and_the_readme() {
    for overlay in ["kube/overlays/production", "kube/overlays/keda"] {
        let objects = render(overlay);
        let config = consumer_config(&objects);
        let topology = config.service.topology();
        assert!(topology.shards().len() > 1, "{overlay}: sharded");
        let queues: Vec<String> = topology
            .drained_queues()
            .into_iter()
            .map(str::to_owned)
            .collect();
        let per_shard = usize::from(consumer::ingest::prefetch_of(
            &topology.shards()[0],
            &queues,
            &topology,
            config.effective_prefetch(),
        ));
        let batch_at_most_writers = per_shard / (config.writers_max + 1);
        assert!(
            batch_at_most_writers >= config.batch_size,
            "{overlay}: a shard's prefetch of {per_shard} fills batches of {batch_at_most_writers} \
             with {} writers, below BATCH_SIZE {}",
            config.writers_max,
            config.batch_size
        );
        let queues = queues.len();
        assert!(
            config.writers_max * queues <= config.db_pool_size as usize,
            "{overlay}: WRITERS_MAX {} x {queues} queues exceeds DB_POOL_SIZE {}",
            config.writers_max,
            config.db_pool_size
        );

        let consumer = named(&objects, "Deployment", "message-consumer").unwrap();
        let surge = consumer["spec"]["strategy"]["rollingUpdate"]["maxSurge"]
            .as_u64()
            .unwrap_or(1);
        let most_pods = match named(&objects, "HorizontalPodAutoscaler", "message-consumer") {
            Some(hpa) => hpa["spec"]["maxReplicas"].as_u64().unwrap(),
            None => the_scaled_object(&objects)["spec"]["maxReplicaCount"]
                .as_u64()
                .unwrap(),
        } + surge;
        let per_pod = u64::from(config.db_pool_size + config.db_read_pool_size);
        let cluster = of_kind(&objects, "Cluster")[0];
        let max_connections: u64 = cluster["spec"]["postgresql"]["parameters"]["max_connections"]
            .as_str()
            .unwrap_or("100")
            .parse()
            .unwrap();
        // PostgreSQL keeps superuser_reserved_connections (3) and CloudNativePG's own sessions aside.
        assert!(
            most_pods * per_pod + 10 <= max_connections,
            "{overlay}: {most_pods} pods x {per_pod} connections exceed max_connections {max_connections}"
        );
    }
}

/// In production the API is closed by default: both services are told to refuse to start without their
/// tokens, the token Secrets are required, no Service opens a port on every node, and the example
/// Ingress serves TLS and routes every API path to the service that serves it (from each service's
/// OpenAPI document), but no probe, metrics or OpenAPI path.
#[test]
#[ignore = "renders kube/ with kubectl; run by scripts/check-manifests"]
fn production_api_requires_tokens_and_is_reached_only_through_the_tls_ingress() {
    for overlay in ["kube/overlays/production", "kube/overlays/keda"] {
        let objects = render(overlay);
        for (name, secret) in [
            ("message-publisher", "message-publisher"),
            ("message-consumer", "message-consumer"),
        ] {
            let deployment = named(&objects, "Deployment", name).unwrap();
            let env = environment(&objects, deployment);
            assert_eq!(
                env.get("REQUIRE_TOKENS").cloned().flatten().as_deref(),
                Some("true"),
                "{overlay}: {name}"
            );
            let reference = first_container(deployment)["envFrom"]
                .as_array()
                .unwrap()
                .iter()
                .find(|source| source["secretRef"]["name"] == secret)
                .expect("the token Secret is loaded");
            assert_ne!(
                reference["secretRef"]["optional"], true,
                "{overlay}: {name} starts without its tokens"
            );
        }
        for service in of_kind(&objects, "Service") {
            let kind = service["spec"]["type"].as_str().unwrap_or("ClusterIP");
            assert_eq!(
                kind, "ClusterIP",
                "{overlay}: {}",
                service["metadata"]["name"]
            );
        }
    }

    let production = render("kube/overlays/production");
    let ingress_objects = render("kube/examples/ingress");
    let ingress = of_kind(&ingress_objects, "Ingress")[0];
    assert_eq!(
        ingress["metadata"]["namespace"],
        named(&production, "Deployment", "message-consumer").unwrap()["metadata"]["namespace"]
    );
    let rule = &ingress["spec"]["rules"][0];
    let host = rule["host"].as_str().expect("a host");
    assert!(
        ingress["spec"]["tls"]
            .as_array()
            .into_iter()
            .flatten()
            .any(
                |tls| tls["hosts"].as_array().unwrap().iter().any(|h| h == host)
                    && tls["secretName"].is_string()
            ),
        "TLS for {host}"
    );
    let paths = rule["http"]["paths"].as_array().expect("paths");
    // The longest matching path wins; Prefix matches whole path elements.
    let route = |request: &str| -> Option<String> {
        paths
            .iter()
            .filter(|p| {
                let path = p["path"].as_str().unwrap();
                match p["pathType"].as_str().unwrap() {
                    "Exact" => request == path,
                    _ => {
                        request == path
                            || request.starts_with(&format!("{}/", path.trim_end_matches('/')))
                    }
                }
            })
            .max_by_key(|p| p["path"].as_str().unwrap().len())
            .map(|p| p["backend"]["service"]["name"].as_str().unwrap().to_owned())
    };
    let internal = ["/healthz", "/readyz", "/metrics", "/openapi.json"];
    for (service, document) in [
        ("message-publisher", "publisher/openapi.yaml"),
        ("message-consumer", "consumer/openapi.yaml"),
    ] {
        let text = std::fs::read_to_string(
            Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("..")
                .join(document),
        )
        .unwrap();
        let openapi: Value = serde_yaml_ng::from_str(&text).unwrap();
        let backend = named(&production, "Service", service).expect("the Service");
        for path in openapi["paths"].as_object().unwrap().keys() {
            let request = path.replace("{id}", "0198c8f0-0000-7000-8000-000000000000");
            let routed = route(&request);
            if internal.contains(&path.as_str()) {
                assert!(routed.is_none(), "{path} is reachable from outside");
            } else {
                assert_eq!(routed.as_deref(), Some(service), "{path}");
            }
        }
        for p in paths
            .iter()
            .filter(|p| p["backend"]["service"]["name"] == service)
        {
            let port = &p["backend"]["service"]["port"]["name"];
            assert!(
                backend["spec"]["ports"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .any(|sp| sp["name"] == *port),
                "{service} has no port {port}"
            );
        }
    }
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

/// The example Ingress lets through the largest request the production publisher accepts, so that the
/// publisher answers a batch (or refuses it with its own problem body), never the controller's own page.
/// The limit is read with the publisher's own configuration from the overlay's environment.
#[test]
#[ignore = "renders kube/ with kubectl; run by scripts/check-manifests"]
fn the_ingress_lets_through_the_largest_batch_the_production_publisher_takes() {
    let production = render("kube/overlays/production");
    let publisher = named(&production, "Deployment", "message-publisher").unwrap();
    let known = environment(&production, publisher)
        .into_iter()
        .filter_map(|(k, v)| v.filter(|v| !v.contains("$(")).map(|v| (k, v)));
    let config =
        common::config::PublisherConfig::from_vars(known).expect("the publisher's configuration");
    let ingress_objects = render("kube/examples/ingress");
    let ingress = of_kind(&ingress_objects, "Ingress")[0];
    let limit = ingress["metadata"]["annotations"]["nginx.ingress.kubernetes.io/proxy-body-size"]
        .as_str()
        .expect("a body size: ingress-nginx's default is 1m");
    let (number, unit) = limit.split_at(limit.len() - 1);
    let bytes = number.parse::<usize>().unwrap()
        * match unit {
            "k" => 1 << 10,
            "m" => 1 << 20,
            "g" => 1 << 30,
            other => panic!("unit {other}"),
        };
    assert!(
        bytes >= config.max_batch_bytes,
        "proxy-body-size {limit} is below the publisher's MAX_BATCH_BYTES {}",
        config.max_batch_bytes
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
    let topology = consumer_config(&objects).service.topology();

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
