//! The chaos soak's driver: `scripts/chaos --minutes N [--seed S]` builds it and runs it as root. It runs
//! keyed and unkeyed clients against two publishers and two consumers (each in a network namespace of its
//! own) on the three-node cluster of `scripts/cluster` and a PostgreSQL primary with a synchronous standby,
//! injects faults at random, and checks at the end that every accepted message is stored exactly once.

#[path = "../chaos/mod.rs"]
mod chaos;

fn main() -> std::process::ExitCode {
    chaos::main()
}
