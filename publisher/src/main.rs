//! `publisher`: see the library crate for what it does.

/// jemalloc instead of the system allocator: every message allocates its parsed form, its payload and
/// its broker frames, and glibc's malloc spent about a third of the publisher's time under load.
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

/// jemalloc's options (see [`common::allocator::JEMALLOC_CONF`]): a pointer to a C string, read by
/// jemalloc before `main`.
#[export_name = "_rjem_malloc_conf"]
static MALLOC_CONF: &u8 = &common::allocator::JEMALLOC_CONF[0];

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    publisher::run().await
}
