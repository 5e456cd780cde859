//! Keeps the broker's answer "no such queue" to a look out of the error log.
//!
//! Why: AMQP has no way to ask whether a queue exists but a passive declaration, which the broker
//! answers for a missing queue by closing the channel with `404 NOT_FOUND`. The services ask on
//! purpose (the consumer looks for shard queues a larger `QUEUE_SHARDS` declared, every few watch
//! intervals), on a channel of their own, and take the answer as "no". lapin logs every channel the
//! broker closes at `ERROR`, so each look wrote an error line, at every start and every half minute
//! after, that operators would alert on. Only that answer is dropped: every other channel closure,
//! "no exchange" included, is still logged, and a look whose answer matters is reported by the code
//! that asked.

use std::fmt;

use tracing::{field::Field, Event, Level, Subscriber};
use tracing_subscriber::{
    field::Visit,
    layer::{Context, Layer},
};

/// Where lapin logs a channel the broker closed.
const TARGET: &str = "lapin::channel";
/// The broker's text for a queue that does not exist.
const NO_QUEUE: &str = "NOT_FOUND - no queue '";

/// The layer that drops lapin's error line for a missing queue (see the module).
pub(super) struct QuietQueueLooks;

impl<S: Subscriber> Layer<S> for QuietQueueLooks {
    fn event_enabled(&self, event: &Event<'_>, _: Context<'_, S>) -> bool {
        let metadata = event.metadata();
        if *metadata.level() != Level::ERROR || metadata.target() != TARGET {
            return true;
        }
        let mut look = NoQueueAnswer(false);
        event.record(&mut look);
        !look.0
    }
}

/// Whether the `method` field (the broker's `channel.close`) says the queue does not exist.
struct NoQueueAnswer(bool);

impl Visit for NoQueueAnswer {
    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        if field.name() == "method" {
            self.0 = format!("{value:?}").contains(NO_QUEUE);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use tracing_subscriber::{layer::SubscriberExt, Registry};

    use super::*;

    /// Counts the events that reach it.
    #[derive(Clone, Default)]
    struct Seen(Arc<Mutex<Vec<String>>>);

    impl<S: Subscriber> Layer<S> for Seen {
        fn on_event(&self, event: &Event<'_>, _: Context<'_, S>) {
            let mut text = String::new();
            struct Text<'a>(&'a mut String);
            impl Visit for Text<'_> {
                fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
                    self.0.push_str(&format!("{}={value:?} ", field.name()));
                }
            }
            event.record(&mut Text(&mut text));
            self.0.lock().unwrap().push(text);
        }
    }

    /// A `channel.close` as lapin's `Debug` shows it.
    #[derive(Debug)]
    #[allow(dead_code)]
    struct Close {
        reply_code: u16,
        reply_text: &'static str,
    }

    #[test]
    fn only_the_missing_queue_answer_is_dropped() {
        let seen = Seen::default();
        let subscriber = Registry::default().with(QuietQueueLooks).with(seen.clone());
        tracing::subscriber::with_default(subscriber, || {
            let missing_queue = Close {
                reply_code: 404,
                reply_text: "NOT_FOUND - no queue 'messages.1' in vhost '/'",
            };
            let missing_exchange = Close {
                reply_code: 404,
                reply_text: "NOT_FOUND - no exchange 'messages.exchange' in vhost '/'",
            };
            let refused = Close {
                reply_code: 406,
                reply_text: "PRECONDITION_FAILED - inequivalent arg 'x-queue-type'",
            };
            tracing::error!(target: "lapin::channel", channel = 2, method = ?missing_queue, "Channel closed");
            tracing::error!(target: "lapin::channel", channel = 3, method = ?missing_exchange, "Channel closed");
            tracing::error!(target: "lapin::channel", channel = 4, method = ?refused, "Channel closed");
            tracing::warn!(target: "lapin::channel", method = ?missing_queue, "Channel closed");
            tracing::error!(target: "consumer", method = ?missing_queue, "our own error");
        });
        let seen = seen.0.lock().unwrap();
        assert_eq!(seen.len(), 4, "{seen:?}");
        assert!(
            seen.iter().all(|line| !line.contains("channel=2")),
            "{seen:?}"
        );
    }
}
