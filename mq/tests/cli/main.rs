//! `mq` as users run it: the built binary against a real publisher and consumer (each test with a
//! database and queues of its own on the machine's RabbitMQ and PostgreSQL).

mod help;
mod helpers;
mod publish;
mod tail;
mod tokens;
