//! A token the services refuse gives the problem they answered, readably, and a non-zero exit; the
//! right one, from a file, works.

use common::web::Tokens;
use end_to_end::{StackConfig, TestStack};

use crate::helpers::{line_message, mq, run, stderr, TempFile};

const PUBLISH: &str = "publish-token-for-mq-tests-0001";
const READ: &str = "read-token-for-mq-tests-00000001";

async fn stack_with_tokens() -> TestStack {
    let tokens = Tokens::from_vars(&[
        ("PUBLISH_TOKENS".into(), PUBLISH.into()),
        ("READ_TOKENS".into(), READ.into()),
    ])
    .expect("valid tokens");
    let mut config = StackConfig::unique();
    config.publisher.http.tokens = tokens.clone();
    config.consumer.http.tokens = tokens;
    TestStack::start_with(config).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_token_is_reported_as_the_problem_and_fails_the_command() {
    // Arrange
    let stack = stack_with_tokens().await;
    let input = TempFile::with_lines((1..=3).map(line_message));

    // Act
    let publish = run({
        let mut command = mq(&stack);
        command
            .env("MQ_TOKEN", "not-a-token-anyone-gave-out-01")
            .args(["publish", input.path()]);
        command
    })
    .await;
    let get = run({
        let mut command = mq(&stack);
        command
            .env("MQ_TOKEN", PUBLISH)
            .args(["get", &uuid::Uuid::now_v7().to_string()]);
        command
    })
    .await;

    // Assert
    for (what, output, status) in [
        ("publish", &publish, "401 Unauthorized"),
        ("get", &get, "403 Forbidden"),
    ] {
        let errors = stderr(output);
        assert_eq!(output.status.code(), Some(1), "{what}: {errors}");
        assert!(errors.contains(status), "{what}: {errors}");
        assert!(
            !errors.contains("{\""),
            "{what} dumped a raw body: {errors}"
        );
        assert!(output.stdout.is_empty(), "{what}");
    }
    assert_eq!(stack.row_count().await, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_right_tokens_from_a_file_publish_and_read() {
    // Arrange
    let stack = stack_with_tokens().await;
    let input = TempFile::with_lines((1..=3).map(line_message));
    let (publish_token, read_token) = (TempFile::named("token"), TempFile::named("token"));
    std::fs::write(&publish_token.0, format!("{PUBLISH}\n")).unwrap();
    std::fs::write(&read_token.0, READ).unwrap();

    // Act
    let publish = run({
        let mut command = mq(&stack);
        command.args([
            "publish",
            input.path(),
            "--token-file",
            publish_token.path(),
        ]);
        command
    })
    .await;
    assert_eq!(publish.status.code(), Some(0), "{}", stderr(&publish));
    crate::helpers::wait_settled(&stack).await;
    let id: uuid::Uuid = sqlx::query_scalar("SELECT id FROM messages LIMIT 1")
        .fetch_one(&stack.db)
        .await
        .expect("a stored message");
    let get = run({
        let mut command = mq(&stack);
        command
            .env("MQ_TOKEN_FILE", read_token.path())
            .args(["get", &id.to_string()]);
        command
    })
    .await;

    // Assert
    assert_eq!(get.status.code(), Some(0), "{}", stderr(&get));
    let message: serde_json::Value = serde_json::from_slice(&get.stdout).expect("JSON on stdout");
    assert_eq!(message["id"], id.to_string());
}
