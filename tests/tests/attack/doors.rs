//! Every guarded route, by every spelling of its path the router may still match, with every method and
//! no token: none may reach a handler. The handlers of these routes never answer 401 or 404 here (the
//! message asked for exists), so any other status means a handler ran.

use end_to_end::raw_http::{address, exchange, request, Answer};
use serde_json::json;

use crate::{guarded_stack, ADMIN, PUBLISH, READ};

const METHODS: &[&str] = &[
    "GET",
    "HEAD",
    "POST",
    "PUT",
    "DELETE",
    "PATCH",
    "OPTIONS",
    "TRACE",
    "post",
    "gEt",
    "M00001XXXX",
];

/// Spellings of `path` that a router decoding percent-escapes, or a lenient one, might take for it.
fn spellings(path: &str) -> Vec<String> {
    let mut out = vec![path.to_owned()];
    let chars: Vec<char> = path.chars().collect();
    let encode = |c: char, upper: bool| {
        if upper {
            format!("%{:02X}", c as u32)
        } else {
            format!("%{:02x}", c as u32)
        }
    };
    for upper in [true, false] {
        // Each character alone, then every character but the slashes.
        for i in 0..chars.len() {
            let spelled: String = chars
                .iter()
                .enumerate()
                .map(|(j, &c)| {
                    if i == j {
                        encode(c, upper)
                    } else {
                        c.to_string()
                    }
                })
                .collect();
            out.push(spelled);
        }
        out.push(
            chars
                .iter()
                .map(|&c| {
                    if c == '/' {
                        "/".into()
                    } else {
                        encode(c, upper)
                    }
                })
                .collect(),
        );
    }
    let segments: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    let join = |parts: &[String]| format!("/{}", parts.join("/"));
    for i in 0..=segments.len() {
        for inserted in [".", "x/..", "%2e", "%2E", "x/%2e%2e", "", ";", ";x=1"] {
            let mut parts: Vec<String> = segments.iter().map(|s| s.to_string()).collect();
            if inserted.starts_with(';') {
                if i < parts.len() {
                    parts[i].push_str(inserted);
                }
            } else {
                parts.insert(i, inserted.to_owned());
            }
            out.push(join(&parts));
        }
    }
    out.push(format!("{path}/"));
    out.push(format!("/{path}"));
    out.push(path.replace('/', "\\"));
    out.push(path.to_uppercase());
    out.push(
        segments
            .iter()
            .map(|s| {
                let mut c = s.chars();
                c.next()
                    .map(|f| f.to_uppercase().chain(c).collect::<String>())
                    .unwrap_or_default()
            })
            .collect::<Vec<_>>()
            .join("/"),
    );
    out.push(format!("{path}%00"));
    out.push(format!("{path}%20"));
    out.push(format!("{path}#x"));
    out.push(format!("http://attack{path}"));
    out.sort();
    out.dedup();
    out
}

/// Whether `answer` shows the request stopped before any handler: refused for want of a token (with the
/// challenge), matched no route, or was not a request the server would parse.
fn stopped_at_the_door(answer: &Answer) -> bool {
    match answer.status {
        401 => answer
            .header("www-authenticate")
            .is_some_and(|v| v.starts_with("Bearer")),
        404 | 0 => true,
        400 => answer.header("content-type") != Some("application/problem+json"),
        _ => false,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn no_spelling_and_no_method_reaches_a_guarded_handler_without_its_token() {
    // Arrange
    let stack = guarded_stack(|_| {}).await;
    let stored = stack
        .http
        .post(format!("{}/message/publish", stack.publisher_url()))
        .bearer_auth(PUBLISH)
        .json(&json!({ "sender": "door" }))
        .send()
        .await
        .unwrap();
    assert_eq!(stored.status(), 202);
    let id = stored.json::<serde_json::Value>().await.unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    end_to_end::eventually(
        std::time::Duration::from_secs(20),
        "the message to be stored",
        || async { (stack.row_count().await == 1).then_some(()) },
    )
    .await;
    let message = json!({ "sender": "intruder" }).to_string();
    let batch = json!([{ "sender": "intruder" }]).to_string();
    let publisher = address(stack.publisher_url());
    let consumer = address(stack.consumer_url());
    let message_path = format!("/message/{id}");
    let guarded: Vec<(&str, &str, &str, &str, &str)> = vec![
        // (address, path, query, body, the right token)
        (&publisher, "/message/publish", "", &message, PUBLISH),
        (&publisher, "/message/publish/batch", "", &batch, PUBLISH),
        (&consumer, "/message", "?limit=1", "", READ),
        (&consumer, "/message/feed", "?limit=1", "", READ),
        (&consumer, &message_path, "", "", READ),
        (&consumer, "/monitor/status", "", "", READ),
        (&consumer, "/dead-letters", "", "", ADMIN),
        (&consumer, "/dead-letters/replay", "?limit=1", "", ADMIN),
    ];

    // Act
    let mut cases = Vec::new();
    for &(address, path, query, body, _) in &guarded {
        for spelled in spellings(path) {
            for method in METHODS {
                cases.push((address, format!("{spelled}{query}"), *method, body));
            }
        }
    }
    let answers = futures::future::join_all(cases.chunks(64).map(|chunk| async move {
        let mut answers = Vec::new();
        for (address, target, method, body) in chunk {
            let answer = exchange(address, &request(method, target, &[], body)).await;
            answers.push((format!("{method} {target}"), answer));
        }
        answers
    }))
    .await;
    let answers: Vec<_> = answers.into_iter().flatten().collect();

    // Assert
    let through: Vec<String> = answers
        .iter()
        .filter(|(_, answer)| !stopped_at_the_door(answer))
        .map(|(case, answer)| format!("{case} -> {}", answer.status))
        .collect();
    let routed = answers.iter().filter(|(_, a)| a.status == 401).count();
    println!(
        "{} requests: {routed} refused for want of a token, {} stopped otherwise, {} through",
        answers.len(),
        answers.len() - routed - through.len(),
        through.len()
    );
    assert!(
        through.is_empty(),
        "{} reached a handler without a token: {:#?}",
        through.len(),
        &through[..through.len().min(40)]
    );
    // The corpus reaches the guarded routes by spellings other than the plain one (else it proves
    // nothing), and the right token does get through the plain one.
    assert!(
        routed > guarded.len() * METHODS.len() * 4,
        "only {routed} routed"
    );
    for &(address, path, query, body, token) in &guarded {
        let method = if path.contains("publish") || path.contains("replay") {
            "POST"
        } else {
            "GET"
        };
        let answer = exchange(
            address,
            &request(
                method,
                &format!("{path}{query}"),
                &[format!("Authorization: Bearer {token}")],
                body,
            ),
        )
        .await;
        assert!(
            answer.status == 200 || answer.status == 202,
            "{method} {path} with its token: {}",
            answer.text
        );
    }
    // Nothing an intruder sent was stored: only the first message and the two sent with a token.
    end_to_end::eventually(
        std::time::Duration::from_secs(20),
        "the messages sent with a token to be stored",
        || async { (stack.row_count().await >= 3).then_some(()) },
    )
    .await;
    assert_eq!(stack.row_count().await, 3);
}
