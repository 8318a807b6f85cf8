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
    for i in 0..500 {
        s.ok(&t, &format!("INSERT INTO app.t VALUES ({i})")).await;
        s.ok(&t, "SELECT count(*) FROM app.t").await;
    }
    assert_eq!(
        registry.schema_builds(),
        before,
        "no rebuilds over 1,000 statements while the table is unchanged"
    );
    // An ALTER invalidates exactly this table: the next statements rebuild it once.
    s.ok(&t, "ALTER TABLE app.t ADD COLUMN note TEXT").await;
    for _ in 0..20 {
        s.ok(&t, "SELECT count(*) FROM app.t").await;
    }
    assert_eq!(
        registry.schema_builds(),
        before + 1,
        "one rebuild after the ALTER"
    );
    s.ok(&t, "DROP TABLE app.t").await;
    let (_, _, msg) = s.err(&t, "SELECT * FROM app.t").await;
    assert!(
        msg.contains("not found") || msg.contains("does not exist"),
        "{msg}"
    );
}

/// Ids handed out ahead of the wall clock (as after the clock stepped back) stay behind every
/// id handed out after a restart: the generator resumes after the recorded high-water mark.
#[tokio::test]
async fn seq_continues_after_a_restart_even_when_the_clock_is_behind() {
    let s = TestServer::start().await;
    let root = s.root_token().await;
    s.ok(
        &root,
        "CREATE NAMESPACE app; CREATE SHARED TABLE app.s (id BIGINT PRIMARY KEY)",
    )
    .await;
    let app = &s.server.as_ref().unwrap().app;
    let hour_ahead = app.seq().next_id() + kalamdb_catalog::seq::millis_span(3_600_000);
    app.seq().observe(hour_ahead);
    s.ok(&root, "INSERT INTO app.s VALUES (1)").await;
    let seq_of =
        |r: &serde_json::Value| -> i64 { r["rows"][0][0].as_str().unwrap().parse().unwrap() };
    let before = seq_of(&s.ok(&root, "SELECT _seq FROM app.s WHERE id = 1").await);
    assert!(before > hour_ahead);
    let s = s.restart().await;
    let root = s.root_token().await;
    s.ok(&root, "INSERT INTO app.s VALUES (2)").await;
    let after = seq_of(&s.ok(&root, "SELECT _seq FROM app.s WHERE id = 2").await);
    assert!(after > before, "{after} must follow {before}");
}

/// A bad cluster topology names its key (clusters themselves: `cluster.rs`).
#[tokio::test]
async fn a_cluster_section_is_checked() {
    use kalamdb_core::config::cluster::{ClusterConfig, PeerConfig};
    let dir = tempfile::tempdir().unwrap();
    let mut settings = crate::support::test_config(dir.path());
    let peer = |id: u64| PeerConfig {
        node_id: id,
        rpc_addr: format!("127.0.0.1:{}", 19187 + id),
        api_addr: format!("http://127.0.0.1:{}", 18079 + id),
    };
    settings.engine.cluster = Some(ClusterConfig {
        join: false,
        node_id: 1,
        rpc_addr: "127.0.0.1:19188".into(),
        api_addr: "http://127.0.0.1:18080".into(),
        user_shards: 8,
        shared_shards: 1,
        heartbeat_interval_ms: 250,
        election_timeout_ms: [1000, 2000],
        snapshot_threshold: 50_000,
        peers: vec![peer(1), peer(2), peer(3)],
        tls: None,
    });
    settings.validate().unwrap();
    if let Some(c) = settings.engine.cluster.as_mut() {
        c.peers[1].node_id = 1;
    }
    let err = settings.validate().expect_err("duplicate node ids");
    assert!(err.to_string().contains("cluster.peers"), "{err}");
}
