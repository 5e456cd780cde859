//! End-to-end tests of the pipeline against the real RabbitMQ and PostgreSQL. Each test runs its own
//! publisher and consumer with a database and queues of its own.

mod auth;
mod batches;
mod classic_dead_letters;
mod database_faults;
mod dead_letters;
mod fixtures;
mod hard_input;
mod idempotency;
mod least_privilege;
mod outages;
mod pagination;
mod priority;
mod probes;
mod process;
mod query_plan;
mod redelivery;
mod refusals;
mod replay;
mod round_trip;
mod scaling;
mod shard_changes;
mod shards;
mod shutdown;
mod slow_readers;
mod tls;
mod volume;
