//! Views: stored queries planned under each caller's identity.

use crate::support::{TestServer, rows};
use serde_json::json;

#[tokio::test]
async fn a_view_over_a_user_table_shows_each_caller_their_own_rows() {
    let s = TestServer::start().await;
    let root = s.root_token().await;
    s.ok(
        &root,
        "CREATE NAMESPACE app; CREATE USER TABLE app.notes (id BIGINT PRIMARY KEY, body TEXT, done BOOLEAN)",
    )
    .await;
    let users = s.users_with_tokens(&root, &["ann", "bob"]).await;
    s.ok(
        &users[0],
        "INSERT INTO app.notes VALUES (1, 'ann open', false), (2, 'ann done', true)",
    )
    .await;
    s.ok(
        &users[1],
        "INSERT INTO app.notes VALUES (1, 'bob open', false)",
    )
    .await;
    s.ok(
        &root,
        "CREATE VIEW app.open_notes AS SELECT id, body FROM notes WHERE NOT done",
    )
    .await;
    let q = "SELECT id, body FROM app.open_notes ORDER BY id";
    assert_eq!(
        rows(&s.ok(&users[0], q).await),
        vec![vec![json!("1"), json!("ann open")]]
    );
    assert_eq!(
        rows(&s.ok(&users[1], q).await),
        vec![vec![json!("1"), json!("bob open")]]
    );
    // Projection and filters on top of the view.
    let n = s
        .ok(
            &users[0],
            "SELECT COUNT(*) FROM app.open_notes WHERE id > 0",
        )
        .await;
    assert_eq!(rows(&n), vec![vec![json!("1")]]);

    // Listed as a VIEW.
    let t = s
        .ok(
            &root,
            "SELECT table_type FROM information_schema.tables WHERE table_schema = 'app' AND table_name = 'open_notes'",
        )
        .await;
    assert_eq!(rows(&t), vec![vec![json!("VIEW")]]);

    // OR REPLACE changes it; plain CREATE of an existing name is refused.
    let (_, _, msg) = s
        .err(
            &root,
            "CREATE VIEW app.open_notes AS SELECT id FROM app.notes",
        )
        .await;
    assert!(msg.contains("open_notes"), "{msg}");
    s.ok(
        &root,
        "CREATE OR REPLACE VIEW app.open_notes AS SELECT id, body FROM app.notes WHERE done",
    )
    .await;
    assert_eq!(
        rows(&s.ok(&users[0], q).await),
        vec![vec![json!("2"), json!("ann done")]]
    );
    assert!(rows(&s.ok(&users[1], q).await).is_empty());

    // A view that would read itself, a name a table has, and non-admins are refused.
    s.ok(&root, "CREATE VIEW app.v2 AS SELECT id FROM app.open_notes")
        .await;
    let (_, _, msg) = s
        .err(
            &root,
            "CREATE OR REPLACE VIEW app.open_notes AS SELECT id, 'x' AS body FROM app.v2",
        )
        .await;
    assert!(msg.contains("read itself"), "{msg}");
    let (_, _, msg) = s
        .err(&root, "CREATE VIEW app.notes AS SELECT 1 AS one")
        .await;
    assert!(msg.contains("app.notes"), "{msg}");
    let (status, _, _) = s
        .err(
            &users[0],
            "CREATE VIEW app.mine AS SELECT id FROM app.notes",
        )
        .await;
    assert_eq!(status, 403);

    // Survives a restart.
    let s = s.restart().await;
    let ann = s.token("ann", "ann-pass-123").await;
    assert_eq!(
        rows(&s.ok(&ann, q).await),
        vec![vec![json!("2"), json!("ann done")]]
    );

    // Its table dropped: an error naming the view and the table, with a hint.
    let root = s.root_token().await;
    s.ok(&root, "DROP TABLE app.notes").await;
    let (_, _, msg) = s.err(&ann, q).await;
    assert!(
        msg.contains("app.open_notes")
            && msg.contains("app.notes")
            && msg.contains("CREATE OR REPLACE VIEW"),
        "{msg}"
    );
    s.ok(&root, "DROP VIEW app.v2; DROP VIEW app.open_notes")
        .await;
    s.ok(&root, "DROP VIEW IF EXISTS app.open_notes").await;
    let (_, _, msg) = s.err(&root, "DROP VIEW app.open_notes").await;
    assert!(msg.contains("app.open_notes"), "{msg}");
}
