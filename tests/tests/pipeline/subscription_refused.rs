//! A queue the broker will not let the consumer read, as an operator's mistake leaves it: the queues
//! it may read are drained as usual, and readiness says what is refused until it is granted.

use std::time::Duration;

use end_to_end::{broker_users::BrokerUser, eventually, spawn_consumer, StackConfig, TestStack};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_queue_the_consumer_may_not_read_makes_it_unready_and_costs_the_other_queues_nothing() {
    // Arrange: a consumer user that may read the main queue and `.dead`, but not `.unrouted`, and a
    // backlog on the main queue.
    let mut config = StackConfig::unique();
    consumer::declare_topology(&config.consumer)
        .await
        .expect("the setup step declares the topology");
    let granted = config.consumer.broker.topology().consumer_permissions();
    let mut refused = granted.clone();
    refused.read = refused.read.replace(r"|\.unrouted", "");
    assert_ne!(
        refused.read, granted.read,
        "the read permission names .unrouted"
    );
    let user = BrokerUser::create("consumer", &refused);
    config.consumer.broker.amqp_url = user.url();
    config.consumer.broker.declare_topology = false;
    let mut stack = TestStack::start_publisher_only(config).await;
    let backlog = stack.fill_queue(50).await;

    // Act
    stack.consumer = Some(spawn_consumer(&stack.consumer_config));

    // Assert: the backlog is stored, nothing is dead-lettered, and the consumer says what is refused.
    // (The consumer creates the database: until it has, there is nothing to count.)
    eventually(Duration::from_secs(15), "the backlog stored", || async {
        let rows: (i64, i64) =
            sqlx::query_as("SELECT count(DISTINCT id), count(*) FROM messages WHERE id = ANY($1)")
                .bind(&backlog)
                .fetch_one(&stack.db)
                .await
                .ok()?;
        (rows == (50, 50)).then_some(())
    })
    .await;
    let readyz = format!("{}/readyz", stack.consumer_url());
    let detail = eventually(Duration::from_secs(10), "readiness to say why", || async {
        let response = stack.http.get(&readyz).send().await.ok()?;
        (response.status() == 503).then_some(())?;
        let problem: serde_json::Value = response.json().await.ok()?;
        Some(problem["detail"].as_str()?.to_owned())
    })
    .await;
    assert!(
        detail.contains("ACCESS_REFUSED") && detail.contains(&format!("{}.unrouted", stack.queue)),
        "{detail}"
    );
    assert_eq!(stack.queue_depth(".dead").await, 0);

    // Once granted, the consumer subscribes and is ready, without a restart.
    user.grant(&granted);
    stack.wait_ready(stack.consumer_url()).await;
    let after = stack.fill_queue(5).await;
    eventually(
        Duration::from_secs(10),
        "a later message stored",
        || async { (stack.rows_for(&after).await == (5, 5)).then_some(()) },
    )
    .await;
}
