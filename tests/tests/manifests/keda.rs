//! How KEDA scales the consumer: on which queues, through which user and address, and alongside the
//! publisher's CPU autoscaler.

use std::{
    collections::BTreeMap,
    io::Write,
    process::{Command, Stdio},
};

use serde_json::Value;

use crate::policy::broker_pod_of;
use crate::render::{
    consumer_config, named, of_kind, render, resolved_variable, the_scaled_object,
};

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
        value > f64::from(config.ingest.prefetch),
        "a pod's own prefetched deliveries ({}) would keep pods up by themselves at {value} a pod",
        config.ingest.prefetch
    );
    assert!((0.0..=value).contains(&activation));

    let regex = metadata["queueName"].as_str().expect("a queue regex");
    let topology = config.broker.topology();
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
    let shards = u64::from(consumer_config(&objects).broker.queue_shards);
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
