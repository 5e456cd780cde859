//! jemalloc, both services' global allocator, and the `main` both binaries share (`service_main!`).
//!
//! jemalloc instead of the system allocator: every message allocates its parsed form, its payload and its
//! broker frames, and glibc's malloc spent about a third of the publisher's time under load.

#[doc(hidden)]
pub use tikv_jemallocator::Jemalloc;

/// jemalloc's `malloc_conf`, NUL-terminated, for each binary to export as `_rjem_malloc_conf` (the name
/// tikv-jemallocator's prefixed build reads at start-up).
///
/// Two arenas, whatever the machine: jemalloc otherwise makes four per core *of the node*, not of the
/// pod's CPU limit, and each arena keeps freed pages of its own, so the same pod would peak higher on a
/// larger node. (On a 2-core machine the largest legal batches peaked at 65–111 MiB with two arenas, and
/// at 98 MiB in one run with the default: within the spread.) `_RJEM_MALLOC_CONF` in the
/// environment still adds to or overrides it.
pub const JEMALLOC_CONF: &[u8] = b"narenas:2\0";

/// A service binary's whole `main.rs`: jemalloc as the global allocator with [`JEMALLOC_CONF`], and a
/// Tokio runtime running `$run` (the library's `run`) until it returns.
#[macro_export]
macro_rules! service_main {
    ($run:path) => {
        #[global_allocator]
        static ALLOCATOR: $crate::allocator::Jemalloc = $crate::allocator::Jemalloc;

        /// jemalloc's options: a pointer to a C string, read by jemalloc before `main`.
        #[export_name = "_rjem_malloc_conf"]
        static MALLOC_CONF: &u8 = &$crate::allocator::JEMALLOC_CONF[0];

        #[tokio::main]
        async fn main() -> anyhow::Result<()> {
            $run().await
        }
    };
}
