//! `BACKUP DATABASE TO '…'` while writers run, then `kalamdb-server restore` (the real binary)
//! into a new data folder and a server started on it: every write acknowledged before the
//! backup began is there (hot and flushed, SHARED and USER), nothing sent after it ended is.

use crate::support::{TestServer, id_values, rows};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

#[tokio::test]
async fn an_online_backup_restores_what_was_acknowledged_before_it() {
    let s = TestServer::start().await;
    let root = s.root_token().await;
    s.ok(
        &root,
        "CREATE NAMESPACE app; CREATE SHARED TABLE app.b (id INT PRIMARY KEY, v TEXT); \
         CREATE USER TABLE app.u (id INT PRIMARY KEY, v TEXT)",
    )
    .await;
    s.ok(
        &root,
        &format!("INSERT INTO app.b VALUES {}", id_values(1..=200)),
    )
    .await;
    s.ok(&root, "STORAGE FLUSH TABLE app.b").await; // these are cold now
    s.ok(
        &root,
        &format!("INSERT INTO app.b VALUES {}", id_values(201..=300)),
    )
    .await;
    let alice = s.users_with_tokens(&root, &["alice"]).await.remove(0);
    s.ok(
        &alice,
        &format!("INSERT INTO app.u VALUES {}", id_values(1..=10)),
    )
    .await;

    // A writer goes on through the backup, recording when each insert was sent and acked.
    let stop = Arc::new(AtomicBool::new(false));
    let writer = {
        let (http, base, token, stop) = (
            s.http.clone(),
            s.base.clone(),
            root.clone(),
            Arc::clone(&stop),
        );
        tokio::spawn(async move {
            let mut log = Vec::new();
            let mut id = 1000;
            while !stop.load(Ordering::Relaxed) {
                let sent = Instant::now();
                let sql = format!("INSERT INTO app.b VALUES ({id}, 'w')");
                let (status, body) = crate::support::post_sql(&http, &base, &token, &sql).await;
                assert_eq!(status, 200, "{body}");
                log.push((id, sent, Instant::now()));
                id += 1;
            }
            log
        })
    };
    tokio::time::sleep(std::time::Duration::from_millis(150)).await;
    let folder = tempfile::tempdir().unwrap();
    let target = folder.path().join("bk");
    let began = Instant::now();
    let done = s
        .ok(&root, &format!("BACKUP DATABASE TO '{}'", target.display()))
        .await;
    let ended = Instant::now();
    assert!(
        done["message"].as_str().unwrap().contains("Backup written"),
        "{done}"
    );
    tokio::time::sleep(std::time::Duration::from_millis(150)).await;
    stop.store(true, Ordering::Relaxed);
    let log = writer.await.unwrap();
    assert!(
        log.iter().any(|(_, _, acked)| *acked < began),
        "no write before the backup"
    );
    assert!(
        log.iter().any(|(_, sent, _)| *sent > ended),
        "no write after the backup"
    );
    // A second backup into the same folder is refused.
    let (_, _, msg) = s
        .err(&root, &format!("BACKUP DATABASE TO '{}'", target.display()))
        .await;
    assert!(msg.contains("not empty"), "{msg}");
    // Plain users may not take backups.
    let (_, code, _) = s.err(&alice, "BACKUP DATABASE TO '/tmp/nope'").await;
    assert_eq!(code, "PERMISSION_DENIED");
    // Nor may a backup go inside the data it copies.
    let inside = s.dir.path().join("bk");
    let (_, _, msg) = s
        .err(&root, &format!("BACKUP DATABASE TO '{}'", inside.display()))
        .await;
    assert!(msg.contains("overlaps the data folder"), "{msg}");
    assert!(!inside.exists());
    drop(s);

    let restored = tempfile::tempdir().unwrap();
    let data = restored.path().join("data");
    let restore = || {
        std::process::Command::new(env!("CARGO_BIN_EXE_kalamdb-server"))
            .args(["restore", "--from"])
            .arg(&target)
            .arg("--data-dir")
            .arg(&data)
            .output()
            .unwrap()
    };
    let out = restore();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // Restoring over data is refused.
    let again = restore();
    assert!(!again.status.success());

    let dir = tempfile::TempDir::new_in(restored.path()).unwrap();
    std::fs::remove_dir(dir.path()).unwrap();
    std::fs::rename(&data, dir.path()).unwrap();
    let s = TestServer::start_in(dir).await;
    let root = s.root_token().await;
    let ids: std::collections::HashSet<i64> = rows(&s.ok(&root, "SELECT id FROM app.b").await)
        .iter()
        .map(|r| r[0].as_i64().unwrap())
        .collect();
    for i in 1..=300 {
        assert!(
            ids.contains(&i),
            "row {i} (written before the backup) is missing"
        );
    }
    for (id, sent, acked) in &log {
        if *acked < began {
            assert!(
                ids.contains(id),
                "write {id}, acknowledged before the backup, is missing"
            );
        }
        if *sent > ended {
            assert!(
                !ids.contains(id),
                "write {id}, sent after the backup, is in it"
            );
        }
    }
    let alice = s.token("alice", "alice-pass-123").await;
    let mine = s.ok(&alice, "SELECT count(*) FROM app.u").await;
    assert_eq!(rows(&mine), vec![vec![serde_json::json!("10")]]);
    // The flushed rows come back from their segments.
    let cold = s.ok(&root, "SELECT v FROM app.b WHERE id = 7").await;
    assert_eq!(rows(&cold), vec![vec![serde_json::json!("v7")]]);
}

