//! Rendering the overlays and reading what they give a container: objects by kind and name, labels and
//! selectors, and every variable a container gets as the kubelet works it out.

use common::settings::Settings as _;
use std::{collections::BTreeMap, path::Path, process::Command};

use consumer::config::Config as ConsumerConfig;
use publisher::config::Config as PublisherConfig;
use serde_json::Value;

pub const NEEDS_KUBECTL: &str = "renders kube/ with kubectl; run by scripts/check-manifests";

/// Our two services: Deployment name, container port's HTTP_PORT default.
pub const SERVICES: [&str; 2] = ["message-publisher", "message-consumer"];

pub fn render(overlay: &str) -> Vec<Value> {
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

pub fn of_kind<'a>(objects: &'a [Value], kind: &str) -> Vec<&'a Value> {
    objects.iter().filter(|o| o["kind"] == kind).collect()
}

pub fn named<'a>(objects: &'a [Value], kind: &str, name: &str) -> Option<&'a Value> {
    objects
        .iter()
        .find(|o| o["kind"] == kind && o["metadata"]["name"] == name)
}

pub fn labels(value: &Value) -> BTreeMap<String, String> {
    value
        .as_object()
        .map(|map| {
            map.iter()
                .map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_owned()))
                .collect()
        })
        .unwrap_or_default()
}

pub fn selects(selector: &BTreeMap<String, String>, labels: &BTreeMap<String, String>) -> bool {
    selector.iter().all(|(k, v)| labels.get(k) == Some(v))
}

pub fn first_container(deployment: &Value) -> &Value {
    &deployment["spec"]["template"]["spec"]["containers"][0]
}

/// Every variable a container gets, with its value where the manifests know it: `env`, then the data of
/// the ConfigMaps and Secrets it loads with `envFrom`.
pub fn environment(objects: &[Value], deployment: &Value) -> BTreeMap<String, Option<String>> {
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

/// Whether a Kubernetes label selector (`matchLabels` and `matchExpressions`) selects `object_labels`.
pub fn selector_selects(selector: &Value, object_labels: &BTreeMap<String, String>) -> bool {
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
pub fn resolved_variable(
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

pub fn the_scaled_object(objects: &[Value]) -> &Value {
    let scaled_objects = of_kind(objects, "ScaledObject");
    assert_eq!(scaled_objects.len(), 1, "one ScaledObject");
    scaled_objects[0]
}

/// The variables of `deployment` whose value the manifests give literally (not a Secret's, nor a
/// `$(VAR)` expanded in the pod).
fn known_environment(objects: &[Value], deployment: &str) -> Vec<(String, String)> {
    let deployment = named(objects, "Deployment", deployment).expect("the Deployment");
    environment(objects, deployment)
        .into_iter()
        .filter_map(|(k, v)| v.filter(|v| !v.contains("$(")).map(|v| (k, v)))
        .collect()
}

pub fn consumer_config(objects: &[Value]) -> ConsumerConfig {
    ConsumerConfig::from_vars(known_environment(objects, "message-consumer"))
        .expect("the consumer's configuration parses")
}

pub fn publisher_config(objects: &[Value]) -> PublisherConfig {
    PublisherConfig::from_vars(known_environment(objects, "message-publisher"))
        .expect("the publisher's configuration parses")
}

/// The consumer's topology as the manifests configure it (QUEUE_NAME, QUEUE_SHARDS, …).
pub fn configured_topology(objects: &[Value]) -> common::amqp::Topology {
    consumer_config(objects).broker.topology()
}

/// The container of `deployment` named `name`, among its init containers and its containers.
pub fn container_named<'a>(deployment: &'a Value, name: &str) -> &'a Value {
    let spec = &deployment["spec"]["template"]["spec"];
    spec["initContainers"]
        .as_array()
        .into_iter()
        .chain(spec["containers"].as_array())
        .flatten()
        .find(|c| c["name"] == name)
        .unwrap_or_else(|| panic!("a container {name}"))
}

/// The file a container reads at `path`: the Secret key behind the volume mounted above it.
pub fn mounted_secret_key(deployment: &Value, container: &Value, path: &str) -> (String, String) {
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
pub fn container_environment(
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
