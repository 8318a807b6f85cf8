//! `kill -9` during a stream of inserts, of transactions, and of changes feeding a topic: every
//! insert or COMMIT that got a success reply is there after restart, no transaction is there in
//! part, and the topic holds exactly the committed changes. Runs the real
//! `kalamdb-server` binary.

use crate::support::{ROOT_PASSWORD, login_token, post_sql, spawn_binary};
use std::process::{Child, Command};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

fn spawn(dir: &std::path::Path) -> (Child, String) {
    spawn_binary(dir, &[])
}

/// Starts the server in `dir` and runs `setup` (which must succeed); then two writers send
/// `statement(id)` for ids `w * 1_000_000 + i` (writer `w`, i = 0, 1, …) until the server is
/// killed with SIGKILL after 1.5 s. Returns the ids whose request got a 200 (a 409 goes on to
/// the next id, anything else stops the writer) and the server restarted on the same `dir`,
/// with a root token.
async fn write_until_killed(
    dir: &std::path::Path,
    setup: &str,
    statement: fn(i64) -> String,
) -> (Vec<i64>, Child, String, String) {
    let (mut child, base) = spawn(dir);
    let http = reqwest::Client::new();
    let t = login_token(&http, &base, "root", ROOT_PASSWORD).await;
    let (status, body) = post_sql(&http, &base, &t, setup).await;
    assert_eq!(status, 200, "{body}");
    let stop = Arc::new(AtomicBool::new(false));
    let mut writers = Vec::new();
    for w in 0..2i64 {
        let (stop, http, base, t) = (Arc::clone(&stop), http.clone(), base.clone(), t.clone());
        writers.push(tokio::spawn(async move {
            let mut acked = Vec::new();
            let mut i = 0i64;
            while !stop.load(Ordering::Relaxed) {
                let id = w * 1_000_000 + i;
                match post_sql(&http, &base, &t, &statement(id)).await.0 {
                    200 => acked.push(id),
                    409 => {}
                    _ => break,
                }
                i += 1;
            }
            acked
        }));
    }
    tokio::time::sleep(std::time::Duration::from_millis(1500)).await;
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
    stop.store(true, Ordering::Relaxed);
    let mut acked = Vec::new();
    for w in writers {
        acked.extend(w.await.unwrap());
    }
    let (child, base) = spawn(dir);
    let t = login_token(&http, &base, "root", ROOT_PASSWORD).await;
    (acked, child, base, t)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_inserts_survive_kill_9() {
    let dir = tempfile::tempdir().unwrap();
    let (acked, mut child, base, t) = write_until_killed(
        dir.path(),
        "CREATE NAMESPACE app; CREATE TABLE app.t (id BIGINT PRIMARY KEY, v TEXT)",
        |id| format!("INSERT INTO app.t VALUES ({id}, 'row {id}')"),
    )
    .await;
    assert!(
        acked.len() > 50,
        "the writers made progress before the kill ({})",
        acked.len()
    );
    let http = reqwest::Client::new();
    let (_, v) = post_sql(&http, &base, &t, "SELECT id FROM app.t").await;
    let present: std::collections::HashSet<i64> = v["results"][0]["rows"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r[0].as_str().unwrap().parse().unwrap())
        .collect();
    let lost: Vec<_> = acked.iter().filter(|id| !present.contains(id)).collect();
    assert!(
        lost.is_empty(),
        "{} acknowledged inserts lost, e.g. {:?}",
        lost.len(),
        &lost[..lost.len().min(5)]
    );
    child.kill().unwrap();
    child.wait().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transactions_survive_kill_9_whole_or_not_at_all() {
    const ACCOUNTS: i64 = 8;
    let dir = tempfile::tempdir().unwrap();
    let values: Vec<String> = (1..=ACCOUNTS).map(|i| format!("({i}, 100)")).collect();
    // Transfers: two updates and a log row, one transaction per request.
    let (acked, mut child, base, t) = write_until_killed(
        dir.path(),
        &format!(
            "CREATE NAMESPACE app; CREATE SHARED TABLE app.acct (id INT PRIMARY KEY, balance INT); \
             CREATE SHARED TABLE app.transfers (id BIGINT PRIMARY KEY, src INT, dst INT, amount INT); \
             INSERT INTO app.acct VALUES {}",
            values.join(", ")
        ),
        |id| {
            let (src, dst, amount) = (id % ACCOUNTS + 1, (id + 3) % ACCOUNTS + 1, id % 7 + 1);
            format!(
                "BEGIN; UPDATE app.acct SET balance = balance - {amount} WHERE id = {src}; \
                 UPDATE app.acct SET balance = balance + {amount} WHERE id = {dst}; \
                 INSERT INTO app.transfers VALUES ({id}, {src}, {dst}, {amount}); COMMIT"
            )
        },
    )
    .await;
    assert!(
        acked.len() > 10,
        "the writers made progress ({})",
        acked.len()
    );
    let http = reqwest::Client::new();
    let (_, v) = post_sql(
        &http,
        &base,
        &t,
        "SELECT id, src, dst, amount FROM app.transfers",
    )
    .await;
    let num = |c: &serde_json::Value| -> i64 {
        c.as_i64()
            .unwrap_or_else(|| c.as_str().unwrap().parse().unwrap())
    };
    let mut expected = vec![100i64; ACCOUNTS as usize + 1];
    let mut logged = std::collections::HashSet::new();
    for r in v["results"][0]["rows"].as_array().unwrap() {
        logged.insert(num(&r[0]));
        expected[num(&r[1]) as usize] -= num(&r[3]);
        expected[num(&r[2]) as usize] += num(&r[3]);
    }
    let lost: Vec<_> = acked.iter().filter(|id| !logged.contains(id)).collect();
    assert!(lost.is_empty(), "{} acknowledged commits lost", lost.len());
    // Every transfer whose log row is there moved its money, and no other did.
    let (_, v) = post_sql(
        &http,
        &base,
        &t,
        "SELECT id, balance FROM app.acct ORDER BY id",
    )
    .await;
    let got: Vec<i64> = v["results"][0]["rows"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| num(&r[1]))
        .collect();
    assert_eq!(got, expected[1..].to_vec());
    child.kill().unwrap();
    child.wait().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_topic_holds_exactly_the_committed_changes_after_kill_9() {
    let dir = tempfile::tempdir().unwrap();
    // Writers insert rows and then update them.
    let (_, mut child, base, t) = write_until_killed(
        dir.path(),
        "CREATE NAMESPACE app; CREATE SHARED TABLE app.t (id BIGINT PRIMARY KEY, v BIGINT); \
         CREATE TOPIC app.changes PARTITIONS 2; \
         ALTER TOPIC app.changes ADD SOURCE app.t ON INSERT; \
         ALTER TOPIC app.changes ADD SOURCE app.t ON UPDATE",
        |id| {
            if id % 3 == 2 {
                format!("UPDATE app.t SET v = v + 1 WHERE id = {}", id - 1)
            } else {
                format!("INSERT INTO app.t VALUES ({id}, 0)")
            }
        },
    )
    .await;
    let http = reqwest::Client::new();
    let (_, v) = post_sql(&http, &base, &t, "SELECT id, v FROM app.t").await;
    let num = |c: &serde_json::Value| -> i64 {
        c.as_i64()
            .unwrap_or_else(|| c.as_str().unwrap().parse().unwrap())
    };
    // Every committed change is one message: an insert per row, an update per increment.
    let mut expected: Vec<(i64, &str)> = Vec::new();
    for r in v["results"][0]["rows"].as_array().unwrap() {
        expected.push((num(&r[0]), "insert"));
        for _ in 0..num(&r[1]) {
            expected.push((num(&r[0]), "update"));
        }
    }
    assert!(expected.len() > 20, "the writers made progress");
    let mut got: Vec<(i64, &str)> = Vec::new();
    for p in 0..2 {
        let (_, v) = post_sql(
            &http,
            &base,
            &t,
            &format!("CONSUME FROM app.changes PARTITION {p} FROM EARLIEST LIMIT 10000"),
        )
        .await;
        let rows = v["results"][0]["rows"].as_array().unwrap();
        for (i, r) in rows.iter().enumerate() {
            assert_eq!(
                num(&r[2]),
                i as i64,
                "offsets of partition {p} are gap-free"
            );
            let op = if r[7] == "insert" { "insert" } else { "update" };
            got.push((r[3].as_str().unwrap().parse().unwrap(), op));
        }
    }
    expected.sort();
    got.sort();
    assert_eq!(
        got, expected,
        "messages = committed changes, none lost or doubled"
    );
    child.kill().unwrap();
    child.wait().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_shuts_down_cleanly_and_keeps_data() {
    let dir = tempfile::tempdir().unwrap();
    let (mut child, base) = spawn(dir.path());
    let http = reqwest::Client::new();
    let t = login_token(&http, &base, "root", ROOT_PASSWORD).await;
    let (status, _) = post_sql(&http, &base, &t, "CREATE NAMESPACE app; CREATE TABLE app.t (id INT PRIMARY KEY); INSERT INTO app.t VALUES (1), (2)").await;
    assert_eq!(status, 200);
    // SAFETY: sending a signal to our own child process.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let status = child.wait().unwrap();
    assert!(status.success(), "exit status {status:?}");

    let (mut child, base) = spawn(dir.path());
    let t = login_token(&http, &base, "root", ROOT_PASSWORD).await;
    let (_, v) = post_sql(&http, &base, &t, "SELECT count(*) FROM app.t").await;
    assert_eq!(v["results"][0]["rows"][0][0], "2");
    child.kill().unwrap();
    child.wait().unwrap();
}

#[test]
fn invalid_config_is_a_clear_startup_error() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("server.toml");
    let run = |envs: &[(&str, &str)]| {
        let out = Command::new(env!("CARGO_BIN_EXE_kalamdb-server"))
            .arg("--config")
            .arg(&config)
            .env("KALAMDB_DATA_DIR", dir.path())
            .envs(envs.iter().copied())
            .output()
            .unwrap();
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let (code, err) = run(&[("KALAMDB_NODE_ID", "bad id!")]);
    assert_eq!(code, Some(2));
    assert!(err.contains("server.node_id"), "{err}");
    std::fs::write(&config, "[server]\nport = \"eighty\"\n").unwrap();
    let (code, err) = run(&[]);
    assert_eq!(code, Some(2));
    assert!(err.contains("invalid configuration"), "{err}");
    std::fs::write(&config, "[server]\nhost = \"0.0.0.0\"\n").unwrap();
    let (code, err) = run(&[]);
    assert_eq!(code, Some(2));
    assert!(err.contains("auth.jwt_secret"), "{err}");
}
