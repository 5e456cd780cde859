//! Databases that go read-only, hang on a lock, or cannot hold every message: the consumer recovers by
//! itself, says it is unready, stops within its timeout, or refuses to start, and loses nothing.

use std::time::Duration;

use end_to_end::{database_url, eventually, server_url, spawn_consumer, StackConfig, TestStack};
use sqlx::{postgres::PgPoolOptions, Connection, PgConnection};

use crate::{fixtures::message_from, process::ConsumerProcess};

async fn admin() -> sqlx::PgPool {
    PgPoolOptions::new()
        .max_connections(1)
        .connect(&server_url())
        .await
        .expect("admin connection")
}

async fn readiness(stack: &TestStack, url: &str) -> u16 {
    stack
        .http
        .get(format!("{url}/readyz"))
        .send()
        .await
        .map_or(0, |r| r.status().as_u16())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_a_read_only_spell_ingestion_resumes_without_killing_any_backend() {
    // Arrange: the database turns read-only for new sessions, and the consumer's sessions are ended, as
    // when a primary is demoted and a standby answers at the same address.
    let stack = TestStack::start().await;
    let before = stack.publish_ok(&message_from("before")).await;
    stack.wait_stored(before).await;
    let admin = admin().await;
    let database = &stack.database;
    sqlx::query(&format!(
        "ALTER DATABASE \"{database}\" SET default_transaction_read_only = on"
    ))
    .execute(&admin)
    .await
    .unwrap();
    sqlx::query("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = $1")
        .bind(database)
        .execute(&admin)
        .await
        .unwrap();

    // Act: a message arrives during the spell, then the database is writable again.
    let during = stack.publish_ok(&message_from("during")).await;
    eventually(
        Duration::from_secs(20),
        "writes to fail as read-only",
        || async {
            (stack
                .metric(stack.consumer_url(), "consumer_database_up")
                .await
                == 0.0)
                .then_some(())
        },
    )
    .await;
    sqlx::query(&format!(
        "ALTER DATABASE \"{database}\" RESET default_transaction_read_only"
    ))
    .execute(&admin)
    .await
    .unwrap();

    // Assert: stored within seconds, on fresh connections, with no backend killed.
    eventually(Duration::from_secs(15), "ingestion to resume", || async {
        (stack.rows_for(&[during]).await == (1, 1)).then_some(())
    })
    .await;
    assert_eq!(stack.row_count().await, 2);
    assert_eq!(readiness(&stack, stack.consumer_url()).await, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_held_by_a_table_lock_makes_the_consumer_unready_and_sigterm_still_exits_in_time() {
    // Arrange
    let stack = TestStack::start_publisher_only(StackConfig::unique()).await;
    let extra = [("DB_STUCK_WRITE_MS", "500"), ("SHUTDOWN_TIMEOUT_SECS", "3")];
    let mut consumer = ConsumerProcess::spawn_with(&stack.consumer_config, &extra);
    stack.wait_ready(&consumer.url).await;
    let mut locker = PgConnection::connect(&database_url(&stack.database))
        .await
        .unwrap();
    sqlx::query("BEGIN").execute(&mut locker).await.unwrap();
    sqlx::query("LOCK TABLE messages IN ACCESS EXCLUSIVE MODE")
        .execute(&mut locker)
        .await
        .unwrap();

    // Act
    let held = stack.publish_ok(&message_from("held by the lock")).await;
    eventually(
        Duration::from_secs(10),
        "readiness to fail on the stuck write",
        || async { (readiness(&stack, &consumer.url).await == 503).then_some(()) },
    )
    .await;
    let (status, took) = consumer.terminate();
    sqlx::query("ROLLBACK").execute(&mut locker).await.unwrap();
    let restarted = ConsumerProcess::spawn(&stack.consumer_config);

    // Assert: out within SHUTDOWN_TIMEOUT_SECS, the batch left for the next consumer, stored once.
    assert!(status.success(), "exit status {status}");
    assert!(took < Duration::from_secs(5), "took {took:?} to exit");
    eventually(
        Duration::from_secs(30),
        "the held message to be stored",
        || async { (stack.rows_for(&[held]).await == (1, 1)).then_some(()) },
    )
    .await;
    println!("consumer exited in {took:?} on SIGTERM while its write waited on a lock");
    drop(restarted);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_consumer_refuses_to_start_on_a_database_that_is_not_utf8_naming_its_encoding() {
    // Arrange
    let mut config = StackConfig::unique();
    let admin = admin().await;
    sqlx::query(&format!(
        "CREATE DATABASE \"{}\" ENCODING 'SQL_ASCII' LC_COLLATE 'C' LC_CTYPE 'C' TEMPLATE template0",
        config.database
    ))
    .execute(&admin)
    .await
    .unwrap();
    config.consumer.database.database_url = database_url(&config.database);

    // Act
    let consumer = spawn_consumer(&config.consumer);
    let outcome = tokio::time::timeout(Duration::from_secs(20), consumer.finished()).await;

    // Assert
    let error = outcome.expect("the consumer stops by itself").unwrap_err();
    assert!(format!("{error:#}").contains("SQL_ASCII"), "{error:#}");
    end_to_end::remove_resources(&config.queue, &config.database).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_pooled_session_carries_the_configured_statement_timeout_and_keepalive() {
    // Arrange
    let settings = consumer::config::DatabaseConfig {
        database_url: server_url(),
        db_pool_size: 2,
        db_statement_timeout_ms: 1234,
        db_tcp_keepalive_secs: 7,
        ..Default::default()
    };
    let pool = settings.write_pool().expect("a valid URL");

    // Act
    let (statement_timeout, keepalive_idle): (String, String) = sqlx::query_as(
        "SELECT current_setting('statement_timeout'), current_setting('tcp_keepalives_idle')",
    )
    .fetch_one(&pool)
    .await
    .expect("the server answers");
    let cancelled = sqlx::query("SELECT pg_sleep(3)")
        .execute(&pool)
        .await
        .expect_err("cancelled by the server");

    // Assert
    assert_eq!(statement_timeout, "1234ms");
    assert_eq!(keepalive_idle, "7");
    assert_eq!(
        cancelled
            .as_database_error()
            .and_then(|error| error.code())
            .as_deref(),
        Some("57014"),
        "{cancelled}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn errors_that_leave_a_connection_unable_to_write_are_told_apart_from_refused_rows() {
    use consumer::poisons_connection;
    // Arrange: real errors from the server, one of each kind.
    let admin = admin().await;
    let mut terminated = PgConnection::connect(&server_url()).await.unwrap();
    let pid: i32 = sqlx::query_scalar("SELECT pg_backend_pid()")
        .fetch_one(&mut terminated)
        .await
        .unwrap();
    sqlx::query("SELECT pg_terminate_backend($1)")
        .bind(pid)
        .execute(&admin)
        .await
        .unwrap();
    let mut read_only = PgConnection::connect(&server_url()).await.unwrap();
    sqlx::query("SET default_transaction_read_only = on")
        .execute(&mut read_only)
        .await
        .unwrap();

    // Act
    let give_up = std::time::Instant::now() + Duration::from_secs(5);
    let after_termination = loop {
        // Polled: the backend ends shortly after the signal.
        match sqlx::query("SELECT 1").execute(&mut terminated).await {
            Err(error) => break error,
            Ok(_) => assert!(
                std::time::Instant::now() < give_up,
                "the backend outlived its termination"
            ),
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let on_read_only = sqlx::query("CREATE TABLE never (n int)")
        .execute(&mut read_only)
        .await
        .expect_err("a read-only session refuses writes");
    let refused_row = sqlx::query("SELECT 'not a number'::int")
        .execute(&admin)
        .await
        .expect_err("a bad value");

    // Assert
    assert!(
        poisons_connection(&after_termination),
        "{after_termination:?}"
    );
    assert_eq!(
        on_read_only
            .as_database_error()
            .and_then(|e| e.code())
            .as_deref(),
        Some("25006")
    );
    assert!(poisons_connection(&on_read_only));
    assert!(!poisons_connection(&refused_row), "{refused_row:?}");
}
