//! `consumer`: see the library crate for what it does.

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    consumer::run().await
}
