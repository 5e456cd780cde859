//! Reads are bounded: four concurrent requests for the largest page, over a table of 60 KB messages,
//! keep the consumer's peak memory far under the limit its manifest ships.

use futures::future::join_all;

use crate::services::Services;

/// The consumer's memory limit in `kube/base/message-consumer-deployment.yaml`, in MiB.
fn manifest_limit_mib() -> u64 {
    let text = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../kube/base/message-consumer-deployment.yaml"
    ))
    .expect("the consumer's manifest");
    let deployment: serde_json::Value = serde_yaml_ng::from_str(&text).expect("valid YAML");
    let limit = deployment["spec"]["template"]["spec"]["containers"][0]["resources"]["limits"]
        ["memory"]
        .as_str()
        .expect("a memory limit");
    limit
        .strip_suffix("Mi")
        .and_then(|mib| mib.parse().ok())
        .unwrap_or_else(|| panic!("a limit in Mi, got {limit}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn four_concurrent_maximum_pages_of_large_messages_stay_under_the_manifest_memory_limit() {
    let services = Services::start(&[]).await;
    // 1,000 messages of 60 KB each (60 MB), written straight into the table.
    sqlx::query(
        "INSERT INTO messages (id, sender, message_attributes, received_at) \
         SELECT gen_random_uuid(), 'large', json_build_object('blob', repeat('x', 60000)), \
                now() - make_interval(secs => g) \
         FROM generate_series(1, 1000) g",
    )
    .execute(&services.db)
    .await
    .expect("large rows inserted");
    let before = services.consumer.peak_rss_kib();
    let url = format!("{}/message?limit=1000", services.consumer.url);
    for _ in 0..3 {
        let pages = join_all((0..4).map(|_| services.http.get(&url).send())).await;
        for page in pages {
            let page = page.expect("consumer reachable");
            assert_eq!(page.status(), 200);
            assert!(
                page.headers().contains_key("link"),
                "a page ends at its byte budget"
            );
            let body = page.bytes().await.expect("body");
            assert!(
                body.len() < 3 * 1024 * 1024,
                "a page of {} bytes, over MAX_PAGE_BYTES",
                body.len()
            );
        }
    }
    let peak = services.consumer.peak_rss_kib();
    let limit = manifest_limit_mib();
    eprintln!(
        "consumer peak RSS: {:.1} MiB before, {:.1} MiB after 3 × 4 concurrent maximum pages (limit {limit} MiB)",
        before as f64 / 1024.0,
        peak as f64 / 1024.0
    );
    assert!(
        peak < limit * 1024 / 2,
        "peak RSS {peak} KiB is over half the manifest limit"
    );
}
