//! Dialling what the production overlay names over TLS: the hosts, ports and authorities it renders, a
//! private loopback address with listeners of the test's own, and the `dial` helper in a mount namespace.

use std::{path::Path, process::Command};

use serde_json::Value;

use crate::render::{
    container_environment, container_named, mounted_secret_key, named, of_kind, render,
};

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
pub struct ProductionDials {
    pub namespace: String,
    pub broker_names: Vec<String>,
    pub database_names: Vec<String>,
    /// The plan for the `dial` helper, with the files it reads under `root`.
    pub plan: Vec<Value>,
    /// Every host dialled, and the ports dialled on each kind of listener.
    pub hosts: Vec<String>,
    pub amqp_ports: Vec<u16>,
    pub https_ports: Vec<u16>,
    pub postgres_ports: Vec<u16>,
}

/// Reads the rendered production and KEDA overlays: the services' and the setup step's AMQP_URL nodes,
/// the consumer's DATABASE_URL, and the management API as the Messaging Topology Operator (documented:
/// `https://<cluster>.<namespace>.svc:15671` once the RabbitmqCluster has TLS) and KEDA (its
/// TriggerAuthentication's `host`) reach it. The files the containers read at the paths their mounts
/// give are written under `root` (the Secret's `ca.crt` each mount names) and the variables point there.
pub fn production_dials(root: &Path, broker_ca: &str, database_ca: &str) -> ProductionDials {
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
pub fn private_loopback() -> std::net::Ipv4Addr {
    let bytes = uuid::Uuid::new_v4().into_bytes();
    std::net::Ipv4Addr::new(127, 100 + bytes[0] % 100, bytes[1], 1 + bytes[2] % 250)
}

/// Runs the `dial` helper on `plan` in a mount namespace of its own, whose /etc/hosts (a bind mount of
/// a file written here) resolves every host of `hosts` to `address`: the system's file is not touched.
/// Returns its lines, `ok <target>` or `error <target>: <why>`.
pub fn dial_in_namespace(
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
pub async fn production_listeners(
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
