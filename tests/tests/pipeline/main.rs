//! End-to-end tests of the pipeline against the real RabbitMQ and PostgreSQL. Each test runs its own
//! publisher and consumer with a database and queues of its own.

mod auth;
mod batches;
mod classic_dead_letters;
mod confirm_order;
mod database_faults;
mod dead_letter_connection;
mod dead_letters;
mod fixtures;
mod hard_conditions;
mod hard_input;
mod huge_headers;
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
mod required_tokens;
mod round_trip;
mod scaling;
mod shard_changes;
mod shards;
mod shutdown;
mod slow_readers;
mod statement_timeout;
mod stuck_writer;
mod subscription_refused;
mod tls;
mod upgrades;
mod volume;
