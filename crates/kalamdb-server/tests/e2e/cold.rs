//! Flush to Parquet and reads across the hot and cold tiers.

use crate::live::Ws;
use crate::support::{TestServer, rows};
use datafusion::prelude::{ParquetReadOptions, SessionContext};
use serde_json::{Value, json};
use std::path::{Path, PathBuf};

/// Parquet segments below `dir`, recursively.
pub(crate) fn segments(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    if let Ok(entries) = std::fs::read_dir(dir) {
        for e in entries.flatten() {
            let p = e.path();
            if p.is_dir() {
                out.extend(segments(&p));
            } else if p.extension().is_some_and(|x| x == "parquet") {
                out.push(p);
            }
        }
    }
    out.sort();
    out
}

async fn ids_and_names(s: &TestServer, token: &str, sql: &str) -> Vec<(String, Value)> {
    rows(&s.ok(token, sql).await)
        .into_iter()
        .map(|r| (r[0].as_str().unwrap().to_string(), r[1].clone()))
        .collect()
}

#[tokio::test]
async fn flushed_rows_read_as_one_table_and_deletes_after_flush_stay_deleted() {
    let s = TestServer::start().await;
    let root = s.root_token().await;
    s.ok(
        &root,
        "CREATE NAMESPACE app; CREATE SHARED TABLE app.items (id BIGINT PRIMARY KEY, name TEXT)",
    )
    .await;
    s.ok(
        &root,
        "INSERT INTO app.items VALUES (1, 'one'), (2, 'two'), (3, 'three'), (4, 'four')",
    )
    .await;
    let r = s.ok(&root, "STORAGE FLUSH TABLE app.items").await;
    let message = r["message"].as_str().unwrap();
    assert!(message.contains("Flushed 4 row(s)"), "{r}");
    // Upstream's clients read the job id after "Job ID: ".
    let job_id = message.rsplit("Job ID: ").next().unwrap();
    let job = s
        .ok(
            &root,
            &format!("SELECT job_type, status FROM system.jobs WHERE job_id = '{job_id}'"),
        )
        .await;
    assert_eq!(
        rows(&job),
        vec![vec![json!("flush"), json!("completed")]],
        "{message}"
    );
    let files = segments(&s.dir.path().join("storage/app/items"));
    assert_eq!(files.len(), 1, "{files:?}");

    // The hot tier no longer holds them; every read path still finds them.
    let all = "SELECT id, name FROM app.items ORDER BY id";
    assert_eq!(ids_and_names(&s, &root, all).await.len(), 4);
    let one = s.ok(&root, "SELECT name FROM app.items WHERE id = 3").await;
    assert_eq!(rows(&one), vec![vec![json!("three")]]);
    let (_, _, msg) = s
        .err(&root, "INSERT INTO app.items VALUES (2, 'again')")
        .await;
    assert!(
        msg.contains("Primary key violation"),
        "a flushed key is still taken: {msg}"
    );

    // Update and delete rows that live only in the segment, then flush those changes too.
    s.ok(&root, "UPDATE app.items SET name = 'TWO' WHERE id = 2")
        .await;
    s.ok(&root, "DELETE FROM app.items WHERE id = 3").await;
    s.ok(&root, "INSERT INTO app.items VALUES (5, 'five')")
        .await;
    let expected = vec![
        ("1".to_string(), json!("one")),
        ("2".to_string(), json!("TWO")),
        ("4".to_string(), json!("four")),
        ("5".to_string(), json!("five")),
    ];
    assert_eq!(ids_and_names(&s, &root, all).await, expected);
    s.ok(&root, "FLUSH TABLE app.items").await;
    assert_eq!(segments(&s.dir.path().join("storage/app/items")).len(), 2);
    assert_eq!(ids_and_names(&s, &root, all).await, expected);
    // A key deleted in a later segment can be inserted again.
    s.ok(&root, "INSERT INTO app.items VALUES (3, 'three again')")
        .await;
    s.ok(&root, "DELETE FROM app.items WHERE id = 3").await;

    let s = s.restart().await;
    let root = s.root_token().await;
    assert_eq!(
        ids_and_names(&s, &root, all).await,
        expected,
        "after restart"
    );
    let n = s
        .ok(&root, "SELECT COUNT(*) FROM app.items WHERE id = 3")
        .await;
    assert_eq!(
        rows(&n),
        vec![vec![json!("0")]],
        "the delete after flush holds"
    );

    // Segments are plain Parquet with _seq and _deleted.
    let ctx = SessionContext::new();
    let seg = &segments(&s.dir.path().join("storage/app/items"))[1];
    let df = ctx
        .read_parquet(seg.to_str().unwrap(), ParquetReadOptions::default())
        .await
        .unwrap();
    let names: Vec<String> = df
        .schema()
        .fields()
        .iter()
        .map(|f| f.name().clone())
        .collect();
    assert_eq!(names, ["id", "name", "_seq", "_deleted"]);
    let batches = df.collect().await.unwrap();
    let total: usize = batches.iter().map(|b| b.num_rows()).sum();
    assert_eq!(
        total, 3,
        "the second flush holds 2's update, 3's tombstone and 5's insert"
    );
}

