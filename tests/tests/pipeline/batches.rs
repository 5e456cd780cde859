use std::{collections::HashMap, time::Duration};

use end_to_end::{eventually, TestStack};
use serde_json::{json, Value};
use uuid::Uuid;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_of_500_is_stored_exactly_with_ids_in_input_order() {
    // Arrange
    let stack = TestStack::start().await;
    let batch: Vec<Value> = (0..500)
        .map(|i| json!({ "sender": format!("sender-{i}"), "priority": i % 10, "messageAttributes": { "i": i } }))
        .collect();

    // Act
    let ids = stack.publish_batch_ok(&batch).await;

    // Assert
    assert_eq!(ids.len(), 500);
    eventually(Duration::from_secs(30), "500 rows", || async {
        (stack.rows_for(&ids).await == (500, 500)).then_some(())
    })
    .await;
    assert_eq!(stack.row_count().await, 500);
    let rows: Vec<(Uuid, String, i16, Value)> =
        sqlx::query_as("SELECT id, sender, priority, message_attributes FROM messages")
            .fetch_all(&stack.db)
            .await
            .unwrap();
    let by_id: HashMap<Uuid, (String, i16, Value)> = rows
        .into_iter()
        .map(|(id, s, p, a)| (id, (s, p, a)))
        .collect();
    for (i, id) in ids.iter().enumerate() {
        let (sender, priority, attributes) = &by_id[id];
        assert_eq!(sender, &format!("sender-{i}"));
        assert_eq!(i64::from(*priority), i as i64 % 10);
        assert_eq!(attributes, &json!({ "i": i }));
    }
}
