//! The consumer as a process of its own, so tests can kill it with SIGKILL: the same entry point as
//! the `consumer` binary, built into this package so that cargo tells the tests where it is.

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    consumer::run().await
}
