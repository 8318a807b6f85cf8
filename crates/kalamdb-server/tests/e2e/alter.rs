//! ALTER TABLE: schema versions over hot and flushed rows, before and after restart.

use crate::support::{TestServer, rows};
use serde_json::{Value, json};

async fn all(s: &TestServer, token: &str, sql: &str) -> Vec<Vec<Value>> {
    rows(&s.ok(token, sql).await)
}

#[tokio::test]
async fn columns_added_renamed_dropped_and_widened_read_right_in_both_tiers() {
    let s = TestServer::start().await;
    let root = s.root_token().await;
    s.ok(
        &root,
        "CREATE NAMESPACE app; CREATE SHARED TABLE app.t (id BIGINT PRIMARY KEY, n INT, note TEXT); \
         INSERT INTO app.t VALUES (1, 10, 'cold')",
    )
    .await;
    s.ok(&root, "STORAGE FLUSH TABLE app.t").await;
    s.ok(&root, "INSERT INTO app.t VALUES (2, 20, 'hot')").await;

    // ADD COLUMN with a default: rows from before read it, in both tiers.
    let r = s
        .ok(
            &root,
            "ALTER TABLE app.t ADD COLUMN status TEXT DEFAULT 'new'",
        )
        .await;
    assert!(
        r["message"].as_str().unwrap().contains("schema version 2"),
        "{r}"
    );
    s.ok(
        &root,
        "INSERT INTO app.t (id, n, note) VALUES (3, 30, 'after')",
    )
    .await;
    s.ok(&root, "INSERT INTO app.t VALUES (4, 40, 'null', NULL)")
        .await;
    let q = "SELECT id, status FROM app.t ORDER BY id";
    let expected = vec![
        vec![json!("1"), json!("new")],
        vec![json!("2"), json!("new")],
        vec![json!("3"), json!("new")],
        vec![json!("4"), Value::Null],
    ];
    assert_eq!(all(&s, &root, q).await, expected);

    // RENAME keeps the data; the old name is gone.
    s.ok(&root, "ALTER TABLE app.t RENAME COLUMN note TO memo")
        .await;
    assert_eq!(
        all(&s, &root, "SELECT memo FROM app.t WHERE id = 1").await,
        vec![vec![json!("cold")]]
    );
    s.err(&root, "SELECT note FROM app.t").await;

    // Widening INT -> BIGINT keeps the values.
    s.ok(&root, "ALTER TABLE app.t MODIFY COLUMN n BIGINT")
        .await;
    s.ok(
        &root,
        "INSERT INTO app.t VALUES (5, 5000000000, 'big', 'x')",
    )
    .await;
    assert_eq!(
        all(&s, &root, "SELECT n FROM app.t ORDER BY id").await,
        vec![
            vec![json!("10")],
            vec![json!("20")],
            vec![json!("30")],
            vec![json!("40")],
            vec![json!("5000000000")]
        ]
    );

    // DROP then ADD under the same name: the old data never comes back (cold included).
    s.ok(&root, "STORAGE FLUSH TABLE app.t").await;
    s.ok(&root, "ALTER TABLE app.t DROP COLUMN memo").await;
    s.ok(&root, "ALTER TABLE app.t ADD COLUMN memo TEXT").await;
    let memos = all(&s, &root, "SELECT memo FROM app.t").await;
    assert!(memos.iter().all(|r| r[0].is_null()), "{memos:?}");

    // Refused, with the reason.
    for (sql, needle) in [
        ("ALTER TABLE app.t DROP COLUMN id", "primary key"),
        ("ALTER TABLE app.t RENAME COLUMN id TO key", "primary key"),
        ("ALTER TABLE app.t MODIFY COLUMN n INT", "widening"),
        ("ALTER TABLE app.t ADD COLUMN must TEXT NOT NULL", "DEFAULT"),
        (
            "ALTER TABLE app.t ADD COLUMN at TIMESTAMP NOT NULL DEFAULT NOW()",
            "literal DEFAULT",
        ),
        (
            "ALTER TABLE app.t ALTER COLUMN status SET NOT NULL",
            "has rows",
        ),
        ("ALTER TABLE app.t DROP COLUMN _seq", "system column"),
        ("ALTER TABLE app.t ADD COLUMN status TEXT", "already exists"),
        ("ALTER TABLE app.t SET TTL_SECONDS 5", "STREAM"),
    ] {
        let (_, _, msg) = s.err(&root, sql).await;
        assert!(msg.contains(needle), "{sql}: {msg}");
    }
    s.ok(&root, "ALTER TABLE app.t SET ACCESS_LEVEL 'PUBLIC'")
        .await;

    // A new DEFAULT for the added column applies to new inserts only: rows older than the ADD
    // COLUMN keep reading the default it had then (in both tiers, also after a restart below).
    s.ok(
        &root,
        "ALTER TABLE app.t ALTER COLUMN status SET DEFAULT 'other'; \
         INSERT INTO app.t (id, n) VALUES (6, 60)",
    )
    .await;
    let status_q = "SELECT id, status FROM app.t WHERE id IN (1, 2, 3, 6) ORDER BY id";
    let statuses = vec![
        vec![json!("1"), json!("new")],
        vec![json!("2"), json!("new")],
        vec![json!("3"), json!("new")],
        vec![json!("6"), json!("other")],
    ];
    assert_eq!(all(&s, &root, status_q).await, statuses);

    // Every change is a version in system.schemas.
    let versions = all(
        &s,
        &root,
        "SELECT schema_version FROM system.schemas WHERE namespace_id = 'app' AND table_name = 't' ORDER BY schema_version",
    )
    .await;
    assert_eq!(versions.len(), 8, "{versions:?}");

    // The same after a restart, and after the old rows are flushed under the new schema.
    let s = s.restart().await;
    let root = s.root_token().await;
    assert_eq!(all(&s, &root, q).await[..4], expected[..]);
    s.ok(
        &root,
        "STORAGE FLUSH TABLE app.t; STORAGE COMPACT TABLE app.t",
    )
    .await;
    assert_eq!(all(&s, &root, q).await[..4], expected[..]);
    assert_eq!(all(&s, &root, status_q).await, statuses);
    assert_eq!(
        all(&s, &root, "SELECT n FROM app.t WHERE id = 5").await,
        vec![vec![json!("5000000000")]]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn alters_under_concurrent_writes_and_reads_lose_nothing() {
    use crate::support::post_sql;
    let s = TestServer::start().await;
    let root = s.root_token().await;
    s.ok(
        &root,
        "CREATE NAMESPACE app; CREATE SHARED TABLE app.c (id BIGINT PRIMARY KEY, v TEXT)",
    )
    .await;
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut writers = Vec::new();
    for w in 0..3u64 {
        let (http, base, token, stop) =
            (s.http.clone(), s.base.clone(), root.clone(), stop.clone());
        writers.push(tokio::spawn(async move {
            let (mut ok, mut i) = (0u64, 0u64);
            let mut seen = std::collections::BTreeSet::new();
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let sql = format!("INSERT INTO app.c (id) VALUES ({})", w * 1_000_000 + i);
                let (status, body) = post_sql(&http, &base, &token, &sql).await;
                assert_eq!(status, 200, "{sql}: {body}");
                ok += 1;
                i += 1;
                let (status, body) =
                    post_sql(&http, &base, &token, "SELECT COUNT(*) FROM app.c").await;
                assert_eq!(status, 200, "{body}");
                // One whole schema version per query: its columns, and rows that fit them.
                let (status, body) =
                    post_sql(&http, &base, &token, "SELECT * FROM app.c LIMIT 3").await;
                assert_eq!(status, 200, "{body}");
                let result = &body["results"][0];
                let schema: Vec<String> = result["schema"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|f| format!("{} {}", f["name"].as_str().unwrap(), f["data_type"]))
                    .filter(|f| !f.starts_with('_'))
                    .collect();
                seen.insert(schema.join(", "));
            }
            (ok, seen)
        }));
    }
    for sql in [
        "ALTER TABLE app.c ADD COLUMN status TEXT DEFAULT 'new'",
        "ALTER TABLE app.c RENAME COLUMN v TO body",
        "STORAGE FLUSH TABLE app.c",
        "ALTER TABLE app.c ADD COLUMN n INT",
        "ALTER TABLE app.c DROP COLUMN body",
        "ALTER TABLE app.c MODIFY COLUMN n BIGINT",
    ] {
        tokio::time::sleep(std::time::Duration::from_millis(60)).await;
        s.ok(&root, sql).await;
    }
    tokio::time::sleep(std::time::Duration::from_millis(60)).await;
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let mut written = 0;
    let mut seen = std::collections::BTreeSet::new();
    for w in writers {
        let (n, schemas) = w.await.unwrap();
        written += n;
        seen.extend(schemas);
    }
    // Every schema a query saw is one of the table's versions, never a mix of two.
    let versions = [
        "id \"BigInt\", v \"Text\"",
        "id \"BigInt\", v \"Text\", status \"Text\"",
        "id \"BigInt\", body \"Text\", status \"Text\"",
        "id \"BigInt\", body \"Text\", status \"Text\", n \"Int\"",
        "id \"BigInt\", status \"Text\", n \"Int\"",
        "id \"BigInt\", status \"Text\", n \"BigInt\"",
    ];
    for schema in &seen {
        assert!(
            versions.contains(&schema.as_str()),
            "not a version: {schema}"
        );
    }
    assert!(
        seen.len() >= 2,
        "the readers saw the schema change: {seen:?}"
    );
    let n = s.ok(&root, "SELECT COUNT(*) FROM app.c").await;
    assert_eq!(
        rows(&n),
        vec![vec![json!(written.to_string())]],
        "no row lost"
    );
    let nulls = s
        .ok(&root, "SELECT COUNT(*) FROM app.c WHERE status IS NULL")
        .await;
    assert_eq!(
        rows(&nulls),
        vec![vec![json!("0")]],
        "every row, whenever written, reads the added column's default"
    );
}

#[tokio::test]
async fn alters_over_flushed_only_data_read_right_after_restart() {
    let s = TestServer::start().await;
    let root = s.root_token().await;
    s.ok(
        &root,
        "CREATE NAMESPACE app; CREATE USER TABLE app.k (id BIGINT PRIMARY KEY, a TEXT, b SMALLINT)",
    )
    .await;
    let users = s.users_with_tokens(&root, &["ann"]).await;
    s.ok(
        &users[0],
        "INSERT INTO app.k VALUES (1, 'x', 7), (2, 'y', NULL)",
    )
    .await;
    s.ok(&root, "STORAGE FLUSH TABLE app.k").await;
    for sql in [
        "ALTER TABLE app.k ADD COLUMN c BOOLEAN DEFAULT true",
        "ALTER TABLE app.k RENAME COLUMN a TO label",
        "ALTER TABLE app.k ALTER COLUMN b TYPE INT",
        "ALTER TABLE app.k DROP COLUMN label",
        "ALTER TABLE app.k ADD COLUMN label TEXT DEFAULT 'fresh'",
    ] {
        s.ok(&root, sql).await;
    }
    let q = "SELECT id, b, c, label FROM app.k ORDER BY id";
    let expected = vec![
        vec![json!("1"), json!(7), json!(true), json!("fresh")],
        vec![json!("2"), Value::Null, json!(true), json!("fresh")],
    ];
    assert_eq!(all(&s, &users[0], q).await, expected);
    let s = s.restart().await;
    let ann = s.token("ann", "ann-pass-123").await;
    assert_eq!(all(&s, &ann, q).await, expected);
}

/// A flush that took the table definition before an ALTER and reads the rows after it (and
/// after a write using the new column) must not write those rows under the old columns: it
/// starts again under the new definition, and the new column's value survives the flush.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flush_overtaken_by_an_alter_writes_the_new_columns() {
    use kalamdb_tables::faults::{Pause, PausePoint};
    use std::sync::Arc;
    let s = TestServer::start().await;
    let root = s.root_token().await;
    s.ok(
        &root,
        "CREATE NAMESPACE app; CREATE SHARED TABLE app.t (id BIGINT PRIMARY KEY, v TEXT); \
         INSERT INTO app.t VALUES (1, 'a'), (2, 'b')",
    )
    .await;
    let pause = Arc::new(Pause::default());
    let table = kalamdb_commons::TableId::new(
        kalamdb_commons::NamespaceId::new("app"),
        kalamdb_commons::TableName::new("t"),
    );
    s.faults()
        .pause_at(PausePoint::FlushBeforeRead, table, Arc::clone(&pause));
    let flush = s.ok(&root, "STORAGE FLUSH TABLE app.t");
    let alter = async {
        pause.reached.notified().await;
        s.ok(&root, "ALTER TABLE app.t ADD COLUMN n INT DEFAULT 7")
            .await;
        s.ok(&root, "INSERT INTO app.t VALUES (3, 'c', 42)").await;
        pause.resume.notify_one();
    };
    tokio::join!(flush, alter);

    let expected = vec![
        vec![json!("1"), json!("a"), json!(7)],
        vec![json!("2"), json!("b"), json!(7)],
        vec![json!("3"), json!("c"), json!(42)],
    ];
    let q = "SELECT id, v, n FROM app.t ORDER BY id";
    assert_eq!(all(&s, &root, q).await, expected);
    let s = s.restart().await;
    let root = s.root_token().await;
    assert_eq!(all(&s, &root, q).await, expected);
}

