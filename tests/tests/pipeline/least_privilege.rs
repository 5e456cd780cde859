//! The consumer runs as a role that owns its database and is nothing more: not a superuser, unable to
//! create databases or roles. Its migrations apply, and it stores and serves messages.

use end_to_end::{server_url, StackConfig, TestStack};
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
    config.consumer.database_url = format!("postgres://{role}@127.0.0.1:5432/{}", config.database);
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
