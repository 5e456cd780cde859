//! The broker users each service logs in as, with exactly the permissions the code says it needs.

use crate::render::{
    configured_topology, container_named, environment, first_container, named, of_kind, render,
};

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
