//! The production API's tokens and the example Ingress in front of it.

use std::path::Path;

use serde_json::Value;

use crate::render::{environment, first_container, named, of_kind, publisher_config, render};

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

/// The example Ingress lets through the largest request the production publisher accepts, so that the
/// publisher answers a batch (or refuses it with its own problem body), never the controller's own page.
/// The limit is read with the publisher's own configuration from the overlay's environment.
#[test]
#[ignore = "renders kube/ with kubectl; run by scripts/check-manifests"]
fn the_ingress_lets_through_the_largest_batch_the_production_publisher_takes() {
    let config = publisher_config(&render("kube/overlays/production"));
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
        bytes >= config.body.max_batch_bytes,
        "proxy-body-size {limit} is below the publisher's MAX_BATCH_BYTES {}",
        config.body.max_batch_bytes
    );
}