#[tokio::test]
async fn user_tables_flush_into_one_folder_per_user_and_stay_private() {
    let s = TestServer::start().await;
    let root = s.root_token().await;
    s.ok(
        &root,
        "CREATE NAMESPACE app; CREATE USER TABLE app.notes (id BIGINT PRIMARY KEY, body TEXT)",
    )
    .await;
    let users = s.users_with_tokens(&root, &["alice", "bob"]).await;
    let (alice, bob) = (&users[0], &users[1]);
    s.ok(alice, "INSERT INTO app.notes VALUES (1, 'a1'), (2, 'a2')")
        .await;
    s.ok(bob, "INSERT INTO app.notes VALUES (1, 'b1')").await;
    s.ok(&root, "STORAGE FLUSH ALL IN app").await;
    let base = s.dir.path().join("storage/app/notes");
    assert_eq!(segments(&base.join("alice")).len(), 1);
    assert_eq!(segments(&base.join("bob")).len(), 1);
    assert_eq!(
        segments(&base).len(),
        2,
        "no segment outside the user folders"
    );
    let manifest: Value =
        serde_json::from_slice(&std::fs::read(base.join("alice/manifest.json")).unwrap()).unwrap();
    assert_eq!(manifest["segments"][0]["row_count"], 2);

    let q = "SELECT id, body FROM app.notes ORDER BY id";
    assert_eq!(
        ids_and_names(&s, alice, q).await,
        vec![("1".into(), json!("a1")), ("2".into(), json!("a2"))]
    );
    assert_eq!(
        ids_and_names(&s, bob, q).await,
        vec![("1".into(), json!("b1"))]
    );
    // Keys are per user in the cold tier too.
    s.ok(bob, "INSERT INTO app.notes VALUES (2, 'b2')").await;

    // A live subscription's initial rows include flushed ones.
    let mut ws = Ws::authed(&s, alice).await;
    let initial = ws
        .subscribe_all("n", "SELECT id, body FROM app.notes", json!({}))
        .await;
    assert_eq!(initial.len(), 2, "{initial:?}");

    // DROP TABLE removes the files; a new table of the same name starts empty.
    s.ok(&root, "DROP TABLE app.notes").await;
    assert!(segments(&base).is_empty());
    s.ok(
        &root,
        "CREATE USER TABLE app.notes (id BIGINT PRIMARY KEY, body TEXT)",
    )
    .await;
    assert!(ids_and_names(&s, alice, q).await.is_empty());
    s.ok(alice, "INSERT INTO app.notes VALUES (1, 'new')").await;
}

#[tokio::test]
async fn flush_is_for_service_and_admins_and_names_must_exist() {
    let s = TestServer::start().await;
    let root = s.root_token().await;
    s.ok(
        &root,
        "CREATE NAMESPACE app; CREATE SHARED TABLE app.t (id BIGINT PRIMARY KEY)",
    )
    .await;
    let users = s.users_with_tokens(&root, &["carol"]).await;
    let (status, _, _) = s.err(&users[0], "STORAGE FLUSH TABLE app.t").await;
    assert_eq!(status, 403, "plain users may not flush");
    s.ok(
        &root,
        "CREATE USER svc WITH PASSWORD 'svc-pass-123' ROLE 'service'",
    )
    .await;
    let svc = s.token("svc", "svc-pass-123").await;
    s.ok(&svc, "STORAGE FLUSH TABLE app.t").await;
    let (_, _, msg) = s.err(&root, "STORAGE FLUSH TABLE app.missing").await;
    assert!(msg.contains("app.missing"), "{msg}");
    let (_, _, msg) = s.err(&root, "STORAGE FLUSH ALL IN nowhere").await;
    assert!(msg.contains("nowhere"), "{msg}");
    let (_, code, _) = s.err(&root, "STORAGE FLUSH EVERYTHING").await;
    assert_eq!(code, "INVALID_SQL");
    let r = s.ok(&root, "STORAGE FLUSH TABLE app.t").await;
    assert!(
        r["message"].as_str().unwrap().contains("Flushed 0 row(s)"),
        "{r}"
    );
}

/// A flush interrupted at each step (the state a crash there leaves), then a restart: no row
/// lost, none doubled, and the next flush tidies up.
#[tokio::test]
async fn a_flush_interrupted_at_any_step_loses_and_doubles_nothing() {
    use kalamdb_tables::faults::FlushStep;
    let s = TestServer::start().await;
    let root = s.root_token().await;
    s.ok(
        &root,
        "CREATE NAMESPACE app; CREATE SHARED TABLE app.t (id BIGINT PRIMARY KEY, v TEXT)",
    )
    .await;
    s.ok(
        &root,
        "INSERT INTO app.t VALUES (1, 'a'), (2, 'b'), (3, 'c')",
    )
    .await;
    let dir = s.dir.path().join("storage/app/t");
    let all = "SELECT id, v FROM app.t ORDER BY id";

    // Segment written, manifest not: the file is a stray nobody reads.
    s.faults().fail_flush_at(FlushStep::SegmentWritten);
    let (status, _, msg) = s.err(&root, "STORAGE FLUSH TABLE app.t").await;
    assert_eq!(status, 500, "{msg}");
    assert_eq!(segments(&dir).len(), 1);
    let s = s.restart().await;
    let root = s.root_token().await;
    let before = ids_and_names(&s, &root, all).await;
    assert_eq!(before.len(), 3);
    s.ok(&root, "INSERT INTO app.t VALUES (4, 'd')").await;
    s.ok(&root, "STORAGE FLUSH TABLE app.t").await;
    assert_eq!(
        segments(&dir).len(),
        1,
        "the stray is gone, one real segment"
    );
    assert_eq!(ids_and_names(&s, &root, all).await.len(), 4);

    // Manifest committed, hot versions not yet deleted: both tiers hold them, reads show each
    // once, and the next flush leaves them once.
    s.ok(
        &root,
        "UPDATE app.t SET v = 'A' WHERE id = 1; DELETE FROM app.t WHERE id = 2",
    )
    .await;
    s.faults().fail_flush_at(FlushStep::ManifestCommitted);
    s.err(&root, "STORAGE FLUSH TABLE app.t").await;
    let s = s.restart().await;
    let root = s.root_token().await;
    let expected = vec![
        ("1".to_string(), json!("A")),
        ("3".to_string(), json!("c")),
        ("4".to_string(), json!("d")),
    ];
    assert_eq!(ids_and_names(&s, &root, all).await, expected);
    s.ok(&root, "STORAGE FLUSH TABLE app.t").await;
    assert_eq!(ids_and_names(&s, &root, all).await, expected);
    let s = s.restart().await;
    let root = s.root_token().await;
    assert_eq!(ids_and_names(&s, &root, all).await, expected);
    let n = s.ok(&root, "SELECT COUNT(*) FROM app.t").await;
    assert_eq!(rows(&n), vec![vec![json!("3")]]);
}

