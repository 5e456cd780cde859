//! No password or token reaches a log line or an error message: both services run with credentials in
//! their URLs and tokens in their environment, against a broker and a database that refuse them or are
//! not there, and a configuration that does not parse.

use std::{process::Command, time::Duration};

use end_to_end::{
    eventually,
    process::{LogLines, ServiceProcess},
};

const AMQP_PASSWORD: &str = "amqp-password-never-logged";
const DB_PASSWORD: &str = "db-password-never-logged";
const TOKEN: &str = "bearer-token-never-logged-0001";

/// Every line `logs` holds, as text.
fn lines(logs: &LogLines) -> Vec<String> {
    logs.events()
        .iter()
        .map(|event| event.to_string())
        .collect()
}

fn assert_clean(text: &str, who: &str) {
    for secret in [AMQP_PASSWORD, DB_PASSWORD, TOKEN] {
        assert!(!text.contains(secret), "{who} wrote {secret}: {text}");
    }
}

#[test]
fn services_with_unreachable_peers_log_no_password_and_no_token() {
    let unreachable_broker = format!("amqp://app:{AMQP_PASSWORD}@127.0.0.1:1/%2f");
    let env = [
        ("AMQP_URL", unreachable_broker.clone()),
        (
            "DATABASE_URL",
            format!("postgres://app:{DB_PASSWORD}@127.0.0.1:5432/nowhere"),
        ),
        ("PUBLISH_TOKENS", TOKEN.to_owned()),
        ("READ_TOKENS", TOKEN.to_owned()),
        ("ADMIN_TOKENS", TOKEN.to_owned()),
    ];
    let log = "debug,lapin=info,sqlx=info,actix_server=info,h2=info,hyper=info";
    let mut processes = Vec::new();
    for binary in [
        env!("CARGO_BIN_EXE_publisher-process"),
        env!("CARGO_BIN_EXE_consumer-process"),
    ] {
        let mut command = Command::new(binary);
        command.envs(env.iter().map(|(k, v)| (*k, v.as_str())));
        let process = ServiceProcess::spawn(command, None, log);
        let logs = process.logs().clone();
        processes.push((binary, process, logs));
    }
    // Both fail to connect and say so, more than once, with backoff.
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    for (binary, _, logs) in &processes {
        runtime.block_on(eventually(
            Duration::from_secs(20),
            &format!("{binary} to log its failed connections"),
            || async {
                let failures = lines(logs)
                    .iter()
                    .filter(|line| {
                        line.contains("\"level\":\"WARN\"") || line.contains("\"level\":\"ERROR\"")
                    })
                    .count();
                (failures >= 2).then_some(())
            },
        ));
    }
    for (binary, mut process, logs) in processes {
        process.kill();
        let all = lines(&logs).join("\n");
        assert!(!all.is_empty(), "{binary} logged nothing");
        assert_clean(&all, binary);
    }
}

#[test]
fn a_configuration_that_does_not_parse_is_refused_without_its_password() {
    for binary in [
        env!("CARGO_BIN_EXE_publisher-process"),
        env!("CARGO_BIN_EXE_consumer-process"),
    ] {
        let output = Command::new(binary)
            .env(
                "AMQP_URL",
                format!("amqp://app:{AMQP_PASSWORD}@127.0.0.1:notaport/%2f"),
            )
            .env("PUBLISH_TOKENS", TOKEN)
            .env("LOG_FORMAT", "json")
            .output()
            .expect("the service runs");
        assert!(
            !output.status.success(),
            "{binary} refused the configuration"
        );
        let said = format!(
            "{}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
        assert!(
            said.contains("AMQP_URL"),
            "{binary} names the variable: {said}"
        );
        assert_clean(&said, binary);
    }
}
