//! The lock probe: a writer and a reader run against `messages` while a migration is applied, and the
//! longest single write or read is how long the migration kept the table's users waiting.

use std::{
    sync::{
        atomic::{AtomicBool, AtomicU64, Ordering},
        Arc,
    },
    time::{Duration, Instant},
};

use consumer::migrations::{self, MigrationSettings};
use end_to_end::{database_url, eventually, remove_resources_blocking, server_url};
use sqlx::{migrate::Migrator, Connection, PgConnection};
use uuid::Uuid;

/// The longest a write or read may wait while a migration after the released ones runs. An expand or
/// contract step takes its table lock for milliseconds; a rewrite holds it for seconds per million rows.
pub const STALL_BOUND: Duration = Duration::from_secs(1);

/// Migration settings for tests: the defaults of `DB_MIGRATION_TIMEOUT_SECS` and
/// `DB_MIGRATION_LOCK_TIMEOUT_MS`, with progress logged every second.
pub fn settings() -> MigrationSettings {
    MigrationSettings {
        statement_timeout: Duration::from_secs(3600),
        lock_timeout: Duration::from_millis(1000),
        progress_every: Duration::from_secs(1),
        tcp_keepalive_secs: 60,
    }
}

/// A database of its own for one test, dropped with it.
pub struct ScratchDatabase {
    pub name: String,
    pub url: String,
}

impl ScratchDatabase {
    /// Creates an empty database and applies the migrations of `schema` to it.
    pub async fn with_schema(schema: &Migrator) -> Self {
        let name = format!("test_upgrade_{}", Uuid::new_v4().simple());
        let mut admin = PgConnection::connect(&server_url()).await.expect("server");
        sqlx::query(&format!(
            "CREATE DATABASE \"{name}\" ENCODING 'UTF8' TEMPLATE template0"
        ))
        .execute(&mut admin)
        .await
        .expect("create database");
        let database = Self {
            url: database_url(&name),
            name,
        };
        migrations::apply(&database.url, &settings(), schema)
            .await
            .expect("schema applied");
        database
    }

    pub async fn connect(&self) -> PgConnection {
        PgConnection::connect(&self.url).await.expect("database")
    }
}

impl Drop for ScratchDatabase {
    fn drop(&mut self) {
        remove_resources_blocking(&format!("test.{}", self.name), &self.name);
    }
}

/// Fills `messages` with `rows` rows from 1,000 senders, with attributes as clients send them, and
/// vacuums it as an old table would be.
pub async fn fill(database: &ScratchDatabase, rows: u64) {
    let mut connection = database.connect().await;
    let column: String = sqlx::query_scalar(
        "SELECT data_type FROM information_schema.columns \
         WHERE table_name = 'messages' AND column_name = 'message_attributes'",
    )
    .fetch_one(&mut connection)
    .await
    .expect("attribute column");
    sqlx::query(&format!(
        "INSERT INTO messages (id, sender, ts, message_attributes, sent_from_ip, priority, received_at) \
         SELECT gen_random_uuid(), 'sender-' || (n % 1000), '19941114', \
                CAST('{{\"n\": ' || n || ', \"publisher\": \"---publisher is ready rabbitmq---\"}}' AS {column}), \
                '10.0.0.1', n % 10, now() - n * interval '1 millisecond' \
         FROM generate_series(1, $1) AS n"
    ))
    .bind(i64::try_from(rows).expect("rows"))
    .execute(&mut connection)
    .await
    .expect("fill");
    sqlx::query("VACUUM ANALYZE messages")
        .execute(&mut connection)
        .await
        .expect("vacuum");
}

/// What the writer and the reader saw while the work ran.
#[derive(Debug)]
pub struct Stalls {
    /// How long the work took.
    pub work: Duration,
    /// The longest single insert.
    pub write: Duration,
    /// The longest single page read.
    pub read: Duration,
    pub writes: u64,
    pub reads: u64,
}

impl Stalls {
    /// The longest either kind of user of the table waited.
    pub fn longest(&self) -> Duration {
        self.write.max(self.read)
    }
}

/// Runs `work` while a writer inserts one row at a time and a reader reads the newest page, each on a
/// connection of its own, and returns the work's outcome with the longest wait of each.
pub async fn probe<T>(
    database: &ScratchDatabase,
    work: impl std::future::Future<Output = T>,
) -> (T, Stalls) {
    let stop = Arc::new(AtomicBool::new(false));
    let writer = spawn_user(database.connect().await, stop.clone(), |connection| {
        Box::pin(async move {
            sqlx::query(
                "INSERT INTO messages (id, sender, received_at) VALUES ($1, 'probe', now())",
            )
            .bind(Uuid::now_v7())
            .execute(connection)
            .await
            .map(|_| ())
        })
    });
    let reader = spawn_user(database.connect().await, stop.clone(), |connection| {
        Box::pin(async move {
            sqlx::query("SELECT id FROM messages ORDER BY received_at DESC, id DESC LIMIT 100")
                .fetch_all(connection)
                .await
                .map(|_| ())
        })
    });
    eventually(
        Duration::from_secs(30),
        "the writer and reader to run",
        || {
            let done =
                writer.done.load(Ordering::Relaxed) > 0 && reader.done.load(Ordering::Relaxed) > 0;
            async move { done.then_some(()) }
        },
    )
    .await;
    let started = Instant::now();
    let outcome = work.await;
    let work = started.elapsed();
    stop.store(true, Ordering::Relaxed);
    let (writes, write) = writer.task.await.expect("writer");
    let (reads, read) = reader.task.await.expect("reader");
    (
        outcome,
        Stalls {
            work,
            write,
            read,
            writes,
            reads,
        },
    )
}

type Operation =
    for<'c> fn(&'c mut PgConnection) -> futures::future::BoxFuture<'c, Result<(), sqlx::Error>>;

struct User {
    done: Arc<AtomicU64>,
    task: tokio::task::JoinHandle<(u64, Duration)>,
}

/// Repeats `operation` until `stop`, counting them and keeping the longest (the one in flight when
/// `stop` is set included, so a wait that outlasts the work is counted whole).
fn spawn_user(mut connection: PgConnection, stop: Arc<AtomicBool>, operation: Operation) -> User {
    let done = Arc::new(AtomicU64::new(0));
    let counted = done.clone();
    let task = tokio::spawn(async move {
        let mut longest = Duration::ZERO;
        while !stop.load(Ordering::Relaxed) {
            let started = Instant::now();
            operation(&mut connection)
                .await
                .expect("a write or read of the probe failed");
            longest = longest.max(started.elapsed());
            counted.fetch_add(1, Ordering::Relaxed);
        }
        (counted.load(Ordering::Relaxed), longest)
    });
    User { done, task }
}
