//! How Prometheus scrapes the services, and the alerts of the production overlay.

use std::path::Path;

use serde_json::Value;

use crate::render::{first_container, labels, named, of_kind, render, selector_selects, SERVICES};

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
fn the_production_overlay_carries_the_eight_alerts_each_tested_firing_and_clearing() {
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
            "MessageRetentionBehind",
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

/// Grafana's dashboard sidecar (kube-prometheus-stack) finds the dashboard in the production overlay by
/// its label, under a name that stays the same from release to release, and what it loads is the file
/// one imports by hand: the ConfigMap is generated from it, not a second copy.
#[test]
#[ignore = "renders kube/ with kubectl; run by scripts/check-manifests"]
fn the_production_overlay_ships_the_grafana_dashboard_file_as_a_labelled_config_map() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../kube/monitoring/dashboards/message-queue.json");
    let file = std::fs::read_to_string(path).expect("the dashboard file");
    for overlay in ["kube/overlays/production", "kube/overlays/keda"] {
        let objects = render(overlay);
        let map = named(&objects, "ConfigMap", "message-queue-dashboard")
            .unwrap_or_else(|| panic!("{overlay} has no dashboard ConfigMap"));
        assert_eq!(
            map["metadata"]["labels"]["grafana_dashboard"], "1",
            "{overlay}"
        );
        assert_eq!(
            map["data"]["message-queue.json"].as_str(),
            Some(file.as_str()),
            "{overlay}: the ConfigMap differs from the file"
        );
    }
    let minikube = render("kube");
    assert!(named(&minikube, "ConfigMap", "message-queue-dashboard").is_none());
}
