//! The attack suite: requests an attacker, a broken client or a careless one would send, generated
//! rather than listed, against both services with tokens configured and more than one HTTP worker. Each
//! test checks the status, that no handler was reached without its token, and that what the service
//! keeps (its memory, its `/metrics`) stays flat.

mod depth;
mod doors;
mod floods;

use common::web::Tokens;
use end_to_end::{StackConfig, TestStack};

pub const PUBLISH: &str = "attack-publish-token-0001";
pub const READ: &str = "attack-read-token-00000001";
pub const ADMIN: &str = "attack-admin-token-0000001";

/// Both services with all three kinds of token and two HTTP workers each.
pub async fn guarded_stack(adjust: impl FnOnce(&mut StackConfig)) -> TestStack {
    let tokens = Tokens::from_vars(&[
        ("PUBLISH_TOKENS".into(), PUBLISH.into()),
        ("READ_TOKENS".into(), READ.into()),
        ("ADMIN_TOKENS".into(), ADMIN.into()),
    ])
    .expect("valid tokens");
    let mut config = StackConfig::unique();
    config.publisher.http.tokens = tokens.clone();
    config.consumer.http.tokens = tokens;
    config.publisher.http.http_workers = 2;
    config.consumer.http.http_workers = 2;
    adjust(&mut config);
    TestStack::start_with(config).await
}

/// This process's resident memory now, in KiB (the services run in it).
pub fn resident_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .expect("/proc/self/status")
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|value| value.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmRSS")
}
