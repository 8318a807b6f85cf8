//! Everything survives a clean restart: namespaces, tables, rows, updates, deletes, users.

use crate::support::{TestServer, rows};
use serde_json::json;

#[tokio::test]
async fn data_tables_and_users_survive_restart() {
    let s = TestServer::start().await;
    let t = s.root_token().await;
    s.ok(&t, "CREATE NAMESPACE app; CREATE TABLE app.t (id BIGINT PRIMARY KEY DEFAULT SNOWFLAKE_ID(), v TEXT)").await;
    s.ok(
        &t,
        "INSERT INTO app.t (id, v) VALUES (1, 'one'), (2, 'two'), (3, 'three')",
    )
    .await;
    s.ok(
        &t,
        "UPDATE app.t SET v = 'TWO' WHERE id = 2; DELETE FROM app.t WHERE id = 3",
    )
    .await;
    s.ok(
        &t,
        "CREATE USER carol WITH PASSWORD 'carol-pass-1' ROLE 'service'",
    )
    .await;
    let builds_before = s
        .server
        .as_ref()
        .unwrap()
        .app
        .schema_registry()
        .schema_builds();
    assert!(builds_before >= 1);

    let s = s.restart().await;
    let t = s.root_token().await;
    let r = s.ok(&t, "SELECT id, v FROM app.t ORDER BY id").await;
    assert_eq!(
        rows(&r),
        vec![
            vec![json!("1"), json!("one")],
            vec![json!("2"), json!("TWO")]
        ]
    );
    let r = s.ok(&t, "SHOW TABLES IN app").await;
    assert_eq!(rows(&r).len(), 1);
    let carol = s.token("carol", "carol-pass-1").await;
    s.ok(&carol, "SELECT 1").await;
    // The deleted key can be inserted again; the live one cannot.
    s.ok(&t, "INSERT INTO app.t (id, v) VALUES (3, 'again')")
        .await;
    let (_, _, msg) = s
        .err(&t, "INSERT INTO app.t (id, v) VALUES (1, 'dup')")
        .await;
    assert!(msg.contains("Primary key violation"), "{msg}");
}

#[tokio::test]
async fn schema_is_built_once_for_repeated_queries() {
    let s = TestServer::start().await;
    let t = s.root_token().await;
    s.ok(
        &t,
        "CREATE NAMESPACE app; CREATE TABLE app.t (id INT PRIMARY KEY)",
    )
    .await;
    let registry = s.server.as_ref().unwrap().app.schema_registry().clone();
    let before = registry.schema_builds();
    for i in 0..50 {
        s.ok(&t, &format!("INSERT INTO app.t VALUES ({i})")).await;
        s.ok(&t, "SELECT count(*) FROM app.t").await;
    }
    assert_eq!(
        registry.schema_builds(),
        before,
        "no rebuilds while the table is unchanged"
    );
    s.ok(&t, "DROP TABLE app.t").await;
    let (_, _, msg) = s.err(&t, "SELECT * FROM app.t").await;
    assert!(
        msg.contains("not found") || msg.contains("does not exist"),
        "{msg}"
    );
}
