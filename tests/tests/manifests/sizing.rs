//! The production consumer's sizing against the rules of the code and docs/configuration.md.

use crate::render::{consumer_config, named, of_kind, render, the_scaled_object};

/// The production consumer's settings obey the rules the code and docs/configuration.md state, read
/// with the consumer's own configuration (`ConsumerConfig::from_vars`, `effective_prefetch`, the
/// topology's drained queues): each shard's share of the prefetch fills a whole batch even at the most
/// writers (a batch is at most `prefetch / (writers + 1)`, consumer/src/ingest/flow.rs); the writers of
/// every drained queue fit the ingestion pool (docs/configuration.md: "keep `WRITERS_MAX` × queues
/// within `DB_POOL_SIZE`"); and the most pods that can run, with their pools, fit PostgreSQL's
/// max_connections.
#[test]
#[ignore = "renders kube/ with kubectl; run by scripts/check-manifests"]
fn production_consumer_settings_obey_the_rules_of_the_code_and_the_readme() {
    for overlay in ["kube/overlays/production", "kube/overlays/keda"] {
        let objects = render(overlay);
        let config = consumer_config(&objects);
        let topology = config.broker.topology();
        assert!(topology.shards().len() > 1, "{overlay}: sharded");
        let queues: Vec<String> = topology
            .drained_queues()
            .into_iter()
            .map(str::to_owned)
            .collect();
        let per_shard = usize::from(consumer::prefetch_of(
            &topology.shards()[0],
            &queues,
            &topology,
            config.ingest.effective_prefetch(),
        ));
        let batch_at_most_writers = per_shard / (config.scaling.writers_max + 1);
        assert!(
            batch_at_most_writers >= config.ingest.batch_size,
            "{overlay}: a shard's prefetch of {per_shard} fills batches of {batch_at_most_writers} \
             with {} writers, below BATCH_SIZE {}",
            config.scaling.writers_max,
            config.ingest.batch_size
        );
        let queues = queues.len();
        assert!(
            config.scaling.writers_max * queues <= config.database.db_pool_size as usize,
            "{overlay}: WRITERS_MAX {} x {queues} queues exceeds DB_POOL_SIZE {}",
            config.scaling.writers_max,
            config.database.db_pool_size
        );

        let consumer = named(&objects, "Deployment", "message-consumer").unwrap();
        let surge = consumer["spec"]["strategy"]["rollingUpdate"]["maxSurge"]
            .as_u64()
            .unwrap_or(1);
        let most_pods = match named(&objects, "HorizontalPodAutoscaler", "message-consumer") {
            Some(hpa) => hpa["spec"]["maxReplicas"].as_u64().unwrap(),
            None => the_scaled_object(&objects)["spec"]["maxReplicaCount"]
                .as_u64()
                .unwrap(),
        } + surge;
        let per_pod = u64::from(config.database.db_pool_size + config.database.db_read_pool_size);
        let cluster = of_kind(&objects, "Cluster")[0];
        let max_connections: u64 = cluster["spec"]["postgresql"]["parameters"]["max_connections"]
            .as_str()
            .unwrap_or("100")
            .parse()
            .unwrap();
        // PostgreSQL keeps superuser_reserved_connections (3) and CloudNativePG's own sessions aside.
        assert!(
            most_pods * per_pod + 10 <= max_connections,
            "{overlay}: {most_pods} pods x {per_pod} connections exceed max_connections {max_connections}"
        );
    }
}
