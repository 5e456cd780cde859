//! Bearer tokens with scopes on every route of both services: a missing or unknown token gets `401`
//! with a `WWW-Authenticate: Bearer` challenge, a token of another scope `403`, the right one passes;
//! probes, metrics and documents stay open; idempotency keys belong to the token, not to the sender.

use common::web::Tokens;
use end_to_end::{StackConfig, TestStack};
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

const PUBLISH: &str = "publish-token-for-tests-0001";
const OTHER_PUBLISH: &str = "publish-token-for-tests-0002";
const READ: &str = "read-token-for-tests-00000001";
const ADMIN: &str = "admin-token-for-tests-0000001";

async fn stack_with_tokens() -> TestStack {
    let tokens = Tokens::from_vars(&[
        (
            "PUBLISH_TOKENS".into(),
            format!("{PUBLISH},{OTHER_PUBLISH}"),
        ),
        ("READ_TOKENS".into(), READ.into()),
        ("ADMIN_TOKENS".into(), ADMIN.into()),
    ])
    .expect("valid tokens");
    let mut config = StackConfig::unique();
    config.publisher.http.tokens = tokens.clone();
    config.consumer.http.tokens = tokens;
    TestStack::start_with(config).await
}

async fn call(
    stack: &TestStack,
    method: Method,
    url: String,
    token: Option<&str>,
    body: Option<Value>,
) -> reqwest::Response {
    let mut request = stack.http.request(method, url);
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    if let Some(body) = body {
        request = request.json(&body);
    }
    request.send().await.expect("service reachable")
}

/// A refusal: the status, a problem body, and for 401 the challenge.
async fn assert_refused(response: reqwest::Response, status: StatusCode, route: &str) {
    assert_eq!(response.status(), status, "{route}");
    let challenge = response
        .headers()
        .get("www-authenticate")
        .map(|v| v.to_str().unwrap().to_owned());
    assert_eq!(
        response.headers()["content-type"],
        "application/problem+json",
        "{route}"
    );
    if status == StatusCode::UNAUTHORIZED {
        assert!(
            challenge
                .as_deref()
                .is_some_and(|c| c.starts_with("Bearer")),
            "{route}: {challenge:?}"
        );
    } else {
        assert_eq!(challenge, None, "{route}");
    }
    let problem: Value = response.json().await.expect("problem body");
    assert_eq!(problem["status"], status.as_u16(), "{route}");
}

#[tokio::test]
async fn every_protected_route_wants_a_token_of_its_scope_and_the_open_ones_stay_open() {
    let stack = stack_with_tokens().await;
    let publisher = stack.publisher_url().to_owned();
    let consumer = stack.consumer_url().to_owned();
    let message = json!({"sender": "tokens"});
    let routes: Vec<(Method, String, Option<Value>, &str, StatusCode)> = vec![
        (
            Method::POST,
            format!("{publisher}/message/publish"),
            Some(message.clone()),
            PUBLISH,
            StatusCode::ACCEPTED,
        ),
        (
            Method::POST,
            format!("{publisher}/message/publish/batch"),
            Some(json!([message])),
            PUBLISH,
            StatusCode::ACCEPTED,
        ),
        (
            Method::GET,
            format!("{consumer}/message"),
            None,
            READ,
            StatusCode::OK,
        ),
        (
            Method::GET,
            format!("{consumer}/message/01a23a62-1a38-7651-9cee-cc97b2674e04"),
            None,
            READ,
            StatusCode::NOT_FOUND,
        ),
        (
            Method::GET,
            format!("{consumer}/monitor/status"),
            None,
            READ,
            StatusCode::OK,
        ),
    ];
    for (method, url, body, token, allowed) in routes {
        let refused = call(&stack, method.clone(), url.clone(), None, body.clone()).await;
        assert_refused(refused, StatusCode::UNAUTHORIZED, &url).await;
        let unknown = call(
            &stack,
            method.clone(),
            url.clone(),
            Some("not-a-token-of-this-system"),
            body.clone(),
        )
        .await;
        assert_refused(unknown, StatusCode::UNAUTHORIZED, &url).await;
        for other in [PUBLISH, READ, ADMIN].into_iter().filter(|t| *t != token) {
            let wrong = call(
                &stack,
                method.clone(),
                url.clone(),
                Some(other),
                body.clone(),
            )
            .await;
            assert_refused(wrong, StatusCode::FORBIDDEN, &url).await;
        }
        let passed = call(&stack, method, url.clone(), Some(token), body).await;
        assert_eq!(passed.status(), allowed, "{url} with its token");
    }
    for base in [&publisher, &consumer] {
        for path in ["/healthz", "/readyz", "/metrics", "/openapi.json"] {
            let open = call(&stack, Method::GET, format!("{base}{path}"), None, None).await;
            assert_eq!(open.status(), StatusCode::OK, "{base}{path} stays open");
        }
    }
    let page = call(&stack, Method::GET, format!("{consumer}/"), None, None).await;
    assert_eq!(
        page.status(),
        StatusCode::OK,
        "the monitor page holds no data"
    );
}

#[tokio::test]
async fn with_tokens_an_idempotency_key_belongs_to_the_token_not_to_the_sender() {
    let stack = stack_with_tokens().await;
    let url = format!("{}/message/publish", stack.publisher_url());
    let publish = |token: &'static str, sender: &'static str| {
        let request = stack
            .http
            .post(&url)
            .bearer_auth(token)
            .header("Idempotency-Key", "order-42")
            .json(&json!({"sender": sender}));
        async move {
            let response = request.send().await.expect("publisher reachable");
            assert_eq!(response.status(), 202);
            let body: Value = response.json().await.expect("JSON");
            body["id"].as_str().expect("id").to_owned()
        }
    };
    // Another client using the same key and the same sender does not pre-empt the first one's message.
    let mine = publish(PUBLISH, "victim").await;
    let theirs = publish(OTHER_PUBLISH, "victim").await;
    assert_ne!(mine, theirs);
    // A retry with the same token is the same message.
    assert_eq!(publish(PUBLISH, "victim").await, mine);
    for id in [&mine, &theirs] {
        let response = stack
            .http
            .get(format!("{}/message/{id}", stack.consumer_url()))
            .bearer_auth(READ);
        end_to_end::eventually(std::time::Duration::from_secs(30), "stored", || {
            let response = response.try_clone().expect("clonable");
            async move { (response.send().await.ok()?.status() == 200).then_some(()) }
        })
        .await;
    }
}