/// A backup waits for a flush that is moving rows to Parquet (it would otherwise copy a
/// manifest that disagrees with its checkpoint); the flush, released, finishes; the restored
/// data holds every row exactly once.
#[tokio::test]
async fn a_backup_waits_for_a_running_flush() {
    use kalamdb_tables::faults::{Pause, PausePoint};
    let s = TestServer::start().await;
    let root = s.root_token().await;
    s.ok(
        &root,
        "CREATE NAMESPACE app; CREATE SHARED TABLE app.f (id INT PRIMARY KEY, v TEXT); \
         INSERT INTO app.f VALUES (1, 'a'), (2, 'b'), (3, 'c')",
    )
    .await;
    let pause = Arc::new(Pause::default());
    let table = kalamdb_commons::TableId::new(
        kalamdb_commons::NamespaceId::new("app"),
        kalamdb_commons::TableName::new("f"),
    );
    s.faults()
        .pause_at(PausePoint::FlushBeforeRead, table, Arc::clone(&pause));
    let folder = tempfile::tempdir().unwrap();
    let target = folder.path().join("bk");
    let backup_done = Arc::new(AtomicBool::new(false));
    let flush = s.ok(&root, "STORAGE FLUSH TABLE app.f");
    let backup = async {
        pause.reached.notified().await;
        let sql = format!("BACKUP DATABASE TO '{}'", target.display());
        let done = Arc::clone(&backup_done);
        let backup = async {
            let r = s.ok(&root, &sql).await;
            done.store(true, Ordering::SeqCst);
            r
        };
        let release = async {
            // The backup cannot finish while the flush stands at its pause.
            tokio::time::sleep(std::time::Duration::from_millis(300)).await;
            assert!(
                !backup_done.load(Ordering::SeqCst),
                "the backup did not wait"
            );
            pause.resume.notify_one();
        };
        tokio::join!(backup, release).0
    };
    let (flushed, backed_up) = tokio::join!(flush, backup);
    assert!(
        flushed["message"].as_str().unwrap().contains("Flushed 3"),
        "{flushed}"
    );
    assert!(
        backed_up["message"]
            .as_str()
            .unwrap()
            .contains("Backup written")
    );
    drop(s);

    let restored = tempfile::tempdir().unwrap();
    kalamdb_core::backup::restore(
        target.to_str().unwrap(),
        restored.path(),
        false,
        &mut |_| {},
    )
    .await
    .unwrap();
    let s = TestServer::start_in(restored).await;
    let root = s.root_token().await;
    let all = s.ok(&root, "SELECT id, v FROM app.f ORDER BY id").await;
    assert_eq!(
        rows(&all),
        vec![
            vec![serde_json::json!(1), serde_json::json!("a")],
            vec![serde_json::json!(2), serde_json::json!("b")],
            vec![serde_json::json!(3), serde_json::json!("c")],
        ]
    );
}