/// STREAM tables take column changes like the others; SET TTL_SECONDS and SET FLUSH_POLICY act
/// at once (reads apply the new TTL, the flush scheduler the new policy).
#[tokio::test]
async fn stream_columns_and_table_options_change_in_place() {
    use crate::cold::{segments, wait_for_segments};
    let s = TestServer::start_with(|c| c.engine.storage.flush_check_interval_ms = 20).await;
    let root = s.root_token().await;
    s.ok(
        &root,
        "CREATE NAMESPACE app; \
         CREATE STREAM TABLE app.ev (id BIGINT, kind TEXT) WITH (TTL_SECONDS = 3600); \
         CREATE SHARED TABLE app.s (id BIGINT PRIMARY KEY); \
         INSERT INTO app.ev VALUES (1, 'a')",
    )
    .await;
    s.ok(
        &root,
        "ALTER TABLE app.ev ADD COLUMN level INT DEFAULT 1; \
         ALTER TABLE app.ev RENAME COLUMN kind TO what; \
         INSERT INTO app.ev VALUES (2, 'b', 5)",
    )
    .await;
    let q = "SELECT id, what, level FROM app.ev ORDER BY id";
    assert_eq!(
        all(&s, &root, q).await,
        vec![
            vec![json!("1"), json!("a"), json!(1)],
            vec![json!("2"), json!("b"), json!(5)]
        ]
    );
    let (_, _, msg) = s
        .err(&root, "ALTER TABLE app.ev SET FLUSH_POLICY 'rows:5'")
        .await;
    assert!(msg.contains("STREAM"), "{msg}");
    s.ok(&root, "ALTER TABLE app.ev SET TTL_SECONDS 1").await;
    tokio::time::sleep(std::time::Duration::from_millis(1300)).await;
    assert!(all(&s, &root, q).await.is_empty(), "older than the new TTL");

    // No policy: nothing flushes on its own; SET FLUSH_POLICY starts it.
    s.ok(&root, "INSERT INTO app.s VALUES (1), (2), (3)").await;
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    let dir = s.dir.path().join("storage/app/s");
    assert!(segments(&dir).is_empty());
    s.ok(&root, "ALTER TABLE app.s SET FLUSH_POLICY 'rows:2'")
        .await;
    wait_for_segments(&dir, 1).await;
    assert_eq!(
        all(&s, &root, "SELECT COUNT(*) FROM app.s").await,
        vec![vec![json!("3")]]
    );
}
