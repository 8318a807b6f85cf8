//! FILE columns over raw multipart: upload with `FILE("…")`, download by the reference's
//! stored name, USER isolation, failures that store nothing, and a dropped table's files.

use crate::support::{TestServer, rows};
use serde_json::Value;

/// Sends `sql` with `files` (`(placeholder, file name, bytes)`) as a multipart request.
async fn upload(
    s: &TestServer,
    token: &str,
    sql: &str,
    files: &[(&str, &str, &[u8])],
) -> (u16, Value) {
    let mut form = reqwest::multipart::Form::new().text("sql", sql.to_string());
    for (placeholder, name, bytes) in files {
        let part = reqwest::multipart::Part::bytes(bytes.to_vec())
            .file_name(name.to_string())
            .mime_str("text/plain")
            .unwrap();
        form = form.part(format!("file:{placeholder}"), part);
    }
    let resp = s
        .http
        .post(format!("{}/v1/api/sql", s.base))
        .bearer_auth(token)
        .multipart(form)
        .send()
        .await
        .unwrap();
    (resp.status().as_u16(), resp.json().await.unwrap())
}

/// The download URL of a FileRef (the SDK's rule: `{id}-{slug}.{ext}` under its `sub`).
fn url_of(s: &TestServer, table: &str, file_ref: &Value) -> String {
    let stored = kalamdb_core::sql::files::stored_name(
        file_ref["id"].as_str().unwrap(),
        file_ref["name"].as_str().unwrap(),
    );
    format!(
        "{}/v1/files/app/{table}/{}/{stored}",
        s.base,
        file_ref["sub"].as_str().unwrap()
    )
}

async fn download(s: &TestServer, token: &str, url: &str) -> (u16, Vec<u8>) {
    let resp = s.http.get(url).bearer_auth(token).send().await.unwrap();
    (resp.status().as_u16(), resp.bytes().await.unwrap().to_vec())
}

