//! The options both services give jemalloc, their global allocator.

/// jemalloc's `malloc_conf`, NUL-terminated, for each binary to export as `_rjem_malloc_conf` (the name
/// tikv-jemallocator's prefixed build reads at start-up).
///
/// Two arenas, whatever the machine: jemalloc otherwise makes four per core *of the node*, not of the
/// pod's CPU limit, and each arena keeps freed pages of its own. Under the largest legal batches this
/// took the publisher's peak from 98 MiB to 67–88 MiB (three runs) on a 2-core machine, and on a large node it would
/// have been worse. `_RJEM_MALLOC_CONF` in the environment still adds to or overrides it.
pub const JEMALLOC_CONF: &[u8] = b"narenas:2\0";
