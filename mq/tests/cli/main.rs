//! `mq` as users run it: the built binary against a real publisher and consumer (each test with a
//! database and queues of its own on the machine's RabbitMQ and PostgreSQL), or against a fake
//! service (`fake`) that misbehaves on purpose.

mod fake;
mod frozen;
mod help;
mod helpers;
mod links;
mod publish;
mod publish_answers;
mod refusals;
mod rerun;
mod tail;
mod terminal;
mod tokens;
