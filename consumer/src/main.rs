//! `consumer`: see the library crate for what it does.

/// mimalloc instead of the system allocator: every message allocates its parsed form, its payload and
/// its broker frames, and glibc's malloc spent about a third of the publisher's time under load.
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    consumer::run().await
}
