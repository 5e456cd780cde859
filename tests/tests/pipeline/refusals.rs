use end_to_end::TestStack;
use serde_json::{json, Value};

use crate::fixtures::{message_from, SEED_MALFORMED};

/// A request the publisher must refuse, and what the refusal must say.
struct Refusal {
    case: &'static str,
    path: &'static str,
    content_type: Option<&'static str>,
    idempotency_key: Option<&'static str>,
    content_encoding: Option<&'static str>,
    body: String,
    status: u16,
    detail_mentions: &'static str,
}

fn refusal(
    case: &'static str,
    body: impl Into<String>,
    status: u16,
    detail_mentions: &'static str,
) -> Refusal {
    Refusal {
        case,
        path: "/message/publish",
        content_type: Some("application/json"),
        idempotency_key: None,
        content_encoding: None,
        body: body.into(),
        status,
        detail_mentions,
    }
}

fn refusals() -> Vec<Refusal> {
    let json = |value: Value| value.to_string();
    vec![
        refusal(
            "seed without its comma",
            SEED_MALFORMED,
            400,
            "line 9 column",
        ),
        refusal("truncated JSON", r#"{"sender": "a""#, 400, "line 1 column"),
        refusal("missing sender", json(json!({ "ts": "1" })), 400, "sender"),
        refusal(
            "blank sender",
            json(json!({ "sender": "  " })),
            400,
            "sender",
        ),
        refusal(
            "sender of zero-width characters",
            json(json!({ "sender": "\u{200B}\u{FEFF}" })),
            400,
            "sender",
        ),
        refusal(
            "a JSON array as a message",
            r#"["positional","ts-x",{"k":1},"10.0.0.9",7]"#,
            400,
            "JSON object",
        ),
        Refusal {
            content_encoding: Some("gzip"),
            ..refusal(
                "gzip body",
                json(message_from("a")),
                415,
                "Content-Encoding gzip",
            )
        },
        Refusal {
            path: "/message/publish/batch",
            ..refusal(
                "batch body over 4 MiB",
                json(Value::Array(vec![
                    json!({ "sender": "a", "ts": "x".repeat(60) });
                    60_000
                ])),
                413,
                "limit",
            )
        },
        refusal(
            "257-character sender",
            json(message_from(&"x".repeat(257))),
            400,
            "sender",
        ),
        refusal(
            "priority 10",
            json(json!({ "sender": "a", "priority": 10 })),
            400,
            "priority",
        ),
        refusal(
            "priority -1",
            json(json!({ "sender": "a", "priority": -1 })),
            400,
            "priority",
        ),
        refusal(
            "priority as text",
            json(json!({ "sender": "a", "priority": "high" })),
            400,
            "priority",
        ),
        refusal(
            "unknown field",
            json(json!({ "sender": "a", "colour": "red" })),
            400,
            "colour",
        ),
        refusal(
            "bad sent_from_ip",
            json(json!({ "sender": "a", "sent_from_ip": "999.1.1.1" })),
            400,
            "sent_from_ip",
        ),
        refusal(
            "65-character ts",
            json(json!({ "sender": "a", "ts": "1".repeat(65) })),
            400,
            "ts",
        ),
        refusal(
            "attributes not an object",
            json(json!({ "sender": "a", "messageAttributes": [1] })),
            400,
            "messageAttributes",
        ),
        refusal(
            "body over 64 KiB",
            json(json!({ "sender": "a", "ts": "x".repeat(70_000) })),
            413,
            "limit",
        ),
        Refusal {
            content_type: Some("text/plain"),
            ..refusal("text/plain", json(message_from("a")), 415, "text/plain")
        },
        Refusal {
            content_type: None,
            ..refusal(
                "no content type",
                json(message_from("a")),
                415,
                "Content-Type",
            )
        },
        Refusal {
            idempotency_key: Some("has spaces in it"),
            ..refusal(
                "bad Idempotency-Key",
                json(message_from("a")),
                400,
                "Idempotency-Key",
            )
        },
        Refusal {
            path: "/message/publish/batch",
            ..refusal("empty batch", "[]", 400, "at least one")
        },
        Refusal {
            path: "/message/publish/batch",
            ..refusal(
                "batch with a bad element",
                json(
                    json!([message_from("a"), message_from("b"), { "sender": "c", "priority": 99 }]),
                ),
                400,
                "index 2",
            )
        },
        Refusal {
            path: "/message/publish/batch",
            ..refusal(
                "batch of 1001",
                json(Value::Array(vec![message_from("a"); 1001])),
                400,
                "at most 1000",
            )
        },
    ]
}

async fn assert_problem(
    response: reqwest::Response,
    case: &str,
    status: u16,
    detail_mentions: &str,
) {
    assert_eq!(response.status(), status, "{case}");
    let content_type = response.headers()["content-type"]
        .to_str()
        .unwrap()
        .to_owned();
    assert_eq!(content_type, "application/problem+json", "{case}");
    let problem: Value = response.json().await.unwrap();
    assert_eq!(problem["status"], status, "{case}: {problem}");
    assert!(
        problem["type"].is_string() && problem["title"].is_string(),
        "{case}: {problem}"
    );
    let detail = problem["detail"].as_str().unwrap_or_default();
    assert!(
        detail.contains(detail_mentions),
        "{case}: {detail:?} should mention {detail_mentions:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_refusal_of_the_contract_is_a_problem_naming_the_fault_and_nothing_refused_is_stored()
{
    // Arrange
    let stack = TestStack::start().await;

    for case in refusals() {
        // Act
        let mut request = stack
            .http
            .post(format!("{}{}", stack.publisher_url(), case.path))
            .body(case.body);
        if let Some(content_type) = case.content_type {
            request = request.header("Content-Type", content_type);
        }
        if let Some(key) = case.idempotency_key {
            request = request.header("Idempotency-Key", key);
        }
        if let Some(encoding) = case.content_encoding {
            request = request.header("Content-Encoding", encoding);
        }
        let response = request.send().await.unwrap();

        // Assert
        assert_problem(response, case.case, case.status, case.detail_mentions).await;
    }
    // The queue is first in, first out: once a later message is stored, anything refused before it
    // would have been stored too.
    let sentinel = stack.publish_ok(&message_from("sentinel")).await;
    stack.wait_stored(sentinel).await;
    assert_eq!(stack.row_count().await, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_reads_are_problems_naming_the_parameter() {
    // Arrange
    let stack = TestStack::start().await;
    let cases = [
        ("/message/not-a-uuid", 400, "id must be a message id"),
        (
            "/message/0190a0e8-0000-7000-8000-000000000000",
            404,
            "no message",
        ),
        ("/message?limit=0", 400, "limit"),
        ("/message?limit=1001", 400, "limit"),
        ("/message?limit=ten", 400, "limit"),
        ("/message?before=nope", 400, "before"),
        (
            "/message?before=0190a0e8-0000-7000-8000-000000000000",
            404,
            "before",
        ),
        ("/message?page=2", 400, "page"),
        ("/message?sender=a%00b", 400, "sender"),
        ("/no/such/route", 404, "no such route"),
    ];

    for (path, status, detail) in cases {
        // Act
        let response = stack.get(path).await;

        // Assert
        assert_problem(response, path, status, detail).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_stalls_mid_body_gets_408_and_others_are_served_meanwhile() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    // Arrange
    let mut config = end_to_end::StackConfig::unique();
    config.publisher.body.body_timeout_ms = 300;
    let stack = TestStack::start_with(config).await;
    let address = stack
        .publisher_url()
        .trim_start_matches("http://")
        .to_owned();
    let mut stalled = tokio::net::TcpStream::connect(&address).await.unwrap();

    // Act: promise 100 bytes, send 10, then nothing.
    stalled
        .write_all(b"POST /message/publish HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{\"sender\":")
        .await
        .unwrap();
    let served_meanwhile = stack.publish_ok(&message_from("not blocked")).await;
    let mut answer = vec![0; 1024];
    let read =
        tokio::time::timeout(std::time::Duration::from_secs(5), stalled.read(&mut answer)).await;

    // Assert
    let answer =
        String::from_utf8_lossy(&answer[..read.expect("an answer in time").unwrap()]).into_owned();
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert!(answer.contains("application/problem+json"), "{answer}");
    stack.wait_stored(served_meanwhile).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_known_route_asked_with_another_method_is_a_405_problem_naming_the_allowed_one() {
    // Arrange
    let stack = TestStack::start().await;

    // Act
    let publisher = stack
        .http
        .get(format!("{}/message/publish", stack.publisher_url()))
        .send()
        .await
        .unwrap();
    let consumer = stack
        .http
        .delete(format!("{}/message", stack.consumer_url()))
        .send()
        .await
        .unwrap();

    // Assert
    assert_eq!(publisher.headers()["allow"], "POST");
    assert_problem(publisher, "GET /message/publish", 405, "POST").await;
    assert_eq!(consumer.headers()["allow"], "GET");
    assert_problem(consumer, "DELETE /message", 405, "GET").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_service_serves_its_openapi_document_as_json() {
    // Arrange
    let stack = TestStack::start().await;

    for (url, title, path) in [
        (
            stack.publisher_url(),
            "message-publisher",
            "/message/publish",
        ),
        (stack.consumer_url(), "message-consumer", "/message/{id}"),
    ] {
        // Act
        let response = stack
            .http
            .get(format!("{url}/openapi.json"))
            .send()
            .await
            .unwrap();

        // Assert
        assert_eq!(response.status(), 200);
        let document: Value = response.json().await.unwrap();
        assert_eq!(document["openapi"], "3.1.0");
        assert_eq!(document["info"]["title"], title);
        assert!(
            document["paths"][path].is_object(),
            "{title} documents {path}"
        );
    }
}
