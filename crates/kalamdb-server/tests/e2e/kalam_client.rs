//! Wire compatibility with a client nobody here wrote: the official Rust SDK,
//! `kalam-client = "=0.5.6-rc.0"` from crates.io. Log in, run SQL, subscribe, receive the
//! initial rows and insert/update/delete changes, materialize with `live()`, unsubscribe,
//! disconnect.

use crate::support::TestServer;
use kalam_client::{
    AuthProvider, ChangeEvent, KalamLinkClient, LiveRowsEvent, SubscriptionConfig,
    SubscriptionOptions,
};
use serde_json::{Value, json};
use std::time::Duration;

fn client(s: &TestServer, user: &str, password: &str) -> KalamLinkClient {
    KalamLinkClient::builder()
        .base_url(s.base.clone())
        .auth(AuthProvider::basic_auth(user.into(), password.into()))
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap()
}

async fn next_event(sub: &mut kalam_client::SubscriptionManager) -> ChangeEvent {
    tokio::time::timeout(Duration::from_secs(5), sub.next())
        .await
        .expect("no event within 5 s")
        .expect("stream ended")
        .expect("stream error")
}

/// Runs a statement through the client; it must succeed.
async fn run(c: &KalamLinkClient, sql: &str) {
    let r = c.execute_query(sql, None, None, None).await.unwrap();
    assert!(r.success(), "{sql}: {r:?}");
}

/// The materialized row set, once it holds `n` rows.
async fn rows_until(
    live: &mut kalam_client::LiveRowsSubscription,
    n: usize,
) -> Vec<kalam_client::RowData> {
    loop {
        let ev = tokio::time::timeout(Duration::from_secs(5), live.next())
            .await
            .expect("no live rows within 5 s")
            .expect("stream ended")
            .unwrap();
        if let LiveRowsEvent::Rows { rows, .. } = ev
            && rows.len() == n
        {
            return rows;
        }
    }
}

fn cell(row: &kalam_client::RowData, col: &str) -> Value {
    row.get(col).map(|c| c.0.clone()).unwrap_or(Value::Null)
}

