//! A service that accepts a connection and never answers costs a bounded wait, never a hang.

use std::time::Duration;

use crate::{
    fake::{FakeService, Reply},
    helpers::{bare_mq, run_for, stderr},
};

#[tokio::test]
async fn reads_against_a_frozen_consumer_give_up_after_their_timeouts() {
    // Arrange
    let frozen = FakeService::start(|_| Reply::Silence).await;
    let id = uuid::Uuid::now_v7().to_string();
    // 4 tries of 1 s with backoff between them (0.2 + 0.4 + 0.8 s at most) take under 6 s.
    for (args, bound) in [
        (&["get", id.as_str()][..], 10),
        (&["dead-letters", "list"], 10),
        (&["dead-letters", "replay"], 4),
    ] {
        // Act
        let mut command = bare_mq();
        command
            .env("MQ_CONSUMER_URL", frozen.url())
            .args(["--timeout", "1"])
            .args(args);
        let (output, took) = run_for(command, Duration::from_secs(30)).await;

        // Assert
        let errors = stderr(&output);
        assert_eq!(output.status.code(), Some(1), "{args:?}: {errors}");
        assert!(took < Duration::from_secs(bound), "{args:?} took {took:?}");
        if args[1] == "replay" {
            assert!(errors.contains("outcome is unknown"), "{errors}");
        }
    }
}
