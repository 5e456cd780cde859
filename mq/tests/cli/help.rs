//! `mq --help` names what users look for: every subcommand and every environment variable.

use crate::helpers::{bare_mq, run};

#[tokio::test]
async fn help_names_every_subcommand_and_environment_variable() {
    let mut command = bare_mq();
    command.arg("--help");
    let output = run(command).await;
    assert!(output.status.success(), "{output:?}");
    let help = String::from_utf8(output.stdout).expect("UTF-8 help");
    for word in [
        "publish",
        "tail",
        "get",
        "dead-letters",
        "status",
        "MQ_PUBLISHER_URL",
        "MQ_CONSUMER_URL",
        "MQ_TOKEN",
        "--token-file",
        "Exit codes",
    ] {
        assert!(help.contains(word), "--help does not name {word}:\n{help}");
    }
}

#[tokio::test]
async fn subcommand_help_names_their_options() {
    for (args, words) in [
        (
            &["publish", "--help"][..],
            &["FILE|-", "--key-prefix", "--batch-size", "--rejects"][..],
        ),
        (
            &["tail", "--help"],
            &["--from-start", "--sender", "--output"],
        ),
        (&["dead-letters", "--help"], &["list", "replay"]),
    ] {
        let mut command = bare_mq();
        command.args(args);
        let output = run(command).await;
        assert!(output.status.success(), "{args:?}: {output:?}");
        let help = String::from_utf8(output.stdout).expect("UTF-8 help");
        for word in words {
            assert!(
                help.contains(word),
                "{args:?} does not name {word}:\n{help}"
            );
        }
    }
}
