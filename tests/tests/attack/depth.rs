//! JSON nested as deep as a message may hold is stored; one level deeper is refused with a 400 naming
//! the depth, since the database could not store it (a 202 would promise what cannot be kept).

use common::settings::Settings as _;
use serde_json::Value;

use crate::{guarded_stack, PUBLISH};

/// A message of `depth` levels: the message, its `messageAttributes`, then arrays.
fn nested(depth: usize) -> String {
    let arrays = depth - 2;
    format!(
        r#"{{"sender":"deep","messageAttributes":{{"x":{}{}}}}}"#,
        "[".repeat(arrays),
        "]".repeat(arrays)
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_at_the_depth_limit_is_stored_and_one_level_deeper_is_refused_naming_it() {
    // Arrange: the default limit.
    let stack = guarded_stack(|_| {}).await;
    let limit = publisher::config::Config::from_vars([])
        .unwrap()
        .body
        .max_json_depth;
    let post = |body: String| {
        stack
            .http
            .post(format!("{}/message/publish", stack.publisher_url()))
            .bearer_auth(PUBLISH)
            .header("content-type", "application/json")
            .body(body)
            .send()
    };

    // Act
    let at_limit = post(nested(limit)).await.unwrap();
    let past = post(nested(limit + 1)).await.unwrap();
    let far_past = post(nested(20_000)).await.unwrap();

    // Assert
    assert_eq!(at_limit.status(), 202);
    let id = at_limit.json::<Value>().await.unwrap()["id"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    end_to_end::eventually(
        std::time::Duration::from_secs(30),
        "the deepest legal message to be stored",
        || async { (stack.rows_for(&[id]).await == (1, 1)).then_some(()) },
    )
    .await;
    for (response, depth) in [(past, limit + 1), (far_past, 20_000)] {
        assert_eq!(response.status(), 400);
        let problem: Value = response.json().await.unwrap();
        let detail = problem["detail"].as_str().unwrap();
        assert!(
            detail.contains(&format!("{depth} levels deep")) && detail.contains("MAX_JSON_DEPTH"),
            "{detail}"
        );
    }
}
