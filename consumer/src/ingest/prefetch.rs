//! How the prefetch is shared among the queues a session drains, so that what the consumer holds stays
//! within `PREFETCH_BYTES` however many shard queues there are.

use common::amqp::Topology;

/// The queues that are not shards (`<QUEUE_NAME>.unrouted`, and `<QUEUE_NAME>` once sharded) are drained
/// with this fraction of the prefetch.
const FALLBACK_PREFETCH_SHARE: u16 = 16;

/// The prefetch of `queue` among the drained `queues`: `total` split evenly over the shard queues (the
/// configured shards and those a larger `QUEUE_SHARDS` left), so that what the consumer holds stays
/// within `PREFETCH_BYTES` however many there are, and a sixteenth of it for a queue that holds messages
/// only after something unusual (the main queue deleted, or messages from before sharding).
pub fn prefetch_of(queue: &str, queues: &[String], topology: &Topology, total: u16) -> u16 {
    if topology.is_shard_queue(queue) {
        let shards = queues
            .iter()
            .filter(|queue| topology.is_shard_queue(queue))
            .count();
        let count = u16::try_from(shards.max(1)).unwrap_or(u16::MAX);
        (total / count).max(1)
    } else {
        (total / FALLBACK_PREFETCH_SHARE).max(1)
    }
}

#[cfg(test)]
mod tests {
    use common::amqp::QueueType;

    use super::*;

    fn names(queues: &[&str]) -> Vec<String> {
        queues.iter().map(|queue| (*queue).to_owned()).collect()
    }

    #[test]
    fn shards_share_the_prefetch_and_the_other_queues_get_a_sixteenth() {
        let single = Topology::new("q", QueueType::Quorum, 20, 1);
        let queues = names(&["q", "q.unrouted"]);
        assert_eq!(prefetch_of("q", &queues, &single, 400), 400);
        assert_eq!(prefetch_of("q.unrouted", &queues, &single, 400), 25);
        let sharded = Topology::new("q", QueueType::Quorum, 20, 4);
        let queues = names(&["q.0", "q.1", "q.2", "q.3", "q", "q.unrouted"]);
        assert_eq!(prefetch_of("q.3", &queues, &sharded, 400), 100);
        assert_eq!(prefetch_of("q", &queues, &sharded, 400), 25);
        assert_eq!(prefetch_of("q.0", &queues, &sharded, 3), 1);
    }

    #[test]
    fn shard_queues_left_by_a_larger_count_share_the_prefetch_with_the_shards() {
        let two = Topology::new("q", QueueType::Quorum, 20, 2);
        let queues = names(&["q.0", "q.1", "q", "q.unrouted", "q.2", "q.3"]);
        assert_eq!(prefetch_of("q.0", &queues, &two, 400), 100);
        assert_eq!(prefetch_of("q.3", &queues, &two, 400), 100);
        let one = Topology::new("q", QueueType::Quorum, 20, 1);
        let queues = names(&["q", "q.unrouted", "q.0", "q.1", "q.2"]);
        assert_eq!(prefetch_of("q", &queues, &one, 400), 100);
        assert_eq!(prefetch_of("q.2", &queues, &one, 400), 100);
        assert_eq!(prefetch_of("q.unrouted", &queues, &one, 400), 25);
    }
}
