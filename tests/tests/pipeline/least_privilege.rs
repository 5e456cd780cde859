//! The consumer runs as a role that owns its database and is nothing more: not a superuser, unable to
//! create databases or roles. Its migrations apply, and it stores and serves messages. Each service
//! logs in to the broker as a user that may only do its own part.

use std::time::Duration;

use common::amqp::{BrokerAddress, ConfirmChannel};
use end_to_end::{broker_users::BrokerUser, eventually, server_url, StackConfig, TestStack};
use lapin::{
    options::{BasicGetOptions, QueueDeclareOptions, QueueDeleteOptions},
    types::FieldTable,
    ConnectionProperties,
};
use sqlx::postgres::PgPoolOptions;

use crate::fixtures::message_from;

#[tokio::test]
async fn the_consumer_migrates_and_stores_as_a_role_that_only_owns_its_database() {
    let mut config = StackConfig::unique();
    let role = format!("role_{}", config.database);
    let admin = PgPoolOptions::new()
        .max_connections(1)
        .connect(&server_url())
        .await
        .expect("server reachable");
    for statement in [
        format!("CREATE ROLE \"{role}\" LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION"),
        format!("CREATE DATABASE \"{}\" OWNER \"{role}\"", config.database),
    ] {
        sqlx::query(&statement)
            .execute(&admin)
            .await
            .expect("role and database created");
    }
    config.consumer.database.database_url =
        format!("postgres://{role}@127.0.0.1:5432/{}", config.database);
    let stack = TestStack::start_with(config).await;
    let id = stack.publish_ok(&message_from("least privilege")).await;
    stack.wait_stored(id).await;

    let (owner, superuser): (String, bool) = sqlx::query_as(
        "SELECT t.tableowner::text, r.rolsuper FROM pg_tables t \
         JOIN pg_roles r ON r.rolname = t.tableowner WHERE t.tablename = 'messages'",
    )
    .fetch_one(&stack.db)
    .await
    .expect("the table's owner");
    assert_eq!(
        owner, role,
        "the consumer's role owns the table it migrated"
    );
    assert!(!superuser);
    drop(stack);
    let _ = sqlx::query(&format!("DROP ROLE IF EXISTS \"{role}\""))
        .execute(&admin)
        .await;
}

/// Both services as broker users with only the permissions `Topology` documents, after the setup step
/// declared the topology as an administrator: the pipeline works end to end, dead letters included,
/// and neither user can do anything else.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_service_runs_as_a_broker_user_that_may_touch_only_its_own_names() {
    let mut config = StackConfig::unique();
    consumer::declare_topology(&config.consumer)
        .await
        .expect("the setup step declares the topology");
    let topology = config.consumer.broker.topology();
    let publisher_user = BrokerUser::create("publisher", &topology.publisher_permissions());
    let consumer_user = BrokerUser::create("consumer", &topology.consumer_permissions());
    config.publisher.broker.amqp_url = publisher_user.url();
    config.publisher.broker.declare_topology = false;
    config.consumer.broker.amqp_url = consumer_user.url();
    config.consumer.broker.declare_topology = false;
    let stack = TestStack::start_with(config).await;

    let id = stack.publish_ok(&message_from("least privilege")).await;
    stack.wait_stored(id).await;
    stack.publish_raw(b"not a message").await;
    let letters = eventually(Duration::from_secs(30), "the dead letter", || async {
        let response = stack.get("/dead-letters").await;
        let letters: Vec<serde_json::Value> = response.json().await.ok()?;
        (letters.len() == 1).then_some(letters)
    })
    .await;
    assert_eq!(letters[0]["queue"], stack.queue.as_str(), "{letters:?}");

    let refused = |what: &str, outcome: Result<(), lapin::Error>| {
        let error = outcome.expect_err(what);
        assert!(
            error.to_string().contains("ACCESS_REFUSED"),
            "{what}: {error}"
        );
    };
    for (user, role) in [(&publisher_user, "publisher"), (&consumer_user, "consumer")] {
        let connection = BrokerAddress::new(user.url())
            .connect(ConnectionProperties::default())
            .await
            .expect("the user logs in");
        let channel = connection.create_channel().await.expect("channel");
        refused(
            &format!("the {role} deletes the queue"),
            channel
                .queue_delete(stack.queue.as_str().into(), QueueDeleteOptions::default())
                .await
                .map(drop),
        );
        let channel = connection.create_channel().await.expect("channel");
        refused(
            &format!("the {role} declares a queue"),
            channel
                .queue_declare(
                    format!("{}.extra", stack.queue).as_str().into(),
                    QueueDeclareOptions::default(),
                    FieldTable::default(),
                )
                .await
                .map(drop),
        );
        let channel = ConfirmChannel::select(connection.create_channel().await.expect("channel"))
            .await
            .expect("confirm mode");
        refused(
            &format!("the {role} publishes to another exchange"),
            channel
                .publish("amq.direct", "x", b"{}", Default::default())
                .await
                .map(drop),
        );
        common::amqp::close(&connection, "done").await;
    }
    let connection = BrokerAddress::new(publisher_user.url())
        .connect(ConnectionProperties::default())
        .await
        .expect("the publisher logs in");
    let channel = connection.create_channel().await.expect("channel");
    refused(
        "the publisher reads the queue",
        channel
            .basic_get(stack.queue.as_str().into(), BasicGetOptions::default())
            .await
            .map(drop),
    );
    common::amqp::close(&connection, "done").await;
}
