use consumer::{feed_query, page_query, Cursor, FeedCursor, FeedPhase, PageRequest};
use end_to_end::TestStack;
use uuid::Uuid;

/// Fills the table with 200,000 rows from 1,000 senders, then shows that every page query walks an index
/// in order and stops at its limit: no sequential scan, no sort, whatever the table's size.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_page_query_reads_an_index_in_order_without_sorting() {
    // Arrange
    let stack = TestStack::start().await;
    sqlx::query(
        "INSERT INTO messages (id, sender, received_at) \
         SELECT gen_random_uuid(), 'sender-' || (n % 1000), now() - n * interval '1 millisecond' \
         FROM generate_series(1, 200000) AS n",
    )
    .execute(&stack.db)
    .await
    .unwrap();
    sqlx::query("ANALYZE messages")
        .execute(&stack.db)
        .await
        .unwrap();
    let cursor = Cursor {
        received_at: chrono::Utc::now() - chrono::Duration::seconds(60),
        id: Uuid::max(),
    };
    let requests = [
        (
            "first page",
            PageRequest {
                sender: None,
                after: None,
                limit: 101,
            },
        ),
        (
            "later page",
            PageRequest {
                sender: None,
                after: Some(cursor),
                limit: 101,
            },
        ),
        (
            "first page of a sender",
            PageRequest {
                sender: Some("sender-7".into()),
                after: None,
                limit: 101,
            },
        ),
        (
            "later page of a sender",
            PageRequest {
                sender: Some("sender-7".into()),
                after: Some(cursor),
                limit: 101,
            },
        ),
    ];

    for (case, request) in requests {
        // Act
        let sql = format!("EXPLAIN {}", page_query(&request, request.limit).sql());
        let mut query = sqlx::query_scalar::<_, String>(&sql);
        if let Some(sender) = &request.sender {
            query = query.bind(sender.clone());
        }
        if let Some(cursor) = request.after {
            query = query.bind(cursor.received_at).bind(cursor.id);
        }
        let plan = query
            .bind(i64::from(request.limit))
            .fetch_all(&stack.db)
            .await
            .unwrap()
            .join("\n");
        println!("{case}:\n{plan}\n");

        // Assert
        let index = if request.sender.is_some() {
            "messages_by_sender_newest_first"
        } else {
            "messages_newest_first"
        };
        assert!(
            plan.contains(&format!("Index Scan using {index}")),
            "{case}:\n{plan}"
        );
        assert!(
            !plan.contains("Sort") && !plan.contains("Seq Scan"),
            "{case}:\n{plan}"
        );
    }
}

/// The same for the feed: 200,000 rows stored before transaction ids were recorded and 200,000 after in
/// 200 transactions (from 100 senders, so that a sender's rows after a cursor are many more than a
/// page), and every phase of a feed page, from the start or a cursor, for everyone or one sender, walks
/// `messages_feed` or `messages_feed_by_sender` in order and stops at its limit.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_feed_query_reads_an_index_in_order_without_sorting() {
    // Arrange
    let stack = TestStack::start().await;
    // One statement of legacy rows, then 200 transactions of 1,000 rows each.
    let statements = [("NULL", 200_000)]
        .into_iter()
        .chain([("pg_current_xact_id()", 1000); 200]);
    for (xid, rows) in statements {
        sqlx::query(&format!(
            "INSERT INTO messages (id, sender, received_at, xid) \
             SELECT gen_random_uuid(), 'sender-' || (n % 100), now() - n * interval '1 millisecond', \
                    {xid} \
             FROM generate_series(1, {rows}) AS n"
        ))
        .execute(&stack.db)
        .await
        .unwrap();
    }
    sqlx::query("ANALYZE messages")
        .execute(&stack.db)
        .await
        .unwrap();
    let (xid, id): (String, Uuid) = sqlx::query_as(
        "SELECT xid::text, id FROM messages WHERE xid IS NOT NULL ORDER BY xid, id LIMIT 1",
    )
    .fetch_one(&stack.db)
    .await
    .unwrap();
    let legacy: Uuid = sqlx::query_scalar(
        "SELECT id FROM messages WHERE xid IS NULL ORDER BY id OFFSET 100000 LIMIT 1",
    )
    .fetch_one(&stack.db)
    .await
    .unwrap();
    let cursors = [
        ("from the start", FeedCursor::Start),
        ("after a legacy row", FeedCursor::Legacy(legacy)),
        (
            "after a row",
            FeedCursor::At {
                xid: xid.parse().unwrap(),
                id,
            },
        ),
    ];

    for (case, cursor) in cursors {
        for phase in [FeedPhase::Legacy, FeedPhase::Committed] {
            for sender in [None, Some("sender-7")] {
                // Act
                let query = feed_query(phase, cursor, sender, 101);
                let sql = format!("EXPLAIN {}", query.sql());
                let mut explain = sqlx::query_scalar::<_, String>(&sql);
                match (phase, cursor) {
                    (FeedPhase::Legacy, FeedCursor::Legacy(id)) => explain = explain.bind(id),
                    (FeedPhase::Committed, FeedCursor::At { xid, id }) => {
                        explain = explain.bind(xid.to_string()).bind(id)
                    }
                    _ => {}
                }
                if let Some(sender) = sender {
                    explain = explain.bind(sender);
                }
                let plan = explain
                    .bind(101_i64)
                    .fetch_all(&stack.db)
                    .await
                    .unwrap()
                    .join("\n");
                let case = format!("{case}, {phase:?}, sender {sender:?}");
                println!("{case}:\n{plan}\n");

                // Assert
                let index = if sender.is_some() {
                    "messages_feed_by_sender"
                } else {
                    "messages_feed"
                };
                assert!(
                    plan.contains(&format!("Index Scan using {index} ")),
                    "{case}:\n{plan}"
                );
                assert!(
                    !plan.contains("Sort") && !plan.contains("Seq Scan"),
                    "{case}:\n{plan}"
                );
            }
        }
    }
}
