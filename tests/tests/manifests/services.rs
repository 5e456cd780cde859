//! What the Services select and target, the environment and ports of the services, the autoscalers
//! and the probes.

use common::settings::Settings as _;
use consumer::config::Config as ConsumerConfig;
use publisher::config::Config as PublisherConfig;
use serde_json::Value;

use crate::render::{
    environment, first_container, labels, named, of_kind, render, selects, NEEDS_KUBECTL, SERVICES,
};

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
            let reads = if name == "message-publisher" {
                PublisherConfig::variables()
            } else {
                ConsumerConfig::variables()
            };
            for key in env.keys().filter(|key| !interpolated.contains(key)) {
                assert!(
                    reads.contains(key),
                    "{overlay}: {name} gets {key}, which it does not read"
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
                PublisherConfig::from_vars(known).map(drop)
            } else {
                ConsumerConfig::from_vars(known).map(drop)
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
    let publisher = end_to_end::spawn_publisher(&PublisherConfig::from_vars(env()).unwrap());
    let consumer = end_to_end::spawn_consumer(&ConsumerConfig::from_vars(env()).unwrap());
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
