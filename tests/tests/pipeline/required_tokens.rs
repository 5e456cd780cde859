//! `REQUIRE_TOKENS=true`, as the production overlay sets it: a service whose token Secret is missing
//! must stop at start-up naming what it lacks, never come up serving its data routes to anyone.

use std::{
    process::{Command, Output, Stdio},
    time::{Duration, Instant},
};

/// Runs `binary` with `env` on a free port and waits (at most 20 s) for it to exit by itself.
fn run_until_exit(binary: &str, env: &[(&str, &str)]) -> Output {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .expect("a free port")
        .port();
    let mut child = Command::new(binary)
        .env_clear()
        .env("HTTP_HOST", "127.0.0.1")
        .env("HTTP_PORT", port.to_string())
        .env(
            "QUEUE_NAME",
            format!("required-tokens.{}", uuid::Uuid::new_v4()),
        )
        .envs(env.iter().copied())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("the service starts");
    let deadline = Instant::now() + Duration::from_secs(20);
    while child.try_wait().expect("waitable").is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("{binary} was still running after 20 s with {env:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    child.wait_with_output().expect("its output")
}

#[test]
fn a_service_missing_a_required_token_stops_at_start_up_naming_the_variable() {
    let cases = [
        (
            env!("CARGO_BIN_EXE_publisher-process"),
            vec![("REQUIRE_TOKENS", "true")],
            "PUBLISH_TOKENS",
        ),
        (
            env!("CARGO_BIN_EXE_consumer-process"),
            vec![
                ("REQUIRE_TOKENS", "true"),
                ("READ_TOKENS", "read-token-for-the-test-01"),
            ],
            "ADMIN_TOKENS",
        ),
        (
            env!("CARGO_BIN_EXE_consumer-process"),
            vec![
                ("REQUIRE_TOKENS", "true"),
                ("ADMIN_TOKENS", "admin-token-for-the-test-1"),
            ],
            "READ_TOKENS",
        ),
    ];
    for (binary, env, missing) in cases {
        let output = run_until_exit(binary, &env);
        let said = String::from_utf8_lossy(&output.stderr);
        assert!(!output.status.success(), "{binary} with {env:?} exited 0");
        assert!(
            said.contains(missing) && said.contains("REQUIRE_TOKENS"),
            "{binary} with {env:?} should name {missing}: {said}"
        );
    }
}