/// Random inserts, updates, deletes, flushes and compactions by two users; after every step each user's
/// SELECT (scan and point lookups) equals an in-memory model.
#[tokio::test]
async fn model_random_writes_and_flushes_match_a_model() {
    use crate::support::Rng;
    use std::collections::BTreeMap;
    let s = TestServer::start().await;
    let root = s.root_token().await;
    s.ok(
        &root,
        "CREATE NAMESPACE app; CREATE USER TABLE app.m (id BIGINT PRIMARY KEY, v BIGINT)",
    )
    .await;
    let users = s.users_with_tokens(&root, &["u1", "u2"]).await;
    let mut model: Vec<BTreeMap<i64, i64>> = vec![BTreeMap::new(), BTreeMap::new()];
    let mut rng = Rng(0x5eed_c01d);
    for step in 0..300 {
        let u = rng.next(2) as usize;
        let id = rng.next(20) as i64;
        let v = rng.next(1000) as i64;
        match rng.next(10) {
            0..=3 => {
                let (status, _) = s
                    .sql(&users[u], &format!("INSERT INTO app.m VALUES ({id}, {v})"))
                    .await;
                assert_eq!(
                    status == 200,
                    !model[u].contains_key(&id),
                    "step {step}: insert {id}"
                );
                model[u].entry(id).or_insert(v);
            }
            4..=5 => {
                s.ok(
                    &users[u],
                    &format!("UPDATE app.m SET v = {v} WHERE id = {id}"),
                )
                .await;
                if let Some(x) = model[u].get_mut(&id) {
                    *x = v;
                }
            }
            6..=7 => {
                s.ok(&users[u], &format!("DELETE FROM app.m WHERE id = {id}"))
                    .await;
                model[u].remove(&id);
            }
            8 => {
                s.ok(&root, "STORAGE FLUSH TABLE app.m").await;
            }
            _ => {
                s.ok(&root, "STORAGE COMPACT TABLE app.m").await;
            }
        }
        if step % 25 == 24 {
            for (u, token) in users.iter().enumerate() {
                let got: Vec<(i64, i64)> =
                    rows(&s.ok(token, "SELECT id, v FROM app.m ORDER BY id").await)
                        .iter()
                        .map(|r| {
                            (
                                r[0].as_str().unwrap().parse().unwrap(),
                                r[1].as_str().unwrap().parse().unwrap(),
                            )
                        })
                        .collect();
                let want: Vec<(i64, i64)> = model[u].iter().map(|(k, v)| (*k, *v)).collect();
                assert_eq!(got, want, "step {step}, user {u}");
                let one = s
                    .ok(token, &format!("SELECT v FROM app.m WHERE id = {id}"))
                    .await;
                assert_eq!(rows(&one).len(), usize::from(model[u].contains_key(&id)));
            }
        }
    }
}

/// Writers keep inserting and updating while flushes run: nothing written during a flush is
/// lost when the flush removes what it wrote out.
#[tokio::test]
async fn writes_during_flushes_are_kept() {
    let s = std::sync::Arc::new(TestServer::start().await);
    let root = s.root_token().await;
    s.ok(
        &root,
        "CREATE NAMESPACE app; CREATE SHARED TABLE app.w (id BIGINT PRIMARY KEY, v BIGINT)",
    )
    .await;
    let writer = {
        let (s, root) = (s.clone(), root.clone());
        tokio::spawn(async move {
            for i in 0..400i64 {
                s.ok(&root, &format!("INSERT INTO app.w VALUES ({i}, 0)"))
                    .await;
                if i % 3 == 0 {
                    s.ok(
                        &root,
                        &format!("UPDATE app.w SET v = 1 WHERE id = {}", i / 2),
                    )
                    .await;
                }
            }
        })
    };
    while !writer.is_finished() {
        s.ok(&root, "STORAGE FLUSH TABLE app.w").await;
    }
    writer.await.unwrap();
    s.ok(&root, "STORAGE FLUSH TABLE app.w").await;
    let n = s.ok(&root, "SELECT COUNT(*), SUM(v) FROM app.w").await;
    let expected_updates = (0..400i64)
        .filter(|i| i % 3 == 0)
        .map(|i| i / 2)
        .collect::<std::collections::BTreeSet<_>>();
    assert_eq!(
        rows(&n),
        vec![vec![
            json!("400"),
            json!(expected_updates.len().to_string())
        ]]
    );
}

#[tokio::test]
async fn compaction_merges_segments_and_drops_what_is_superseded() {
    let s = TestServer::start_with(|c| c.engine.storage.tombstone_retention_secs = 0).await;
    let root = s.root_token().await;
    s.ok(
        &root,
        "CREATE NAMESPACE app; CREATE SHARED TABLE app.c (id BIGINT PRIMARY KEY, v TEXT)",
    )
    .await;
    s.ok(
        &root,
        "INSERT INTO app.c VALUES (1, 'a'), (2, 'b'), (3, 'c')",
    )
    .await;
    s.ok(&root, "STORAGE FLUSH TABLE app.c").await;
    s.ok(&root, "UPDATE app.c SET v = 'B' WHERE id = 2; DELETE FROM app.c WHERE id = 3; INSERT INTO app.c VALUES (4, 'd')").await;
    s.ok(&root, "STORAGE FLUSH TABLE app.c").await;
    let dir = s.dir.path().join("storage/app/c");
    assert_eq!(segments(&dir).len(), 2);
    let all = "SELECT id, v FROM app.c ORDER BY id";
    let expected = vec![
        ("1".to_string(), json!("a")),
        ("2".to_string(), json!("B")),
        ("4".to_string(), json!("d")),
    ];
    assert_eq!(ids_and_names(&s, &root, all).await, expected);

    compact(&s, &root, "app.c", "2 segment(s) into 1").await;
    let files = segments(&dir);
    assert_eq!(files.len(), 1, "old segments are deleted");
    let ctx = SessionContext::new();
    let n = ctx
        .read_parquet(files[0].to_str().unwrap(), ParquetReadOptions::default())
        .await
        .unwrap()
        .count()
        .await
        .unwrap();
    assert_eq!(n, 3, "superseded versions and tombstones are gone");
    assert_eq!(ids_and_names(&s, &root, all).await, expected);
    let s = s.restart().await;
    let root = s.root_token().await;
    assert_eq!(ids_and_names(&s, &root, all).await, expected);
    let (_, _, msg) = s.err(&root, "INSERT INTO app.c VALUES (2, 'dup')").await;
    assert!(msg.contains("Primary key violation"), "{msg}");
    s.ok(&root, "INSERT INTO app.c VALUES (3, 'c again')").await;
    let r = s.ok(&root, "STORAGE COMPACT ALL").await;
    assert!(
        r["message"].as_str().unwrap().starts_with("Compacted"),
        "{r}"
    );
}

