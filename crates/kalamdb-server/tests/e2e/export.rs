//! `EXPORT USER DATA`: a user's archive holds exactly their rows of every USER table (read
//! back with a standard tar reader and JSON parser), only they or an admin download it.

use crate::support::TestServer;
use serde_json::Value;
use std::collections::BTreeMap;
use std::io::Read;

/// The files of a tar archive by name.
fn untar(bytes: &[u8]) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    let mut archive = tar::Archive::new(bytes);
    for entry in archive.entries().unwrap() {
        let mut entry = entry.unwrap();
        let name = entry.path().unwrap().to_string_lossy().into_owned();
        let mut text = String::new();
        entry.read_to_string(&mut text).unwrap();
        out.insert(name, text);
    }
    out
}

async fn download(s: &TestServer, token: &str, id: &str) -> (u16, Vec<u8>) {
    let resp = s
        .http
        .get(format!("{}/v1/api/exports/{id}", s.base))
        .bearer_auth(token)
        .send()
        .await
        .unwrap();
    (resp.status().as_u16(), resp.bytes().await.unwrap().to_vec())
}

/// The export id an `EXPORT USER DATA` message names.
fn export_id(message: &Value) -> String {
    let text = message["message"].as_str().unwrap();
    text.split("/v1/api/exports/")
        .nth(1)
        .and_then(|rest| rest.split_whitespace().next())
        .unwrap_or_else(|| panic!("{text}"))
        .to_string()
}

#[tokio::test]
async fn a_user_export_holds_exactly_their_rows_and_only_they_download_it() {
    let s = TestServer::start().await;
    let root = s.root_token().await;
    s.ok(
        &root,
        "CREATE NAMESPACE app; CREATE USER TABLE app.notes (id INT PRIMARY KEY, body TEXT); \
         CREATE USER TABLE app.tags (id INT PRIMARY KEY, tag TEXT); \
         CREATE SHARED TABLE app.public (id INT PRIMARY KEY, v TEXT); \
         INSERT INTO app.public VALUES (1, 'shared')",
    )
    .await;
    let tokens = s.users_with_tokens(&root, &["alice", "bob"]).await;
    let (alice, bob) = (&tokens[0], &tokens[1]);
    s.ok(alice, "INSERT INTO app.notes VALUES (1, 'a1'), (2, 'a2')")
        .await;
    s.ok(alice, "INSERT INTO app.tags VALUES (1, 'x')").await;
    s.ok(bob, "INSERT INTO app.notes VALUES (1, 'b1')").await;

    let made = s.ok(alice, "EXPORT USER DATA").await;
    let id = export_id(&made);
    let (status, bytes) = download(&s, alice, &id).await;
    assert_eq!(status, 200);
    let files = untar(&bytes);
    assert_eq!(
        files.keys().collect::<Vec<_>>(),
        ["app.notes.jsonl", "app.tags.jsonl", "manifest.json"]
    );
    let lines = |name: &str| -> Vec<Value> {
        files[name]
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    };
    let notes = lines("app.notes.jsonl");
    let bodies: Vec<&str> = notes.iter().map(|r| r["body"].as_str().unwrap()).collect();
    assert_eq!(bodies, ["a1", "a2"]);
    assert_eq!(lines("app.tags.jsonl")[0]["tag"], "x");
    let manifest: Value = serde_json::from_str(&files["manifest.json"]).unwrap();
    assert_eq!(manifest["user_id"], "alice");
    assert_eq!(
        manifest["tables"],
        serde_json::json!([["app.notes", 2], ["app.tags", 1]])
    );

    // Bob cannot fetch it, nor export Alice's data; an admin can do both.
    assert_eq!(download(&s, bob, &id).await.0, 404);
    let (_, code, _) = s.err(bob, "EXPORT USER DATA FOR USER 'alice'").await;
    assert_eq!(code, "PERMISSION_DENIED");
    assert_eq!(download(&s, &root, &id).await.0, 200);
    let bobs = s.ok(&root, "EXPORT USER DATA FOR USER 'bob'").await;
    let files = untar(&download(&s, &root, &export_id(&bobs)).await.1);
    assert_eq!(files["app.notes.jsonl"].lines().count(), 1);
    assert!(files["app.notes.jsonl"].contains("b1"));
    // Unknown and malformed ids.
    assert_eq!(download(&s, alice, "123").await.0, 404);
    assert_eq!(download(&s, alice, "..%2f..%2fetc").await.0, 404);
}
