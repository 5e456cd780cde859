//! `mq publish` run again on the same input after a line changed validity (another
//! `--max-message-bytes`): batches are cut by position, so only the batch of that line can change
//! its key, and nothing else is stored twice.

use end_to_end::TestStack;

use crate::helpers::{line_message, mq, rows_and_lines, run, stderr, wait_settled, TempFile};

const LINES: usize = 3000;
const BIG_LINE: usize = 500;

/// The input: `line_message` on every line but `BIG_LINE`, which is padded to `pad` bytes.
fn input_with_a_big_line(pad: usize) -> TempFile {
    TempFile::with_lines((1..=LINES).map(|line| {
        if line == BIG_LINE {
            serde_json::json!({
                "sender": "big",
                "messageAttributes": { "line": line, "pad": "x".repeat(pad) },
            })
            .to_string()
        } else {
            line_message(line)
        }
    }))
}

async fn publish(stack: &TestStack, args: &[&str]) -> i32 {
    let mut command = mq(stack);
    command.arg("publish").args(args).arg("--quiet");
    let output = run(command).await;
    output
        .status
        .code()
        .unwrap_or_else(|| panic!("mq was killed: {}", stderr(&output)))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_line_the_publisher_refuses_either_way_costs_no_other_line_a_second_row() {
    // Arrange: line 500 is 70 KB, over the publisher's 64 KiB. mq refuses it itself by default,
    // and leaves it to the publisher under --max-message-bytes 200000.
    let stack = TestStack::start().await;
    let input = input_with_a_big_line(70_000);

    // Act
    let first = publish(&stack, &[input.path()]).await;
    let second = publish(&stack, &[input.path(), "--max-message-bytes", "200000"]).await;
    wait_settled(&stack).await;
    let after_two = rows_and_lines(&stack).await;
    let third = publish(&stack, &[input.path(), "--max-message-bytes", "200000"]).await;
    let fourth = publish(&stack, &[input.path()]).await;
    wait_settled(&stack).await;

    // Assert: the publisher refused line 500's element; the rest of its batch went again under the
    // key of the same messages, so with the ids of the first run.
    assert_eq!((first, second, third, fourth), (3, 3, 3, 3));
    let stored = (LINES - 1) as i64;
    assert_eq!(after_two, (stored, stored));
    assert_eq!(rows_and_lines(&stack).await, (stored, stored));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_line_that_becomes_valid_costs_at_most_its_own_batch_a_second_row() {
    // Arrange: line 500 is 2 KB: refused by mq under --max-message-bytes 1000, sent under the default.
    let stack = TestStack::start().await;
    let input = input_with_a_big_line(2000);
    let batch = ["--batch-size", "100"];

    // Act
    let first = publish(
        &stack,
        &[&[input.path(), "--max-message-bytes", "1000"][..], &batch].concat(),
    )
    .await;
    let second = publish(&stack, &[&[input.path()][..], &batch].concat()).await;
    wait_settled(&stack).await;
    let (rows, lines) = rows_and_lines(&stack).await;
    let again = publish(&stack, &[&[input.path()][..], &batch].concat()).await;
    wait_settled(&stack).await;

    // Assert: only the batch of lines 401 to 500 changed its messages, so its key: its 99 other
    // messages are stored once more (the bound, `--batch-size` - 1, is reached); every other batch
    // kept its key, and running again stores nothing.
    assert_eq!((first, second, again), (3, 0, 0));
    assert_eq!(lines, LINES as i64, "every line is stored");
    assert_eq!(
        rows,
        (LINES + 99) as i64,
        "other rows than line 500's own batch's were stored again"
    );
    assert_eq!(
        rows_and_lines(&stack).await,
        (rows, lines),
        "the re-run stored something"
    );
}
