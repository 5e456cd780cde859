use consumer::{page_query, Cursor, PageRequest};
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
