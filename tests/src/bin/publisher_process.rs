//! The publisher as a process of its own, so tests can read its log lines and signal it: the same entry
//! point as the `publisher` binary, built into this package so that cargo tells the tests where it is.

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    publisher::run().await
}
