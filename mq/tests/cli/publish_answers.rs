//! `mq publish` against a publisher that fails or answers wrongly: it gives up in bounded time, and
//! counts nothing as accepted that the publisher did not say it accepted.

use std::time::Duration;

use crate::{
    fake::{response, FakeService},
    helpers::{bare_mq, line_message, run_for, stderr, TempFile},
};

#[tokio::test]
async fn a_publisher_that_always_answers_503_is_given_up_within_the_give_up_time() {
    // Arrange: 20 batches of one message against a publisher that is never available.
    let failing =
        FakeService::start(|_| response("503 Service Unavailable", &[("Retry-After", "1")], ""))
            .await;
    let input = TempFile::with_lines((1..=20).map(line_message));

    // Act
    let mut command = bare_mq();
    command.env("MQ_PUBLISHER_URL", failing.url()).args([
        "publish",
        input.path(),
        "--batch-size",
        "1",
        "--give-up-after",
        "3",
        "--timeout",
        "2",
    ]);
    let (output, took) = run_for(command, Duration::from_secs(60)).await;

    // Assert: no try is made later than 3 s after the start; the last one may take its 2 s timeout.
    let errors = stderr(&output);
    assert_eq!(output.status.code(), Some(1), "{errors}");
    assert!(took < Duration::from_secs(7), "took {took:?}: {errors}");
    assert!(errors.contains("gave up"), "{errors}");
    assert!(errors.contains("0 accepted"), "{errors}");
    assert!(errors.contains("20 not accepted"), "{errors}");
}

#[tokio::test]
async fn an_answer_without_the_ids_of_the_batch_is_not_counted_as_accepted() {
    for (status, body) in [
        ("202 Accepted", "not json"),
        ("202 Accepted", r#"{"ids":["a","b"]}"#),
        ("200 OK", r#"{"ids":["a","b","c"]}"#),
    ] {
        // Arrange
        let publisher = FakeService::start(move |_| {
            response(status, &[("Content-Type", "application/json")], body)
        })
        .await;
        let input = TempFile::with_lines((1..=3).map(line_message));

        // Act
        let mut command = bare_mq();
        command
            .env("MQ_PUBLISHER_URL", publisher.url())
            .args(["publish", input.path()]);
        let (output, _) = run_for(command, Duration::from_secs(30)).await;

        // Assert
        let errors = stderr(&output);
        assert_eq!(output.status.code(), Some(1), "{status} {body}: {errors}");
        assert!(errors.contains("0 accepted"), "{status} {body}: {errors}");
        assert!(
            errors.contains("3 not accepted"),
            "{status} {body}: {errors}"
        );
    }
}
