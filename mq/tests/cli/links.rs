//! A `Link` to another host is never followed: the token goes with every request `mq` makes.

use std::time::Duration;

use crate::{
    fake::{response, FakeService},
    helpers::{bare_mq, run_for, stderr},
};

#[tokio::test]
async fn a_next_link_to_another_origin_is_not_followed_and_the_token_never_goes_there() {
    for args in [
        &["tail", "--from-start", "--wait", "1"][..],
        &["dead-letters", "list", "--all"],
    ] {
        // Arrange: a consumer whose every page links to another server.
        let elsewhere = FakeService::start(|_| response("200 OK", &[], "[]")).await;
        let link = format!("<{}/steal?after=1>; rel=\"next\"", elsewhere.url());
        let consumer = FakeService::start(move |_| {
            let headers = [
                ("Content-Type", "application/json"),
                ("Link", link.as_str()),
            ];
            response("200 OK", &headers, "[]")
        })
        .await;

        // Act
        let mut command = bare_mq();
        command
            .env("MQ_CONSUMER_URL", consumer.url())
            .env("MQ_TOKEN", "a-token-that-must-stay-home")
            .args(args);
        let (output, _) = run_for(command, Duration::from_secs(10)).await;

        // Assert
        let errors = stderr(&output);
        assert_eq!(output.status.code(), Some(1), "{args:?}: {errors}");
        assert!(errors.contains("not following it"), "{args:?}: {errors}");
        assert!(
            !consumer.heads().is_empty(),
            "{args:?}: the consumer was asked"
        );
        let leaked: Vec<String> = elsewhere
            .heads()
            .into_iter()
            .filter(|head| head.contains("authorization"))
            .collect();
        assert!(
            leaked.is_empty(),
            "{args:?}: the token went elsewhere: {leaked:?}"
        );
    }
}
