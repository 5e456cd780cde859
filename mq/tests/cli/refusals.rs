//! What no request could fix is refused at once: a token a header cannot carry, an `https://` URL,
//! an empty input, a `--rejects` file that is the input.

use std::time::Duration;

use crate::helpers::{bare_mq, line_message, run_for, stderr, TempFile};

/// Nothing listens there: a command that tried the network would retry, not end at once.
const NOWHERE: &str = "http://127.0.0.1:9";

#[tokio::test]
async fn a_token_with_a_newline_is_refused_at_once_naming_where_it_came_from() {
    // Arrange
    let token_file = TempFile::named("token");
    std::fs::write(&token_file.0, "first-line\nsecond-line\n").unwrap();
    let from_env = {
        let mut command = bare_mq();
        command.env("MQ_TOKEN", "x\n").args(["tail"]);
        command
    };
    let from_file = {
        let mut command = bare_mq();
        command.args(["tail", "--token-file", token_file.path()]);
        command
    };
    for (command, named) in [(from_env, "MQ_TOKEN"), (from_file, "--token-file")] {
        // Act
        let (output, took) = run_for(
            {
                let mut command = command;
                command.env("MQ_CONSUMER_URL", NOWHERE);
                command
            },
            Duration::from_secs(10),
        )
        .await;

        // Assert
        let errors = stderr(&output);
        assert_eq!(output.status.code(), Some(2), "{named}: {errors}");
        assert!(took < Duration::from_secs(1), "{named}: took {took:?}");
        assert!(errors.contains(named), "{errors}");
    }
}

#[tokio::test]
async fn an_https_url_is_refused_at_once() {
    // Arrange
    let mut command = bare_mq();
    command.args(["--consumer-url", "https://127.0.0.1:9", "get", "x"]);

    // Act
    let (output, took) = run_for(command, Duration::from_secs(30)).await;

    // Assert
    let errors = stderr(&output);
    assert_eq!(output.status.code(), Some(2), "{errors}");
    assert!(took < Duration::from_secs(1), "took {took:?}");
    assert!(errors.contains("--consumer-url"), "{errors}");
    assert!(errors.contains("https is not supported"), "{errors}");
}

#[tokio::test]
async fn an_input_without_messages_fails_unless_allowed() {
    let empty = TempFile::named("jsonl");
    std::fs::write(&empty.0, "").unwrap();
    let blank = TempFile::named("jsonl");
    std::fs::write(&blank.0, "\n  \n").unwrap();
    let array = TempFile::named("json");
    std::fs::write(&array.0, "[ ]").unwrap();
    for input in [empty.path(), blank.path(), array.path(), "-"] {
        for (extra, code) in [(None, 1), (Some("--allow-empty"), 0)] {
            // Act
            let mut command = bare_mq();
            command
                .env("MQ_PUBLISHER_URL", NOWHERE)
                .args(["publish", input])
                .args(extra);
            let (output, _) = run_for(command, Duration::from_secs(10)).await;

            // Assert
            let errors = stderr(&output);
            assert_eq!(
                output.status.code(),
                Some(code),
                "{input} {extra:?}: {errors}"
            );
            if code == 1 {
                assert!(errors.contains("no messages in the input"), "{errors}");
            }
        }
    }
}

#[tokio::test]
async fn a_rejects_file_that_is_the_input_is_refused_and_the_input_kept() {
    // Arrange
    let input = TempFile::with_lines((1..=3).map(line_message));
    let before = std::fs::read(&input.0).unwrap();

    // Act
    let mut command = bare_mq();
    command.env("MQ_PUBLISHER_URL", NOWHERE).args([
        "publish",
        input.path(),
        "--rejects",
        input.path(),
    ]);
    let (output, _) = run_for(command, Duration::from_secs(60)).await;

    // Assert
    let errors = stderr(&output);
    assert_eq!(output.status.code(), Some(2), "{errors}");
    assert!(errors.contains("--rejects"), "{errors}");
    assert_eq!(
        std::fs::read(&input.0).unwrap(),
        before,
        "the input changed"
    );
}

/// An `mq status --interval` that could never be waited out is a usage error, named, not a panic.
#[tokio::test]
async fn a_status_interval_that_cannot_be_waited_is_refused_as_usage() {
    for interval in ["inf", "NaN", "1e30", "-1", "3601"] {
        // Act
        let mut command = bare_mq();
        command
            .env("MQ_PUBLISHER_URL", NOWHERE)
            .env("MQ_CONSUMER_URL", NOWHERE)
            .args(["status", &format!("--interval={interval}")]);
        let (output, _) = run_for(command, Duration::from_secs(10)).await;

        // Assert
        let errors = stderr(&output);
        assert_eq!(output.status.code(), Some(2), "{interval}: {errors}");
        assert!(errors.contains("--interval"), "{interval}: {errors}");
        assert!(!errors.contains("panicked"), "{interval}: {errors}");
    }
}

/// A `--key-prefix` outside its rule is a usage error, named, before the input is read or anything sent.
#[tokio::test]
async fn a_key_prefix_outside_its_rule_is_refused_as_usage() {
    let too_long = "p".repeat(101);
    for prefix in ["", "two words", "tab\there", "é", too_long.as_str()] {
        // Arrange: an input that does not exist, so only the arguments can be what is refused
        let mut command = bare_mq();
        command.env("MQ_PUBLISHER_URL", NOWHERE).args([
            "publish",
            "--key-prefix",
            prefix,
            "/nonexistent/messages.jsonl",
        ]);

        // Act
        let (output, _) = run_for(command, Duration::from_secs(10)).await;

        // Assert
        let errors = stderr(&output);
        assert_eq!(output.status.code(), Some(2), "{prefix:?}: {errors}");
        assert!(errors.contains("--key-prefix"), "{prefix:?}: {errors}");
        assert!(!errors.contains("nonexistent"), "{prefix:?}: {errors}");
    }
}