#[tokio::test]
async fn official_rust_client_logs_in_queries_and_follows_changes() {
    let s = TestServer::start().await;
    let root = s.root_token().await;
    s.ok(&root, "CREATE NAMESPACE app; CREATE USER TABLE app.todos (id BIGINT PRIMARY KEY, title TEXT, done BOOLEAN)").await;
    s.ok(&root, "CREATE USER erin WITH PASSWORD 'erin-pass-123'")
        .await;

    let c = client(&s, "erin", "erin-pass-123");
    // Explicit login, then SQL through the client's own request/response models.
    let login = c.login("erin", "erin-pass-123").await.unwrap();
    assert_eq!(login.user.id.as_str(), "erin");
    let r = c
        .execute_query(
            "INSERT INTO app.todos VALUES (1, 'first', false), (2, 'second', false)",
            None,
            None,
            None,
        )
        .await
        .unwrap();
    assert!(r.success(), "{r:?}");
    let r = c
        .execute_query(
            "SELECT id, title FROM app.todos WHERE id = $1",
            None,
            Some(vec![json!(2).into()]),
            None,
        )
        .await
        .unwrap();
    let result = &r.results[0];
    assert_eq!(result.row_count, 1);
    assert_eq!(result.schema[0].name, "id");
    let row = &result.rows.as_ref().expect("rows")[0];
    assert_eq!(
        (row[0].0.clone(), row[1].0.clone()),
        (json!("2"), json!("second"))
    );

    // Raw live events: ack, initial batch, then insert/update/delete.
    c.connect().await.unwrap();
    let mut config = SubscriptionConfig::new("todos", "SELECT * FROM app.todos WHERE done = false");
    config.options = Some(SubscriptionOptions::new().with_batch_size(1));
    let mut sub = c.live_events_with_config(config).await.unwrap();
    let mut initial = Vec::new();
    while initial.len() < 2 {
        match next_event(&mut sub).await {
            ChangeEvent::Ack { schema, .. } => assert!(schema.iter().any(|f| f.name == "title")),
            ChangeEvent::InitialDataBatch { rows, .. } => initial.extend(rows),
            other => panic!("unexpected {other:?}"),
        }
    }
    let ids: Vec<Value> = initial.iter().map(|r| cell(r, "id")).collect();
    assert_eq!(ids, vec![json!("1"), json!("2")]);

    run(&c, "INSERT INTO app.todos VALUES (3, 'third', false)").await;
    match next_event(&mut sub).await {
        ChangeEvent::Insert { rows, .. } => assert_eq!(cell(&rows[0], "title"), json!("third")),
        other => panic!("expected insert, got {other:?}"),
    }
    run(&c, "UPDATE app.todos SET title = 'THIRD' WHERE id = 3").await;
    match next_event(&mut sub).await {
        ChangeEvent::Update { rows, old_rows, .. } => {
            assert_eq!(cell(&rows[0], "title"), json!("THIRD"));
            assert_eq!(cell(&old_rows[0], "title"), json!("third"));
        }
        other => panic!("expected update, got {other:?}"),
    }
    run(&c, "DELETE FROM app.todos WHERE id = 1").await;
    match next_event(&mut sub).await {
        ChangeEvent::Delete { old_rows, .. } => assert_eq!(cell(&old_rows[0], "id"), json!("1")),
        other => panic!("expected delete, got {other:?}"),
    }
    sub.close().await.unwrap();

    // Materialized rows with live(): the current set, then each change applied.
    let mut live = c.live("SELECT id, title FROM app.todos").await.unwrap();
    rows_until(&mut live, 2).await;
    run(&c, "INSERT INTO app.todos VALUES (4, 'fourth', true)").await;
    let latest = rows_until(&mut live, 3).await;
    let mut titles: Vec<Value> = latest.iter().map(|r| cell(r, "title")).collect();
    titles.sort_by_key(|v| v.to_string());
    assert_eq!(
        titles,
        vec![json!("THIRD"), json!("fourth"), json!("second")]
    );
    live.close().await.unwrap();
    c.disconnect().await;

    // Disconnect leaves nothing behind.
    let mut left = usize::MAX;
    for _ in 0..50 {
        let r = s.ok(&root, "SELECT live_id FROM system.live").await;
        left = crate::support::rows(&r).len();
        if left == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(left, 0);
}

/// FILE columns through the SDK's `file-uploads` feature: a multipart INSERT with
/// `FILE("…")`, the cell read back as a `FileRef`, and the SDK's download of it.
#[tokio::test]
async fn files_round_trip_through_the_sdk() {
    let s = TestServer::start().await;
    let root = s.root_token().await;
    s.ok(
        &root,
        "CREATE NAMESPACE app; CREATE USER TABLE app.docs (id BIGINT PRIMARY KEY, body FILE)",
    )
    .await;
    s.users_with_tokens(&root, &["fay"]).await;
    let c = client(&s, "fay", "fay-pass-123");
    let upload = kalam_client::FileUpload::new("doc", "Report 2026.pdf", b"%PDF-1.4 tiny".to_vec())
        .with_mime("application/pdf");
    let r = c
        .execute_with_files(
            "INSERT INTO app.docs (id, body) VALUES (1, FILE(\"doc\"))",
            vec![upload],
            None,
            None,
        )
        .await
        .unwrap();
    assert!(r.success(), "{r:?}");
    let r = c
        .execute_query("SELECT body FROM app.docs WHERE id = 1", None, None, None)
        .await
        .unwrap();
    let cell = &r.results[0].rows.as_ref().unwrap()[0][0];
    let file_ref = cell.as_file().expect("a FileRef in the FILE column");
    assert_eq!(
        (file_ref.name.as_str(), file_ref.size),
        ("Report 2026.pdf", 13)
    );
    assert_eq!(file_ref.mime, "application/pdf");
    let got = c
        .download_file(&file_ref, "app", "docs", None)
        .await
        .unwrap();
    assert_eq!(got.bytes, b"%PDF-1.4 tiny");
    assert_eq!(got.content_type.as_deref(), Some("application/pdf"));
}

/// The SDK's topic consumer (its `consumer` feature) against a topic fed by a table: it polls
/// through `/v1/api/topics/consume`, commits through `/v1/api/topics/ack`, and a new consumer
/// of the same group resumes right after the last commit.
#[tokio::test]
async fn the_sdk_topic_consumer_resumes_after_its_last_commit() {
    use kalam_client::AutoOffsetReset;
    let s = TestServer::start().await;
    let root = s.root_token().await;
    s.ok(
        &root,
        "CREATE NAMESPACE app; CREATE SHARED TABLE app.jobs (id INT PRIMARY KEY, task TEXT); \
         CREATE TOPIC app.work; ALTER TOPIC app.work ADD SOURCE app.jobs ON INSERT; \
         CREATE USER svc WITH PASSWORD 'svc-pass-1234' ROLE service; \
         INSERT INTO app.jobs VALUES (1, 'a'), (2, 'b'), (3, 'c'), (4, 'd'), (5, 'e')",
    )
    .await;
    let c = client(&s, "svc", "svc-pass-1234");
    let consumer = |c: &KalamLinkClient| {
        c.consumer()
            .group_id("workers")
            .topic("app.work")
            .auto_offset_reset(AutoOffsetReset::Earliest)
            .enable_auto_commit(false)
            .max_poll_records(3)
            .build()
            .unwrap()
    };
    let mut first = consumer(&c);
    let records = first.poll().await.unwrap();
    let offsets: Vec<u64> = records.iter().map(|r| r.offset).collect();
    assert_eq!(offsets, vec![0, 1, 2]);
    let payload: Value = serde_json::from_slice(&records[0].payload).unwrap();
    assert_eq!(payload["task"], "a");
    for r in &records {
        first.mark_processed(r);
    }
    first.commit_sync().await.unwrap();
    first.close().await.unwrap();

    let mut second = consumer(&c);
    let records = second.poll().await.unwrap();
    let offsets: Vec<u64> = records.iter().map(|r| r.offset).collect();
    assert_eq!(offsets, vec![3, 4], "resumed after the committed offset 2");
    let r = s
        .ok(
            &root,
            "SELECT group_id, last_acked_offset FROM system.topic_offsets",
        )
        .await;
    assert_eq!(
        crate::support::rows(&r),
        vec![vec![json!("workers"), json!("2")]]
    );
}
