//! The options both services give jemalloc, their global allocator.

/// jemalloc's `malloc_conf`, NUL-terminated, for each binary to export as `_rjem_malloc_conf` (the name
/// tikv-jemallocator's prefixed build reads at start-up).
///
/// Two arenas, whatever the machine: jemalloc otherwise makes four per core *of the node*, not of the
/// pod's CPU limit, and each arena keeps freed pages of its own, so the same pod would peak higher on a
/// larger node. (On a 2-core machine the largest legal batches peaked at 65–111 MiB with two arenas, and
/// at 98 MiB in one run with the default: within the spread.) `_RJEM_MALLOC_CONF` in the
/// environment still adds to or overrides it.
pub const JEMALLOC_CONF: &[u8] = b"narenas:2\0";