/// Runs `STORAGE COMPACT TABLE table` and checks its message names `counts`.
async fn compact(s: &TestServer, token: &str, table: &str, counts: &str) {
    let r = s.ok(token, &format!("STORAGE COMPACT TABLE {table}")).await;
    let message = r["message"].as_str().unwrap_or_default();
    assert!(message.contains(counts), "{r}");
}

/// Waits (up to 10 s) until `dir` holds `n` segments.
pub(crate) async fn wait_for_segments(dir: &Path, n: usize) {
    wait_until_segments(dir, |have| have >= n).await;
}

/// Waits (up to 10 s) until the number of segments in `dir` satisfies `ok`.
async fn wait_until_segments(dir: &Path, ok: impl Fn(usize) -> bool) {
    for _ in 0..200 {
        if ok(segments(dir).len()) {
            return;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    panic!("{} still holds {:?}", dir.display(), segments(dir));
}

#[tokio::test]
async fn flush_policies_flush_by_rows_by_interval_and_by_default() {
    let s = TestServer::start_with(|c| {
        c.engine.storage.flush_check_interval_ms = 20;
        c.engine.storage.default_flush_policy = "rows:3".into();
    })
    .await;
    let root = s.root_token().await;
    s.ok(
        &root,
        "CREATE NAMESPACE app; \
         CREATE SHARED TABLE app.by_rows (id BIGINT PRIMARY KEY) WITH (FLUSH_POLICY = 'rows:5'); \
         CREATE SHARED TABLE app.by_time (id BIGINT PRIMARY KEY) WITH (FLUSH_POLICY = 'interval:1'); \
         CREATE SHARED TABLE app.by_default (id BIGINT PRIMARY KEY)",
    )
    .await;
    let base = s.dir.path().join("storage/app");
    s.ok(&root, "INSERT INTO app.by_rows VALUES (1), (2), (3), (4)")
        .await;
    s.ok(&root, "INSERT INTO app.by_time VALUES (1)").await;
    s.ok(&root, "INSERT INTO app.by_default VALUES (1), (2), (3)")
        .await;
    wait_for_segments(&base.join("by_time"), 1).await;
    wait_for_segments(&base.join("by_default"), 1).await;
    assert!(
        segments(&base.join("by_rows")).is_empty(),
        "4 rows do not reach rows:5"
    );
    s.ok(&root, "INSERT INTO app.by_rows VALUES (5)").await;
    wait_for_segments(&base.join("by_rows"), 1).await;
    let n = s.ok(&root, "SELECT COUNT(*) FROM app.by_rows").await;
    assert_eq!(rows(&n), vec![vec![json!("5")]]);

    let (_, _, msg) = s
        .err(
            &root,
            "CREATE SHARED TABLE app.bad (id BIGINT PRIMARY KEY) WITH (FLUSH_POLICY = 'rows:0')",
        )
        .await;
    assert!(msg.contains("FLUSH_POLICY"), "{msg}");
}

#[tokio::test]
async fn flushes_and_compactions_are_recorded_in_system_jobs_and_can_be_killed() {
    let s = std::sync::Arc::new(
        TestServer::start_with(|c| {
            c.engine.storage.flush_check_interval_ms = 20;
        })
        .await,
    );
    let root = s.root_token().await;
    s.ok(&root, "CREATE NAMESPACE app; CREATE SHARED TABLE app.j (id BIGINT PRIMARY KEY) WITH (FLUSH_POLICY = 'rows:2')").await;
    s.ok(&root, "INSERT INTO app.j VALUES (1), (2), (3)").await;
    wait_for_segments(&s.dir.path().join("storage/app/j"), 1).await;
    let r = s.ok(&root, "STORAGE COMPACT TABLE app.j").await;
    assert!(r["message"].as_str().unwrap().contains(". Job ID: "), "{r}");
    let jobs = rows(
        &s.ok(
            &root,
            "SELECT job_type, target, status, trigger, created_by, rows, finished_at IS NOT NULL \
             FROM system.jobs WHERE target = 'app.j' ORDER BY job_id",
        )
        .await,
    );
    assert_eq!(
        jobs,
        vec![
            vec![
                json!("flush"),
                json!("app.j"),
                json!("completed"),
                json!("policy"),
                json!("system"),
                json!("3"),
                json!(true)
            ],
            vec![
                json!("compact"),
                json!("app.j"),
                json!("completed"),
                json!("manual"),
                json!("root"),
                json!("0"),
                json!(true)
            ],
        ]
    );
    let (_, _, msg) = s.err(&root, "KILL JOB 'no-such-job'").await;
    assert!(msg.contains("no-such-job"), "{msg}");
    let users = s.users_with_tokens(&root, &["pat"]).await;
    let (status, _, _) = s.err(&users[0], "KILL JOB 'x'").await;
    assert_eq!(status, 403);

    // A flush of a USER table with many users stops between users when killed.
    s.ok(&root, "CREATE USER TABLE app.many (id BIGINT PRIMARY KEY)")
        .await;
    let names: Vec<String> = (0..300).map(|i| format!("m{i:03}")).collect();
    for n in &names {
        s.ok(
            &root,
            &format!("CREATE USER {n} WITH PASSWORD 'Many-pass-123' ROLE 'user'"),
        )
        .await;
        s.ok(
            &root,
            &format!("EXECUTE AS USER '{n}' (INSERT INTO app.many VALUES (1))"),
        )
        .await;
    }
    let flush = {
        let (s, root) = (s.clone(), root.clone());
        tokio::spawn(async move { s.ok(&root, "STORAGE FLUSH TABLE app.many").await })
    };
    let job_id = loop {
        let r = s
            .ok(
                &root,
                "SELECT job_id FROM system.jobs WHERE target = 'app.many' AND status = 'running'",
            )
            .await;
        if let Some(row) = rows(&r).first() {
            break row[0].as_str().unwrap().to_string();
        }
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    };
    s.ok(&root, &format!("KILL JOB '{job_id}'")).await;
    let reply = flush.await.unwrap();
    assert!(
        reply["message"].as_str().unwrap().contains("cancelled"),
        "{reply}"
    );
    let status = s
        .ok(
            &root,
            &format!("SELECT status FROM system.jobs WHERE job_id = '{job_id}'"),
        )
        .await;
    assert_eq!(rows(&status), vec![vec![json!("cancelled")]]);
    let flushed = segments(&s.dir.path().join("storage/app/many")).len();
    assert!(
        flushed < names.len(),
        "{flushed} of {} users flushed",
        names.len()
    );
    // Every row is still readable, flushed or not.
    let n = s
        .ok(
            &root,
            "EXECUTE AS USER 'm299' (SELECT COUNT(*) FROM app.many)",
        )
        .await;
    assert_eq!(rows(&n), vec![vec![json!("1")]]);
}

/// Files a flush racing a DROP TABLE left behind (simulated by putting them back) never show
/// up in a new table of the same name, and its first flush removes them.
#[tokio::test]
async fn files_of_a_dropped_incarnation_never_leak_into_a_new_table() {
    let s = TestServer::start().await;
    let root = s.root_token().await;
    s.ok(&root, "CREATE NAMESPACE app; CREATE SHARED TABLE app.r (id BIGINT PRIMARY KEY, v TEXT); INSERT INTO app.r VALUES (1, 'old')").await;
    s.ok(&root, "STORAGE FLUSH TABLE app.r").await;
    let dir = s.dir.path().join("storage/app/r");
    let saved: Vec<(PathBuf, Vec<u8>)> = std::fs::read_dir(&dir)
        .unwrap()
        .flatten()
        .map(|e| (e.path(), std::fs::read(e.path()).unwrap()))
        .collect();
    s.ok(&root, "DROP TABLE app.r").await;
    assert!(segments(&dir).is_empty());
    std::fs::create_dir_all(&dir).unwrap();
    for (path, bytes) in &saved {
        std::fs::write(path, bytes).unwrap();
    }
    s.ok(
        &root,
        "CREATE SHARED TABLE app.r (id BIGINT PRIMARY KEY, v TEXT)",
    )
    .await;
    let all = "SELECT id, v FROM app.r ORDER BY id";
    assert!(ids_and_names(&s, &root, all).await.is_empty());
    s.ok(&root, "INSERT INTO app.r VALUES (1, 'new')").await;
    s.ok(&root, "STORAGE FLUSH TABLE app.r").await;
    assert_eq!(segments(&dir).len(), 1, "the old segment was removed");
    let s = s.restart().await;
    let root = s.root_token().await;
    assert_eq!(
        ids_and_names(&s, &root, all).await,
        vec![("1".to_string(), json!("new"))]
    );
}

#[tokio::test]
async fn tables_flush_to_the_storage_they_name() {
    let s = TestServer::start().await;
    let root = s.root_token().await;
    let archive = s.dir.path().join("elsewhere");
    s.ok(
        &root,
        &format!(
            "CREATE STORAGE archive TYPE 'filesystem' NAME 'Archive disk' PATH '{}' \
             SHARED_TABLES_TEMPLATE 'shared/{{namespace}}-{{tableName}}' \
             USER_TABLES_TEMPLATE 'users/{{namespace}}-{{tableName}}/{{userId}}'",
            archive.display()
        ),
    )
    .await;
    let shown = s.ok(&root, "SHOW STORAGES").await;
    let listed = rows(&shown);
    assert_eq!(listed.len(), 2, "{listed:?}");
    assert_eq!(listed[0][0], "local");
    // Upstream's columns, as system.storages has them.
    let columns: Vec<&str> = shown["schema"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["name"].as_str().unwrap())
        .collect();
    assert_eq!(
        columns[..4],
        ["storage_id", "storage_name", "description", "storage_type"]
    );
    assert!(columns.contains(&"created_at"), "{columns:?}");
    // EXTENDED adds the volume's size.
    let extended = rows(&s.ok(&root, "STORAGE CHECK archive EXTENDED").await);
    let bytes = |i: usize| extended[0][i].as_str().unwrap().parse::<u64>().unwrap();
    assert!(bytes(7) >= bytes(8) && bytes(8) > 0, "{extended:?}");
    let check = rows(&s.ok(&root, "STORAGE CHECK archive").await);
    assert_eq!(
        &check[0][..6],
        &[
            json!("archive"),
            json!("healthy"),
            json!(true),
            json!(true),
            json!(true),
            json!(true)
        ]
    );

    s.ok(&root, "CREATE NAMESPACE app; CREATE SHARED TABLE app.s (id BIGINT PRIMARY KEY) WITH (STORAGE_ID = 'archive'); CREATE USER TABLE app.u (id BIGINT PRIMARY KEY) WITH (STORAGE_ID = 'archive')").await;
    // Placeholders inside folder names, as upstream writes them.
    s.ok(
        &root,
        &format!(
            "CREATE STORAGE named TYPE 'filesystem' PATH '{}' \
             SHARED_TABLES_TEMPLATE 'ns_{{namespace}}/tbl_{{tableName}}' \
             USER_TABLES_TEMPLATE 'ns_{{namespace}}/tbl_{{tableName}}/usr_{{userId}}.d'; \
             CREATE USER TABLE app.n (id BIGINT PRIMARY KEY, v TEXT) WITH (STORAGE_ID = 'named')",
            s.dir.path().join("named").display()
        ),
    )
    .await;
    let pair = s.users_with_tokens(&root, &["nia", "noa"]).await;
    for (token, v) in pair.iter().zip(["of-nia", "of-noa"]) {
        s.ok(
            token,
            &format!("INSERT INTO app.n VALUES (1, '{v}'), (2, '{v}')"),
        )
        .await;
        s.ok(&root, "STORAGE FLUSH TABLE app.n").await;
        s.ok(token, &format!("INSERT INTO app.n VALUES (3, '{v}')"))
            .await;
        s.ok(&root, "STORAGE FLUSH TABLE app.n").await;
    }
    let base = s.dir.path().join("named/ns_app/tbl_n");
    assert_eq!(segments(&base.join("usr_nia.d")).len(), 2);
    // Compaction finds each user's folder through the template.
    s.ok(&root, "STORAGE COMPACT TABLE app.n").await;
    for (token, user, v) in [(&pair[0], "nia", "of-nia"), (&pair[1], "noa", "of-noa")] {
        assert_eq!(
            segments(&base.join(format!("usr_{user}.d"))).len(),
            1,
            "{user}"
        );
        let r = s
            .ok(token, "SELECT v, count(*) FROM app.n GROUP BY v")
            .await;
        assert_eq!(rows(&r), vec![vec![json!(v), json!("3")]]);
    }

    let users = s.users_with_tokens(&root, &["ann"]).await;
    s.ok(&root, "INSERT INTO app.s VALUES (1), (2)").await;
    s.ok(&users[0], "INSERT INTO app.u VALUES (7)").await;
    s.ok(&root, "STORAGE FLUSH ALL IN app").await;
    assert_eq!(segments(&archive.join("shared/app-s")).len(), 1);
    assert_eq!(segments(&archive.join("users/app-u/ann")).len(), 1);
    assert!(segments(&s.dir.path().join("storage")).is_empty());
    let n = s.ok(&root, "SELECT COUNT(*) FROM app.s").await;
    assert_eq!(rows(&n), vec![vec![json!("2")]]);
    let n = s.ok(&users[0], "SELECT id FROM app.u").await;
    assert_eq!(rows(&n), vec![vec![json!("7")]]);

    // Templates that map two tables to one folder: the second table is refused (its flush
    // would have replaced the first one's manifest).
    s.ok(
        &root,
        &format!(
            "CREATE STORAGE flat TYPE 'filesystem' PATH '{}' \
             SHARED_TABLES_TEMPLATE '{{namespace}}_{{tableName}}' \
             USER_TABLES_TEMPLATE 'u/{{namespace}}_{{tableName}}/{{userId}}'; \
             CREATE NAMESPACE x_y; CREATE NAMESPACE x; \
             CREATE SHARED TABLE x_y.z (id BIGINT PRIMARY KEY) WITH (STORAGE_ID = 'flat'); \
             CREATE USER TABLE x_y.w (id BIGINT PRIMARY KEY) WITH (STORAGE_ID = 'flat')",
            s.dir.path().join("flat").display()
        ),
    )
    .await;
    for sql in [
        "CREATE SHARED TABLE x.y_z (id BIGINT PRIMARY KEY) WITH (STORAGE_ID = 'flat')",
        "CREATE USER TABLE x.y_w (id BIGINT PRIMARY KEY) WITH (STORAGE_ID = 'flat')",
    ] {
        let (_, _, msg) = s.err(&root, sql).await;
        assert!(msg.contains("where table 'x_y."), "{sql}: {msg}");
    }
    s.ok(
        &root,
        "CREATE SHARED TABLE x.y_z (id BIGINT PRIMARY KEY); \
         CREATE SHARED TABLE x.other (id BIGINT PRIMARY KEY) WITH (STORAGE_ID = 'flat')",
    )
    .await;

    let (_, _, msg) = s.err(&root, "DROP STORAGE archive").await;
    assert!(msg.contains("app.s"), "in use: {msg}");
    for (sql, needle) in [
        ("CREATE STORAGE g1 TYPE 'gcs' BUCKET 'b'", "not supported"),
        (
            "CREATE STORAGE t1 TYPE 'filesystem' PATH '/tmp/x' USER_TABLES_TEMPLATE '{namespace}/{userId}/{tableName}'",
            "USER_TABLES_TEMPLATE",
        ),
        ("CREATE STORAGE t2 TYPE 'filesystem'", "PATH"),
        (
            "CREATE STORAGE t3 TYPE 'filesystem' PATH '/proc/kalamdb-no'",
            "failed its check",
        ),
        (
            "CREATE STORAGE archive TYPE 'filesystem' PATH '/tmp/x'",
            "archive",
        ),
        ("DROP STORAGE local", "local"),
    ] {
        let (_, _, msg) = s.err(&root, sql).await;
        assert!(msg.contains(needle), "{sql}: {msg}");
    }
    assert_eq!(
        rows(&s.ok(&root, "SHOW STORAGES").await).len(),
        4,
        "failed creations leave nothing (local, archive, named, flat are left)"
    );
    s.ok(&root, "DROP TABLE app.s; DROP TABLE app.u").await;
    s.ok(&root, "DROP STORAGE archive").await;
    s.ok(&root, "DROP STORAGE IF EXISTS archive").await;
}

#[tokio::test]
async fn filtered_scans_skip_segments_by_column_statistics_without_uncovering_old_versions() {
    let s = TestServer::start().await;
    let root = s.root_token().await;
    s.ok(
        &root,
        "CREATE NAMESPACE app; CREATE SHARED TABLE app.m (id BIGINT PRIMARY KEY, score DOUBLE)",
    )
    .await;
    let values = |ids: std::ops::RangeInclusive<i64>, add: i64| {
        ids.map(|i| format!("({i}, {})", i + add))
            .collect::<Vec<_>>()
            .join(", ")
    };
    // A: ids 1-10, score = id. B: ids 11-20, score 111-120. C: id 5 now 500.
    s.ok(
        &root,
        &format!("INSERT INTO app.m VALUES {}", values(1..=10, 0)),
    )
    .await;
    s.ok(&root, "STORAGE FLUSH TABLE app.m").await;
    s.ok(
        &root,
        &format!("INSERT INTO app.m VALUES {}", values(11..=20, 100)),
    )
    .await;
    s.ok(&root, "STORAGE FLUSH TABLE app.m").await;
    s.ok(&root, "UPDATE app.m SET score = 500 WHERE id = 5")
        .await;
    s.ok(&root, "STORAGE FLUSH TABLE app.m").await;
    let dir = s.dir.path().join("storage/app/m");
    let files = segments(&dir);
    assert_eq!(files.len(), 3);
    let manifest: Value =
        serde_json::from_slice(&std::fs::read(dir.join("manifest.json")).unwrap()).unwrap();
    // Statistics are kept by stable column id (score is column 2).
    assert_eq!(manifest["segments"][1]["columns"]["2"]["min"], json!(111.0));

    let high = "SELECT id FROM app.m WHERE score > 400 ORDER BY id";
    let low = "SELECT id FROM app.m WHERE score <= 5 ORDER BY id";
    let ids = |r: Value| -> Vec<Value> { rows(&r).into_iter().map(|r| r[0].clone()).collect() };
    assert_eq!(ids(s.ok(&root, high).await), [json!("5")]);
    // C cannot match `score <= 5` but holds a newer version of A's key 5: it is read.
    let expected = [json!("1"), json!("2"), json!("3"), json!("4")];
    assert_eq!(ids(s.ok(&root, low).await), expected);

    // Proof that B is not read by either query: without its file both still answer (after a
    // restart, so nothing is cached), while a scan that needs it fails.
    let s = s.restart().await;
    let root = s.root_token().await;
    std::fs::remove_file(&files[1]).unwrap();
    assert_eq!(ids(s.ok(&root, high).await), [json!("5")]);
    assert_eq!(ids(s.ok(&root, low).await), expected);
    let (status, _, _) = s.err(&root, "SELECT COUNT(*) FROM app.m").await;
    assert!(status >= 400);
}

#[tokio::test]
async fn compaction_keeps_young_tombstones_for_live_resumes() {
    let s = TestServer::start().await; // default retention: one day
    let root = s.root_token().await;
    s.ok(
        &root,
        "CREATE NAMESPACE app; CREATE SHARED TABLE app.t (id BIGINT PRIMARY KEY, v TEXT); \
         INSERT INTO app.t VALUES (1, 'a'), (2, 'b')",
    )
    .await;
    s.ok(&root, "STORAGE FLUSH TABLE app.t").await;
    s.ok(&root, "DELETE FROM app.t WHERE id = 2").await;
    s.ok(&root, "STORAGE FLUSH TABLE app.t").await;
    compact(&s, &root, "app.t", "2 segment(s) into 1").await;
    let files = segments(&s.dir.path().join("storage/app/t"));
    assert_eq!(files.len(), 1);
    let batches = SessionContext::new()
        .read_parquet(files[0].to_str().unwrap(), ParquetReadOptions::default())
        .await
        .unwrap()
        .collect()
        .await
        .unwrap();
    let deleted: Vec<bool> = batches
        .iter()
        .flat_map(|b| {
            let col = b.column_by_name("_deleted").unwrap();
            let col = col
                .as_any()
                .downcast_ref::<datafusion::arrow::array::BooleanArray>()
                .unwrap();
            col.iter().map(|v| v.unwrap()).collect::<Vec<_>>()
        })
        .collect();
    assert_eq!(deleted, [false, true], "the young tombstone of 2 is kept");
    let all = rows(&s.ok(&root, "SELECT id FROM app.t").await);
    assert_eq!(all, vec![vec![json!("1")]]);
    // A second compaction has nothing to drop and leaves the segment alone.
    compact(&s, &root, "app.t", "1 segment(s) into 1").await;
}

#[tokio::test]
async fn the_audit_log_flushes_to_parquet_and_still_reads_as_one_table() {
    let s = TestServer::start().await;
    let root = s.root_token().await;
    s.ok(&root, "CREATE NAMESPACE a1; CREATE NAMESPACE a2")
        .await;
    let users = s.users_with_tokens(&root, &["ann"]).await;
    let ids_sql = "SELECT audit_id FROM system.audit_log ORDER BY audit_id";
    let before = rows(&s.ok(&root, ids_sql).await);
    assert!(before.len() >= 3, "{before:?}");

    let r = s.ok(&root, "STORAGE FLUSH TABLE system.audit_log").await;
    let message = r["message"].as_str().unwrap();
    assert!(
        message.contains(&format!("Flushed {} row(s)", before.len())),
        "{r}"
    );
    let dir = s.dir.path().join("storage/system/audit_log");
    assert_eq!(segments(&dir).len(), 1);
    let after = rows(&s.ok(&root, ids_sql).await);
    assert_eq!(
        &after[..before.len()],
        &before[..],
        "flushed entries still read"
    );

    s.ok(&root, "CREATE NAMESPACE a3").await;
    s.ok(&root, "STORAGE FLUSH TABLE system.audit_log").await;
    assert_eq!(segments(&dir).len(), 2);
    let s = s.restart().await;
    let root = s.root_token().await;
    let all = rows(&s.ok(&root, ids_sql).await);
    let distinct: std::collections::BTreeSet<String> =
        all.iter().map(|r| r[0].to_string()).collect();
    assert_eq!(distinct.len(), all.len(), "no entry twice");
    assert_eq!(&all[..before.len()], &before[..]);
    let created = s
        .ok(
            &root,
            "SELECT COUNT(*) FROM system.audit_log WHERE action = 'CREATE_NAMESPACE'",
        )
        .await;
    assert_eq!(rows(&created), vec![vec![json!("3")]]);

    let (_, _, msg) = s.err(&root, "STORAGE FLUSH TABLE system.users").await;
    assert!(msg.contains("not flushed"), "{msg}");
    let ann = s.token("ann", "ann-pass-123").await;
    let (status, _, _) = s.err(&ann, "STORAGE FLUSH TABLE system.audit_log").await;
    assert!(status == 403 || status == 400, "{status}");
    drop(users);
}

#[tokio::test]
async fn the_compaction_policy_merges_new_segments_and_keeps_deletes_of_older_ones() {
    let s = TestServer::start_with(|c| c.engine.storage.compaction_trigger_segments = 3).await;
    let root = s.root_token().await;
    s.ok(
        &root,
        "CREATE NAMESPACE app; CREATE SHARED TABLE app.p (id BIGINT PRIMARY KEY, v TEXT)",
    )
    .await;
    let dir = s.dir.path().join("storage/app/p");
    for sql in [
        "INSERT INTO app.p VALUES (1, 'a'), (2, 'b'), (3, 'c'), (4, 'd'), (5, 'e')",
        "DELETE FROM app.p WHERE id = 2",
        "INSERT INTO app.p VALUES (6, 'f')",
    ] {
        s.ok(&root, sql).await;
        s.ok(&root, "STORAGE FLUSH TABLE app.p").await;
    }
    assert_eq!(segments(&dir).len(), 3, "at the trigger: nothing merged");
    s.ok(&root, "UPDATE app.p SET v = 'C' WHERE id = 3").await;
    s.ok(&root, "STORAGE FLUSH TABLE app.p").await;
    // The three small newest segments merged; the first (5 rows) is bigger than them together.
    assert_eq!(segments(&dir).len(), 2);
    let expected = vec![
        ("1".to_string(), json!("a")),
        ("3".to_string(), json!("C")),
        ("4".to_string(), json!("d")),
        ("5".to_string(), json!("e")),
        ("6".to_string(), json!("f")),
    ];
    let all = "SELECT id, v FROM app.p ORDER BY id";
    assert_eq!(
        ids_and_names(&s, &root, all).await,
        expected,
        "2 stays deleted"
    );
    let s = s.restart().await;
    let root = s.root_token().await;
    assert_eq!(ids_and_names(&s, &root, all).await, expected);
}

#[tokio::test]
async fn a_drop_interrupted_after_the_definition_went_is_finished_at_the_next_start() {
    let s = TestServer::start().await;
    let root = s.root_token().await;
    s.ok(
        &root,
        "CREATE NAMESPACE app; CREATE SHARED TABLE app.gone (id BIGINT PRIMARY KEY); \
         INSERT INTO app.gone VALUES (1), (2)",
    )
    .await;
    s.ok(&root, "STORAGE FLUSH TABLE app.gone").await;
    s.ok(&root, "INSERT INTO app.gone VALUES (3)").await;
    let dir = s.dir.path().join("storage/app/gone");
    assert_eq!(segments(&dir).len(), 1);
    let partitions = |s: &TestServer| -> Vec<String> {
        let app = &s.server.as_ref().unwrap().app;
        app.backend()
            .list_partitions()
            .into_iter()
            .filter(|p| p.starts_with("tbl/app/gone/"))
            .collect()
    };
    assert_eq!(partitions(&s).len(), 1);

    s.faults().fail_next_drop_cleanup();
    s.err(&root, "DROP TABLE app.gone").await;
    assert_eq!(segments(&dir).len(), 1, "the stop left the files");
    assert_eq!(partitions(&s).len(), 1, "and the hot rows");
    s.err(&root, "SELECT * FROM app.gone").await;

    let s = s.restart().await;
    let root = s.root_token().await;
    assert!(segments(&dir).is_empty(), "files removed at start");
    assert!(partitions(&s).is_empty(), "hot partition removed at start");
    let jobs = rows(
        &s.ok(
            &root,
            "SELECT status, trigger FROM system.jobs WHERE job_type = 'drop_table' ORDER BY job_id",
        )
        .await,
    );
    assert_eq!(
        jobs,
        vec![
            vec![json!("failed"), json!("manual")],
            vec![json!("completed"), json!("restart")]
        ]
    );
    s.ok(
        &root,
        "CREATE SHARED TABLE app.gone (id BIGINT PRIMARY KEY)",
    )
    .await;
    let n = s.ok(&root, "SELECT COUNT(*) FROM app.gone").await;
    assert_eq!(rows(&n), vec![vec![json!("0")]]);
}

#[tokio::test]
async fn compacted_away_segments_stay_readable_for_a_grace_period() {
    let s = TestServer::start_with(|c| c.engine.storage.superseded_file_grace_ms = 400).await;
    let root = s.root_token().await;
    s.ok(
        &root,
        "CREATE NAMESPACE app; CREATE SHARED TABLE app.g (id BIGINT PRIMARY KEY)",
    )
    .await;
    for id in [1, 2] {
        s.ok(&root, &format!("INSERT INTO app.g VALUES ({id})"))
            .await;
        s.ok(&root, "STORAGE FLUSH TABLE app.g").await;
    }
    let dir = s.dir.path().join("storage/app/g");
    compact(&s, &root, "app.g", "2 segment(s) into 1").await;
    assert_eq!(
        segments(&dir).len(),
        3,
        "the merged-away files wait out the grace period"
    );
    let n = s.ok(&root, "SELECT COUNT(*) FROM app.g").await;
    assert_eq!(rows(&n), vec![vec![json!("2")]]);
    wait_until_segments(&dir, |have| have <= 1).await;
    let n = s.ok(&root, "SELECT COUNT(*) FROM app.g").await;
    assert_eq!(rows(&n), vec![vec![json!("2")]]);
}

/// Reads and flushes that race a DROP TABLE answer as if the table was already gone (400
/// "does not exist") or as if it was still there, never with a server error.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn reads_and_flushes_racing_a_drop_never_fail_with_500() {
    use std::sync::atomic::{AtomicBool, Ordering};
    let s = TestServer::start().await;
    let root = s.root_token().await;
    s.ok(&root, "CREATE NAMESPACE rr").await;
    let done = AtomicBool::new(false);
    let churn = async {
        for _ in 0..40 {
            s.ok(
                &root,
                "CREATE SHARED TABLE rr.t (id BIGINT PRIMARY KEY, v TEXT); \
                 INSERT INTO rr.t VALUES (1, 'a'), (2, 'b')",
            )
            .await;
            s.ok(&root, "DROP TABLE rr.t").await;
        }
        done.store(true, Ordering::SeqCst);
    };
    let probe = async {
        let mut answered = 0;
        while !done.load(Ordering::SeqCst) {
            for sql in [
                "SELECT COUNT(*) FROM rr.t",
                "STORAGE FLUSH TABLE rr.t",
                "INSERT INTO rr.t VALUES (3, 'c')",
            ] {
                let (status, body) = s.sql(&root, sql).await;
                assert!(status == 200 || status == 400, "{sql}: {status} {body}");
                answered += 1;
            }
        }
        answered
    };
    let ((), answered) = tokio::join!(churn, probe);
    assert!(answered > 0);
}
