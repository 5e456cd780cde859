//! `mq publish`: killed half way and run again, it stores every line exactly once; a malformed line is
//! reported by its number and costs no other line.

use std::{
    os::unix::process::ExitStatusExt,
    process::Stdio,
    time::{Duration, Instant},
};

use end_to_end::TestStack;

use crate::helpers::{
    line_message, mq, rows_and_lines, run, stderr, stored_lines, wait_settled, TempFile,
};

const LINES: usize = 20_000;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_publish_killed_half_way_and_run_again_stores_every_line_exactly_once() {
    // Arrange
    let stack = TestStack::start().await;
    let input = TempFile::with_lines((1..=LINES).map(line_message));
    // Small batches one at a time, so that the run lasts long enough to be caught half way; the
    // second run must cut the same batches, so it takes the same options.
    let args = [
        "publish",
        input.path(),
        "--quiet",
        "--batch-size",
        "250",
        "--concurrency",
        "1",
    ];
    let mut first = mq(&stack)
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("mq starts");

    // Act: SIGKILL once about half the lines are accepted.
    let deadline = Instant::now() + Duration::from_secs(120);
    let accepted_at_kill = loop {
        let accepted = stack
            .metric(stack.publisher_url(), "publisher_messages_accepted_total")
            .await;
        if accepted >= (LINES / 2) as f64 {
            first.kill().expect("SIGKILL sent");
            break accepted;
        }
        if let Some(status) = first.try_wait().expect("poll mq") {
            panic!("mq ended by itself ({status}) with {accepted} accepted, before it was killed");
        }
        assert!(
            Instant::now() < deadline,
            "half the lines never got accepted"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    let status = first.wait().expect("reap mq");
    assert_eq!(
        status.signal(),
        Some(9),
        "mq was killed, not finished: {status}"
    );
    assert!(accepted_at_kill < LINES as f64, "{accepted_at_kill}");
    let again = run({
        let mut command = mq(&stack);
        command.args(args);
        command
    })
    .await;

    // Assert
    assert_eq!(again.status.code(), Some(0), "{}", stderr(&again));
    wait_settled(&stack).await;
    assert_eq!(rows_and_lines(&stack).await, (LINES as i64, LINES as i64));
    let accepted_in_all = stack
        .metric(stack.publisher_url(), "publisher_messages_accepted_total")
        .await;
    assert!(
        accepted_in_all > LINES as f64,
        "the second run sent the first run's lines again ({accepted_in_all} accepted in all), \
         and they were stored once"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_malformed_line_is_reported_by_its_number_and_every_other_line_is_stored() {
    // Arrange
    let stack = TestStack::start().await;
    let (broken, invalid, total) = (17, 30, 50);
    let input = TempFile::with_lines((1..=total).map(|line| match line {
        _ if line == broken => r#"{"sender": "x", "messageAttributes": {"line": 17}"#.to_owned(),
        _ if line == invalid => r#"{"sender": "x", "bogus": 1}"#.to_owned(),
        _ => line_message(line),
    }));
    let rejects = TempFile::named("jsonl");

    // Act
    let output = run({
        let mut command = mq(&stack);
        command.args([
            "publish",
            input.path(),
            "--batch-size",
            "10",
            "--rejects",
            rejects.path(),
        ]);
        command
    })
    .await;

    // Assert
    let errors = stderr(&output);
    assert_eq!(output.status.code(), Some(3), "{errors}");
    let line_of = |n: usize| {
        errors
            .lines()
            .find(|l| l.starts_with(&format!("line {n}: ")))
            .unwrap_or_else(|| panic!("line {n} is not reported:\n{errors}"))
    };
    assert!(line_of(broken).contains("malformed JSON"), "{errors}");
    assert!(line_of(invalid).contains("bogus"), "{errors}");
    assert!(errors.contains("48 accepted"), "{errors}");
    let set_aside = std::fs::read_to_string(&rejects.0).expect("the rejects file");
    assert_eq!(set_aside.lines().count(), 2, "{set_aside}");
    assert!(set_aside.contains("bogus"), "{set_aside}");
    wait_settled(&stack).await;
    let expected: Vec<i64> = (1..=total as i64)
        .filter(|&line| line != broken as i64 && line != invalid as i64)
        .collect();
    assert_eq!(stored_lines(&stack).await, expected);
}