#[tokio::test]
async fn files_upload_download_and_stay_with_their_rows() {
    let s = TestServer::start().await;
    let root = s.root_token().await;
    s.ok(&root, "CREATE NAMESPACE app; CREATE USER TABLE app.docs (id BIGINT PRIMARY KEY, title TEXT, body FILE)").await;
    let users = s.users_with_tokens(&root, &["ada", "bob"]).await;
    let (status, body) = upload(
        &s,
        &users[0],
        "INSERT INTO app.docs (id, title, body) VALUES (1, 'notes', FILE(\"doc\"))",
        &[("doc", "My Notes.TXT", b"hello files")],
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let r = s
        .ok(&users[0], "SELECT body FROM app.docs WHERE id = 1")
        .await;
    let file_ref: Value = serde_json::from_str(rows(&r)[0][0].as_str().unwrap()).unwrap();
    assert_eq!(file_ref["name"], "My Notes.TXT");
    assert_eq!(file_ref["size"], 11);
    assert_eq!(file_ref["sub"], "f0001");
    assert_eq!(file_ref["sha256"].as_str().unwrap().len(), 64);
    let url = url_of(&s, "docs", &file_ref);
    assert!(url.ends_with("-my-notes.txt"), "{url}");
    assert_eq!(
        download(&s, &users[0], &url).await,
        (200, b"hello files".to_vec())
    );
    // Another user has no such file in their partition; an admin may name the owner.
    assert_eq!(download(&s, &users[1], &url).await.0, 404);
    assert_eq!(
        download(&s, &root, &format!("{url}?user_id=ada")).await.1,
        b"hello files"
    );
    let (status, _) = download(&s, &users[1], &format!("{url}?user_id=ada")).await;
    assert_eq!(status, 403);

    // A failing statement keeps nothing: the file is deleted again.
    let dir = s.dir.path().join("storage/app/docs/ada/f0001");
    let before = std::fs::read_dir(&dir).unwrap().count();
    let (status, body) = upload(
        &s,
        &users[0],
        "INSERT INTO app.docs (id, title, body) VALUES (1, 'dup', FILE('doc'))",
        &[("doc", "again.txt", b"x")],
    )
    .await;
    assert_eq!(status, 400, "{body}");
    assert_eq!(std::fs::read_dir(&dir).unwrap().count(), before);
    // Parts and calls must match.
    for (sql, files) in [
        (
            "INSERT INTO app.docs (id, body) VALUES (2, FILE('missing'))",
            vec![],
        ),
        (
            "INSERT INTO app.docs (id, title) VALUES (2, 'no file')",
            vec![("extra", "e.txt", b"e".as_slice())],
        ),
    ] {
        let (status, body) = upload(&s, &users[0], sql, &files).await;
        assert_eq!(
            (status, body["error"]["code"].as_str()),
            (400, Some("INVALID_INPUT")),
            "{sql}: {body}"
        );
    }
    // FILE(…) in a JSON request is a request error, not an unknown function.
    let (status, code, msg) = s
        .err(
            &users[0],
            "INSERT INTO app.docs (id, body) VALUES (3, FILE('doc'))",
        )
        .await;
    assert_eq!((status, code.as_str()), (400, "INVALID_INPUT"), "{msg}");
    // Text that merely mentions files is untouched.
    s.ok(
        &users[0],
        "INSERT INTO app.docs (id, title) VALUES (4, 'file (draft)')",
    )
    .await;
    // A dropped table's files go with it.
    s.ok(&root, "DROP TABLE app.docs").await;
    let table_dir = s.dir.path().join("storage/app/docs");
    let mut left = files_under(&table_dir);
    for _ in 0..100 {
        if left.is_empty() {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        left = files_under(&table_dir);
    }
    assert!(
        left.is_empty(),
        "the dropped table's files are removed: {left:?}"
    );
}

/// Regular files anywhere under `dir`.
fn files_under(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    entries
        .flatten()
        .flat_map(|e| {
            let path = e.path();
            if path.is_dir() {
                files_under(&path)
            } else {
                vec![path]
            }
        })
        .collect()
}

/// The stored names in `dir` (a scope's `f0001` folder), sorted.
fn names_in(dir: &std::path::Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .map(|entries| {
            entries
                .flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    names.sort();
    names
}

/// The stored name of the FileRef in column `body` of row `id`.
async fn stored_of(s: &TestServer, token: &str, id: i64) -> String {
    let r = s
        .ok(token, &format!("SELECT body FROM app.docs WHERE id = {id}"))
        .await;
    let file_ref: Value = serde_json::from_str(rows(&r)[0][0].as_str().unwrap()).unwrap();
    kalamdb_core::sql::files::stored_name(
        file_ref["id"].as_str().unwrap(),
        file_ref["name"].as_str().unwrap(),
    )
}

#[tokio::test]
async fn files_no_kept_version_refers_to_are_deleted_by_a_full_compaction() {
    let s = TestServer::start_with(|c| c.engine.storage.tombstone_retention_secs = 0).await;
    let root = s.root_token().await;
    s.ok(
        &root,
        "CREATE NAMESPACE app; CREATE USER TABLE app.docs (id BIGINT PRIMARY KEY, body FILE)",
    )
    .await;
    let users = s.users_with_tokens(&root, &["ada"]).await;
    let ada = &users[0];
    for (id, name) in [(1, "first.txt"), (2, "second.txt"), (3, "third.txt")] {
        let sql = format!("INSERT INTO app.docs (id, body) VALUES ({id}, FILE('f'))");
        let (status, body) = upload(&s, ada, &sql, &[("f", name, b"v1")]).await;
        assert_eq!(status, 200, "{body}");
    }
    let first = stored_of(&s, ada, 1).await;
    let third = stored_of(&s, ada, 3).await;
    // Row 1 is flushed, then gets a new file in the hot tier; row 2 is deleted; row 3 stays.
    s.ok(&root, "STORAGE FLUSH TABLE app.docs").await;
    let (status, body) = upload(
        &s,
        ada,
        "UPDATE app.docs SET body = FILE('f') WHERE id = 1",
        &[("f", "replaced.txt", b"v2")],
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let replaced = stored_of(&s, ada, 1).await;
    s.ok(ada, "DELETE FROM app.docs WHERE id = 2").await;
    // A file no statement ever committed (a crash between upload and commit).
    let dir = s.dir.path().join("storage/app/docs/ada/f0001");
    std::fs::write(dir.join("42-orphan.txt"), b"lost").unwrap();
    assert_eq!(names_in(&dir).len(), 5);

    // One segment, nothing to merge: only the orphan goes. The flushed version of row 1
    // still refers to `first`, and the deleted row's tombstone (hot) keeps its cells.
    s.ok(&root, "STORAGE COMPACT TABLE app.docs").await;
    let mut kept = vec![first.clone(), third.clone(), replaced.clone()];
    let second_left: Vec<String> = names_in(&dir)
        .into_iter()
        .filter(|n| !kept.contains(n))
        .collect();
    assert_eq!(second_left.len(), 1, "{:?}", names_in(&dir));
    assert!(second_left[0].ends_with("-second.txt"));
    // Once the new versions are flushed and merged over the old, `first` and the deleted
    // row's file (its tombstone is past retention) have no version left.
    s.ok(&root, "STORAGE FLUSH TABLE app.docs").await;
    s.ok(&root, "STORAGE COMPACT TABLE app.docs").await;
    kept.retain(|n| *n != first);
    kept.sort();
    assert_eq!(names_in(&dir), kept);
    // What stays is still served.
    let url = format!("{}/v1/files/app/docs/f0001/{replaced}", s.base);
    assert_eq!(download(&s, ada, &url).await, (200, b"v2".to_vec()));
}
