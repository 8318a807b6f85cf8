//! `information_schema`: tables, views and system tables listed with their kind, and columns
//! with their type, nullability and declared DEFAULT (ALTERs included).

use crate::support::{TestServer, rows};
use serde_json::{Value, json};

/// `(column_name, column_default, is_nullable, data_type)` of `ns.table`, by position.
async fn columns(s: &TestServer, token: &str, ns: &str, table: &str) -> Vec<Vec<Value>> {
    rows(
        &s.ok(
            token,
            &format!(
                "SELECT column_name, column_default, is_nullable, data_type \
                 FROM information_schema.columns \
                 WHERE table_schema = '{ns}' AND table_name = '{table}' ORDER BY ordinal_position"
            ),
        )
        .await,
    )
}

#[tokio::test]
async fn columns_show_types_nullability_and_defaults_through_alters() {
    let s = TestServer::start().await;
    let root = s.root_token().await;
    s.ok(
        &root,
        "CREATE NAMESPACE app; \
         CREATE SHARED TABLE app.items (id BIGINT PRIMARY KEY DEFAULT SNOWFLAKE_ID(), \
           name TEXT NOT NULL, qty INT DEFAULT 0, at TIMESTAMP DEFAULT NOW(), note TEXT)",
    )
    .await;
    let cols = columns(&s, &root, "app", "items").await;
    let user: Vec<&Vec<Value>> = cols
        .iter()
        .filter(|r| !r[0].as_str().unwrap().starts_with('_'))
        .collect();
    assert_eq!(
        user,
        vec![
            &vec![
                json!("id"),
                json!("SNOWFLAKE_ID()"),
                json!("NO"),
                json!("Int64")
            ],
            &vec![json!("name"), Value::Null, json!("NO"), json!("Utf8")],
            &vec![json!("qty"), json!("0"), json!("YES"), json!("Int32")],
            &vec![
                json!("at"),
                json!("NOW()"),
                json!("YES"),
                cols[3][3].clone()
            ],
            &vec![json!("note"), Value::Null, json!("YES"), json!("Utf8")],
        ]
    );
    assert!(
        cols[3][3].as_str().unwrap().starts_with("Timestamp"),
        "{cols:?}"
    );

    // ALTERs show up at once: added column with its default, widened type, new default,
    // dropped and renamed columns.
    s.ok(
        &root,
        "ALTER TABLE app.items ADD COLUMN tag TEXT DEFAULT 'none'; \
         ALTER TABLE app.items MODIFY COLUMN qty BIGINT; \
         ALTER TABLE app.items ALTER COLUMN note SET DEFAULT 'n/a'; \
         ALTER TABLE app.items DROP COLUMN at; \
         ALTER TABLE app.items RENAME COLUMN name TO title",
    )
    .await;
    let cols = columns(&s, &root, "app", "items").await;
    let user: Vec<Vec<Value>> = cols
        .into_iter()
        .filter(|r| !r[0].as_str().unwrap().starts_with('_'))
        .collect();
    assert_eq!(
        user,
        vec![
            vec![
                json!("id"),
                json!("SNOWFLAKE_ID()"),
                json!("NO"),
                json!("Int64")
            ],
            vec![json!("title"), Value::Null, json!("NO"), json!("Utf8")],
            vec![json!("qty"), json!("0"), json!("YES"), json!("Int64")],
            vec![json!("note"), json!("'n/a'"), json!("YES"), json!("Utf8")],
            vec![json!("tag"), json!("'none'"), json!("YES"), json!("Utf8")],
        ]
    );

    // A plain user sees the same catalog (table definitions are not per-user data).
    let users = s.users_with_tokens(&root, &["ann"]).await;
    assert_eq!(
        columns(&s, &users[0], "app", "items").await.len(),
        columns(&s, &root, "app", "items").await.len()
    );
}

#[tokio::test]
async fn tables_list_every_kind_and_views_keep_their_sql() {
    let s = TestServer::start().await;
    let root = s.root_token().await;
    s.ok(
        &root,
        "CREATE NAMESPACE app; \
         CREATE USER TABLE app.notes (id BIGINT PRIMARY KEY, body TEXT); \
         CREATE SHARED TABLE app.config (k TEXT PRIMARY KEY, v TEXT); \
         CREATE STREAM TABLE app.events (id BIGINT PRIMARY KEY, kind TEXT) WITH (TTL_SECONDS = 60); \
         CREATE VIEW app.recent AS SELECT id FROM app.notes WHERE id > 10",
    )
    .await;
    let t = rows(
        &s.ok(
            &root,
            "SELECT table_schema, table_name, table_type FROM information_schema.tables \
             WHERE table_schema IN ('app', 'system', 'information_schema') \
             ORDER BY table_schema, table_name",
        )
        .await,
    );
    let has = |schema: &str, name: &str, kind: &str| {
        assert!(
            t.contains(&vec![json!(schema), json!(name), json!(kind)]),
            "{schema}.{name} {kind} missing from {t:?}"
        )
    };
    has("app", "notes", "BASE TABLE");
    has("app", "config", "BASE TABLE");
    has("app", "events", "BASE TABLE");
    has("app", "recent", "VIEW");
    has("system", "users", "BASE TABLE");
    has("system", "schemas", "BASE TABLE");
    has("information_schema", "columns", "VIEW");

    let v = rows(
        &s.ok(
            &root,
            "SELECT table_name, definition FROM information_schema.views \
             WHERE table_schema = 'app'",
        )
        .await,
    );
    assert_eq!(
        v,
        vec![vec![
            json!("recent"),
            json!("SELECT id FROM app.notes WHERE id > 10")
        ]]
    );
    // System tables and views have columns too.
    let sys = rows(
        &s.ok(
            &root,
            "SELECT COUNT(*) FROM information_schema.columns \
             WHERE table_schema = 'system' AND table_name = 'users'",
        )
        .await,
    );
    assert_ne!(sys, vec![vec![json!("0")]]);
    let view_cols = rows(
        &s.ok(
            &root,
            "SELECT column_name, is_nullable FROM information_schema.columns \
             WHERE table_schema = 'app' AND table_name = 'recent'",
        )
        .await,
    );
    assert_eq!(view_cols, vec![vec![json!("id"), json!("NO")]]);

    // Functions, table functions included.
    let routines = rows(
        &s.ok(
            &root,
            "SELECT DISTINCT routine_name FROM information_schema.routines \
             WHERE routine_name IN ('generate_series', 'abs') ORDER BY routine_name",
        )
        .await,
    );
    assert_eq!(
        routines,
        vec![vec![json!("abs")], vec![json!("generate_series")]]
    );

    // A dropped table leaves information_schema at once.
    s.ok(&root, "DROP VIEW app.recent; DROP TABLE app.config")
        .await;
    let left = rows(
        &s.ok(
            &root,
            "SELECT table_name FROM information_schema.tables WHERE table_schema = 'app' \
             ORDER BY table_name",
        )
        .await,
    );
    assert_eq!(left, vec![vec![json!("events")], vec![json!("notes")]]);
}
