//! Text from the services reaches the terminal with its control characters escaped, so a stored
//! message cannot recolour, retitle or clear the screen of whoever looks at it.

use std::time::Duration;

use end_to_end::TestStack;
use serde_json::json;

use crate::helpers::{mq, run_for, stderr};

const SENDER: &str = "\u{1b}[31mx";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sender_with_an_escape_sequence_is_printed_escaped_by_tail() {
    // Arrange
    let stack = TestStack::start().await;
    let id = stack
        .publish_ok(&json!({
            "sender": SENDER,
            "messageAttributes": { "title": "\u{1b}]0;owned\u{7}", "csi": "\u{9b}2J", "del": "\u{7f}" },
        }))
        .await;
    stack.wait_stored(id).await;

    // Act
    let tail = |output: &'static str| {
        let mut command = mq(&stack);
        command.args(["tail", "--from-start", "--wait", "1", "--output", output]);
        run_for(command, Duration::from_secs(6))
    };
    let (table, _) = tail("table").await;
    let (lines, _) = tail("json").await;

    // Assert
    let shown = String::from_utf8_lossy(&table.stdout).into_owned();
    assert!(shown.contains(r"\x1b[31mx"), "{shown}\n{}", stderr(&table));
    for (what, bytes) in [("table", &table.stdout), ("json", &lines.stdout)] {
        assert!(
            !bytes.contains(&0x1b),
            "{what}: an ESC byte reached the terminal"
        );
        assert!(
            !bytes.contains(&0x07),
            "{what}: a BEL byte reached the terminal"
        );
        assert!(
            !bytes.contains(&0x7f),
            "{what}: a DEL byte reached the terminal"
        );
        assert!(
            !bytes.windows(2).any(|pair| pair == [0xc2, 0x9b]),
            "{what}: a C1 CSI reached the terminal"
        );
    }
    let line = String::from_utf8_lossy(&lines.stdout).into_owned();
    let message: serde_json::Value =
        serde_json::from_str(line.lines().next().expect("one line")).expect("a JSON line");
    assert_eq!(
        message["sender"], SENDER,
        "the JSON line means what was stored"
    );
    assert_eq!(message["messageAttributes"]["csi"], "\u{9b}2J");
}
