//! Explicit transactions: all-or-nothing inside one request, snapshot reads, first committer
//! wins, transactions continued across requests by id (owner-checked, aborted by errors,
//! killed, expired), what is refused inside them, live queries seeing only commits, and a
//! concurrent transfer workload whose balances must add up.

use crate::live::Ws;
use crate::support::{Rng, TestServer, rows};
use serde_json::{Value, json};
use std::time::Duration;

/// Runs `sql` inside transaction `tid`.
async fn in_tx(s: &TestServer, token: &str, tid: &str, sql: &str) -> (u16, Value) {
    s.sql_body(token, json!({"sql": sql, "transaction_id": tid}))
        .await
}

/// A lone `BEGIN`: the id of the transaction later requests continue.
async fn begin(s: &TestServer, token: &str) -> String {
    let r = s.ok(token, "BEGIN").await;
    assert!(r["message"].as_str().unwrap().contains("started"), "{r}");
    r["transaction_id"].as_str().unwrap().to_string()
}

/// The error code of a failed reply.
fn code(body: &Value) -> &str {
    body["error"]["code"].as_str().unwrap_or("")
}

async fn balances(s: &TestServer, token: &str) -> Vec<(i64, i64)> {
    let r = s
        .ok(token, "SELECT id, balance FROM app.acct ORDER BY id")
        .await;
    rows(&r)
        .iter()
        .map(|r| (r[0].as_i64().unwrap(), r[1].as_i64().unwrap()))
        .collect()
}

async fn accounts(s: &TestServer, root: &str, n: i64) {
    let values: Vec<String> = (1..=n).map(|i| format!("({i}, 100)")).collect();
    s.ok(
        root,
        &format!(
            "CREATE NAMESPACE IF NOT EXISTS app; CREATE SHARED TABLE app.acct (id INT PRIMARY KEY, \
             balance INT); INSERT INTO app.acct VALUES {}",
            values.join(", ")
        ),
    )
    .await;
}

#[tokio::test]
async fn a_transaction_in_one_request_is_all_or_nothing() {
    let s = TestServer::start().await;
    let root = s.root_token().await;
    accounts(&s, &root, 2).await;
    s.ok(&root, "CREATE SHARED TABLE app.orders (id INT PRIMARY KEY, total INT); CREATE SHARED TABLE app.lines (id INT PRIMARY KEY, order_id INT, qty INT)").await;

    // A transfer and an order with its lines; reads inside see the transaction's writes.
    let (status, body) = s
        .sql(
            &root,
            "BEGIN; UPDATE app.acct SET balance = balance - 30 WHERE id = 1; \
             UPDATE app.acct SET balance = balance + 30 WHERE id = 2; \
             SELECT balance FROM app.acct WHERE id = 1; \
             INSERT INTO app.orders VALUES (1, 20); INSERT INTO app.lines VALUES (1, 1, 2), (2, 1, 3); \
             SELECT count(*) FROM app.lines; COMMIT",
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let results = body["results"].as_array().unwrap();
    assert_eq!(results[0]["transaction_id"], results[3]["transaction_id"]);
    assert_eq!(rows(&results[1]), vec![vec![json!(70)]]);
    assert_eq!(rows(&results[2]), vec![vec![json!("2")]]);
    assert!(
        results[3]["message"]
            .as_str()
            .unwrap()
            .contains("committed: 5 row(s)"),
        "{body}"
    );
    assert_eq!(balances(&s, &root).await, vec![(1, 70), (2, 130)]);

    // ROLLBACK, a request that ends with the transaction open, and a failing statement all
    // leave nothing behind.
    s.ok(
        &root,
        "START TRANSACTION; INSERT INTO app.acct VALUES (3, 5); ROLLBACK",
    )
    .await;
    let (status, body) = s
        .sql(
            &root,
            "BEGIN TRANSACTION; INSERT INTO app.acct VALUES (4, 5)",
        )
        .await;
    assert_eq!(
        (status, code(&body)),
        (400, "SQL_EXECUTION_ERROR"),
        "{body}"
    );
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("rolled back")
    );
    let (status, body) = s
        .sql(
            &root,
            "BEGIN; INSERT INTO app.acct VALUES (5, 1); INSERT INTO app.acct VALUES (1, 1); END",
        )
        .await;
    assert_eq!(status, 400, "{body}");
    assert_eq!(balances(&s, &root).await, vec![(1, 70), (2, 130)]);
    // END commits too.
    s.ok(&root, "BEGIN; DELETE FROM app.lines WHERE id = 2; END")
        .await;
    let r = s.ok(&root, "SELECT id FROM app.lines").await;
    assert_eq!(rows(&r), vec![vec![json!(1)]]);
    // Nothing is left open.
    let r = s.ok(&root, "SELECT * FROM system.transactions").await;
    assert!(rows(&r).is_empty(), "{r}");
}

#[tokio::test]
async fn snapshot_reads_and_the_first_committer_wins() {
    let s = TestServer::start().await;
    let root = s.root_token().await;
    accounts(&s, &root, 3).await;

    // A snapshot read does not see a write committed after BEGIN, and loses to it at COMMIT.
    let t = begin(&s, &root).await;
    let (_, r) = in_tx(&s, &root, &t, "SELECT balance FROM app.acct WHERE id = 1").await;
    assert_eq!(rows(&r["results"][0]), vec![vec![json!(100)]]);
    s.ok(&root, "UPDATE app.acct SET balance = 0 WHERE id = 1")
        .await;
    let (_, r) = in_tx(&s, &root, &t, "SELECT sum(balance) FROM app.acct").await;
    assert_eq!(rows(&r["results"][0]), vec![vec![json!("300")]]);
    let (status, r) = in_tx(
        &s,
        &root,
        &t,
        "UPDATE app.acct SET balance = balance + 1 WHERE id = 1",
    )
    .await;
    assert_eq!(status, 200, "{r}");
    let (status, r) = in_tx(&s, &root, &t, "COMMIT").await;
    assert_eq!((status, code(&r)), (409, "TRANSACTION_CONFLICT"), "{r}");
    assert_eq!(balances(&s, &root).await[0], (1, 0));
    let (status, r) = in_tx(&s, &root, &t, "SELECT 1").await;
    assert_eq!(
        status, 400,
        "a committed or failed transaction is gone: {r}"
    );

    // Writes of other rows do not conflict.
    let t = begin(&s, &root).await;
    s.ok(&root, "UPDATE app.acct SET balance = 7 WHERE id = 2")
        .await;
    in_tx(
        &s,
        &root,
        &t,
        "UPDATE app.acct SET balance = 1 WHERE id = 1",
    )
    .await;
    let (status, r) = in_tx(&s, &root, &t, "COMMIT").await;
    assert_eq!(status, 200, "{r}");
    assert_eq!(balances(&s, &root).await, vec![(1, 1), (2, 7), (3, 100)]);

    // The same new primary key inserted by a plain write first: the transaction's COMMIT
    // fails (uniqueness is checked at COMMIT against the committed state).
    let t = begin(&s, &root).await;
    let (status, r) = in_tx(&s, &root, &t, "INSERT INTO app.acct VALUES (10, 1)").await;
    assert_eq!(status, 200, "{r}");
    s.ok(&root, "INSERT INTO app.acct VALUES (10, 2)").await;
    let (status, r) = in_tx(&s, &root, &t, "COMMIT").await;
    assert_eq!((status, code(&r)), (409, "TRANSACTION_CONFLICT"), "{r}");
    let r = s
        .ok(&root, "SELECT balance FROM app.acct WHERE id = 10")
        .await;
    assert_eq!(rows(&r), vec![vec![json!(2)]]);

    // The snapshot holds across flushes and compactions of what it reads: the cold tier is
    // read up to the snapshot, and a compaction waits for it (what the snapshot reads is
    // flushed already, so a merge would drop it).
    s.ok(&root, "STORAGE FLUSH TABLE app.acct").await;
    let t = begin(&s, &root).await;
    let read = "SELECT id, balance FROM app.acct WHERE id IN (2, 3) ORDER BY id";
    let (_, before) = in_tx(&s, &root, &t, read).await;
    for v in [50, 60] {
        s.ok(
            &root,
            &format!(
                "UPDATE app.acct SET balance = {v} WHERE id IN (2, 3); STORAGE FLUSH TABLE app.acct"
            ),
        )
        .await;
    }
    s.ok(&root, "STORAGE COMPACT TABLE app.acct").await;
    let (_, after) = in_tx(&s, &root, &t, read).await;
    assert_eq!(
        rows(&after["results"][0]),
        rows(&before["results"][0]),
        "{after}"
    );
    assert_eq!(
        rows(&before["results"][0]),
        vec![vec![json!(2), json!(7)], vec![json!(3), json!(100)]]
    );
    // Point lookups inside too.
    let (_, r) = in_tx(&s, &root, &t, "SELECT balance FROM app.acct WHERE id = 3").await;
    assert_eq!(rows(&r["results"][0]), vec![vec![json!(100)]]);
    in_tx(&s, &root, &t, "ROLLBACK").await;
    assert_eq!(balances(&s, &root).await[1], (2, 60));
}

#[tokio::test]
async fn continued_transactions_are_their_owners_and_end() {
    let s = TestServer::start_with(|c| c.engine.transactions.idle_timeout_secs = 1).await;
    let root = s.root_token().await;
    s.ok(
        &root,
        "CREATE NAMESPACE app; CREATE USER TABLE app.notes (id INT PRIMARY KEY, body TEXT)",
    )
    .await;
    let users = s.users_with_tokens(&root, &["ada", "bob"]).await;
    let (ada, bob) = (&users[0], &users[1]);

    let t = begin(&s, ada).await;
    let (status, r) = in_tx(&s, ada, &t, "INSERT INTO app.notes VALUES (1, 'draft')").await;
    assert_eq!(status, 200, "{r}");
    let (_, r) = in_tx(&s, ada, &t, "SELECT body FROM app.notes").await;
    assert_eq!(rows(&r["results"][0]), vec![vec![json!("draft")]]);
    let r = s.ok(ada, "SELECT body FROM app.notes").await;
    assert!(
        rows(&r).is_empty(),
        "staged rows are invisible outside: {r}"
    );
    // Only its owner may use it.
    let (status, r) = in_tx(&s, bob, &t, "SELECT 1").await;
    assert_eq!(status, 400, "{r}");
    assert!(
        r["error"]["message"]
            .as_str()
            .unwrap()
            .contains("not found"),
        "{r}"
    );
    // dba/system see it.
    let r = s
        .ok(
            &root,
            "SELECT transaction_id, owner_id, origin, state, write_count, touched_tables \
             FROM system.transactions",
        )
        .await;
    assert_eq!(
        rows(&r),
        vec![vec![
            json!(t),
            json!("ada"),
            json!("session"),
            json!("active"),
            json!("1"),
            json!("app.notes")
        ]]
    );
    let (status, _, _) = s.err(ada, "SELECT * FROM system.transactions").await;
    assert_eq!(status, 403);
    let r = s
        .ok(
            &root,
            "SELECT metric_value FROM system.stats WHERE metric_name = 'open_transactions'",
        )
        .await;
    assert_eq!(rows(&r), vec![vec![json!("1")]]);

    // A failing statement aborts it: later statements are refused until it ends.
    let (status, _) = in_tx(&s, ada, &t, "INSERT INTO app.notes VALUES (1, 'again')").await;
    assert_eq!(status, 400);
    let (status, r) = in_tx(&s, ada, &t, "SELECT 1").await;
    assert_eq!((status, code(&r)), (400, "TRANSACTION_ABORTED"), "{r}");
    let (status, r) = in_tx(&s, ada, &t, "COMMIT").await;
    assert_eq!((status, code(&r)), (400, "TRANSACTION_ABORTED"), "{r}");
    let r = s.ok(ada, "SELECT body FROM app.notes").await;
    assert!(rows(&r).is_empty(), "{r}");

    // KILL TRANSACTION ends one.
    let t = begin(&s, ada).await;
    s.ok(&root, &format!("KILL TRANSACTION {t}")).await;
    let (status, _) = in_tx(&s, ada, &t, "SELECT 1").await;
    assert_eq!(status, 400);
    let (status, _, _) = s.err(ada, &format!("KILL TRANSACTION {t}")).await;
    assert_eq!(status, 403);

    // An idle one rolls back after idle_timeout_secs (checked once a second).
    let t = begin(&s, ada).await;
    in_tx(&s, ada, &t, "INSERT INTO app.notes VALUES (2, 'idle')").await;
    let mut gone = false;
    for _ in 0..50 {
        tokio::time::sleep(Duration::from_millis(200)).await;
        let r = s
            .ok(&root, "SELECT count(*) FROM system.transactions")
            .await;
        if rows(&r)[0][0] == json!("0") {
            gone = true;
            break;
        }
    }
    assert!(gone, "the idle transaction expired");
    let (status, _) = in_tx(&s, ada, &t, "COMMIT").await;
    assert_eq!(status, 400);
    let r = s.ok(ada, "SELECT count(*) FROM app.notes").await;
    assert_eq!(rows(&r), vec![vec![json!("0")]]);
}

#[tokio::test]
async fn what_transactions_refuse() {
    let s = TestServer::start_with(|c| c.engine.transactions.max_buffer_mb = 0).await;
    let root = s.root_token().await;
    s.ok(
        &root,
        "CREATE NAMESPACE app; CREATE SHARED TABLE app.t (id INT PRIMARY KEY); \
         CREATE STREAM TABLE app.ev (id INT) WITH (TTL_SECONDS = 60)",
    )
    .await;
    for (sql, expected) in [
        ("COMMIT", "SQL_EXECUTION_ERROR"),
        ("ROLLBACK", "SQL_EXECUTION_ERROR"),
        ("BEGIN; BEGIN; COMMIT", "SQL_EXECUTION_ERROR"),
        (
            "BEGIN; CREATE SHARED TABLE app.u (id INT PRIMARY KEY); COMMIT",
            "SQL_EXECUTION_ERROR",
        ),
        (
            "BEGIN; STORAGE FLUSH TABLE app.t; COMMIT",
            "SQL_EXECUTION_ERROR",
        ),
        (
            "BEGIN; INSERT INTO app.ev VALUES (1); COMMIT",
            "SQL_EXECUTION_ERROR",
        ),
        (
            "BEGIN; INSERT INTO system.users (user_id) VALUES ('x'); COMMIT",
            "PERMISSION_DENIED",
        ),
        ("BEGIN ISOLATION LEVEL SERIALIZABLE", "UNSUPPORTED"),
        ("ROLLBACK TO SAVEPOINT a", "UNSUPPORTED"),
        // max_buffer_mb = 0: the first staged row is over the cap.
        (
            "BEGIN; INSERT INTO app.t VALUES (1); COMMIT",
            "RESOURCE_EXHAUSTED",
        ),
    ] {
        let (_, got, msg) = s.err(&root, sql).await;
        assert_eq!(got, expected, "{sql}: {msg}");
    }
    let r = s.ok(&root, "SELECT count(*) FROM app.t").await;
    assert_eq!(rows(&r), vec![vec![json!("0")]]);
    let r = s
        .ok(&root, "SELECT count(*) FROM system.transactions")
        .await;
    assert_eq!(rows(&r), vec![vec![json!("0")]]);
}

#[tokio::test]
async fn subscribers_see_whole_commits_and_nothing_of_rollbacks() {
    let s = TestServer::start().await;
    let root = s.root_token().await;
    accounts(&s, &root, 2).await;
    let mut ws = Ws::authed(&s, &root).await;
    let initial = ws
        .subscribe_all("acct", "SELECT * FROM app.acct", json!({}))
        .await;
    assert_eq!(initial.len(), 2);

    // Staged writes send nothing: the next change is a later plain write.
    let t = begin(&s, &root).await;
    in_tx(
        &s,
        &root,
        &t,
        "UPDATE app.acct SET balance = 0 WHERE id = 1",
    )
    .await;
    in_tx(&s, &root, &t, "INSERT INTO app.acct VALUES (9, 9)").await;
    s.ok(&root, "INSERT INTO app.acct VALUES (3, 3)").await;
    let c = ws.next().await;
    assert_eq!(c["rows"][0]["id"], json!(3), "{c}");
    in_tx(&s, &root, &t, "ROLLBACK").await;

    // A commit arrives whole, after COMMIT; a rolled-back one never does.
    s.ok(
        &root,
        "BEGIN; INSERT INTO app.acct VALUES (7, 1); ROLLBACK; \
         BEGIN; UPDATE app.acct SET balance = balance - 5 WHERE id = 1; \
         UPDATE app.acct SET balance = balance + 5 WHERE id = 2; COMMIT",
    )
    .await;
    // One message: the subscriber never holds half a transfer.
    let c = ws.next().await;
    assert_eq!(c["type"], "change", "{c}");
    let mut seen: Vec<(Value, Value)> = c["rows"]
        .as_array()
        .unwrap()
        .iter()
        .map(|row| (row["id"].clone(), row["balance"].clone()))
        .collect();
    seen.sort_by_key(|(id, _)| id.as_i64());
    assert_eq!(
        seen,
        vec![(json!(1), json!(95)), (json!(2), json!(105))],
        "both rows of the transfer, and nothing of the rolled-back insert"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_transfers_keep_the_books_balanced() {
    let s = std::sync::Arc::new(TestServer::start().await);
    let root = s.root_token().await;
    const ACCOUNTS: u64 = 5;
    accounts(&s, &root, ACCOUNTS as i64).await;
    // A subscriber checks that the books balance after every message it receives.
    let mut ws = Ws::authed(&s, &root).await;
    let mut live: std::collections::BTreeMap<i64, i64> = ws
        .subscribe_all("acct", "SELECT id, balance FROM app.acct", json!({}))
        .await
        .iter()
        .map(|r| (r["id"].as_i64().unwrap(), r["balance"].as_i64().unwrap()))
        .collect();
    // Four clients move money between five hot rows; each COMMIT that succeeds is recorded.
    let mut clients = Vec::new();
    for c in 0..4u64 {
        let (s, root) = (std::sync::Arc::clone(&s), root.clone());
        clients.push(tokio::spawn(async move {
            let mut rng = Rng(c * 7919 + 13);
            let (mut committed, mut conflicts) = (Vec::new(), 0);
            for _ in 0..40 {
                let from = rng.next(ACCOUNTS) as i64 + 1;
                let to = (from % ACCOUNTS as i64) + 1;
                let amount = rng.next(10) as i64 + 1;
                let t = begin(&s, &root).await;
                for sql in [
                    format!("UPDATE app.acct SET balance = balance - {amount} WHERE id = {from}"),
                    format!("UPDATE app.acct SET balance = balance + {amount} WHERE id = {to}"),
                ] {
                    let (status, r) = in_tx(&s, &root, &t, &sql).await;
                    assert_eq!(status, 200, "{r}");
                }
                let (status, r) = in_tx(&s, &root, &t, "COMMIT").await;
                match status {
                    200 => committed.push((from, to, amount)),
                    409 => conflicts += 1,
                    _ => panic!("unexpected COMMIT reply: {r}"),
                }
            }
            (committed, conflicts)
        }));
    }
    let mut model = vec![100i64; ACCOUNTS as usize + 1];
    let mut total_committed = 0;
    for c in clients {
        let (committed, _conflicts) = c.await.unwrap();
        total_committed += committed.len();
        for (from, to, amount) in committed {
            model[from as usize] -= amount;
            model[to as usize] += amount;
        }
    }
    assert!(total_committed > 0);
    let got = balances(&s, &root).await;
    let want: Vec<(i64, i64)> = (1..=ACCOUNTS as i64)
        .map(|i| (i, model[i as usize]))
        .collect();
    assert_eq!(got, want, "no lost update, no partial transfer");
    assert_eq!(
        got.iter().map(|(_, b)| b).sum::<i64>(),
        100 * ACCOUNTS as i64
    );
    for _ in 0..total_committed {
        let c = ws.next().await;
        assert_eq!(c["change_type"], "update", "{c}");
        for row in c["rows"].as_array().unwrap() {
            live.insert(
                row["id"].as_i64().unwrap(),
                row["balance"].as_i64().unwrap(),
            );
        }
        assert_eq!(
            live.values().sum::<i64>(),
            100 * ACCOUNTS as i64,
            "a delivered change holds a whole transfer: {c}"
        );
    }
    assert_eq!(live.into_iter().collect::<Vec<_>>(), got);
}

#[tokio::test]
async fn several_users_rows_through_execute_as_commit_together_across_a_flush() {
    let s = TestServer::start().await;
    let root = s.root_token().await;
    s.ok(
        &root,
        "CREATE NAMESPACE app; CREATE USER TABLE app.inbox (id INT PRIMARY KEY, body TEXT)",
    )
    .await;
    let users = s.users_with_tokens(&root, &["ada", "bob"]).await;
    s.ok(
        &root,
        "EXECUTE AS USER 'ada' (INSERT INTO app.inbox VALUES (1, 'old'))",
    )
    .await;
    let t = begin(&s, &root).await;
    for sql in [
        "EXECUTE AS USER 'ada' (UPDATE app.inbox SET body = 'hello' WHERE id = 1)",
        "EXECUTE AS USER 'bob' (INSERT INTO app.inbox VALUES (1, 'hello'))",
    ] {
        let (status, r) = in_tx(&s, &root, &t, sql).await;
        assert_eq!(status, 200, "{sql}: {r}");
    }
    // A flush while rows are staged neither shows nor loses them.
    s.ok(&root, "STORAGE FLUSH TABLE app.inbox").await;
    for token in &users {
        let r = s.ok(token, "SELECT body FROM app.inbox").await;
        assert!(rows(&r).iter().all(|r| r[0] != json!("hello")), "{r}");
    }
    let (status, r) = in_tx(&s, &root, &t, "COMMIT").await;
    assert_eq!(status, 200, "{r}");
    for token in &users {
        let r = s.ok(token, "SELECT id, body FROM app.inbox").await;
        assert_eq!(rows(&r), vec![vec![json!(1), json!("hello")]]);
    }
    // COMMIT and ROLLBACK are audited.
    let r = s
        .ok(
            &root,
            &format!("SELECT action, details FROM system.audit_log WHERE target = '{t}'"),
        )
        .await;
    assert_eq!(
        rows(&r),
        vec![vec![json!("COMMIT_TRANSACTION"), json!("2 row(s)")]]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transactions_and_plain_writes_read_snapshots_and_lose_no_update() {
    let s = std::sync::Arc::new(TestServer::start().await);
    let root = s.root_token().await;
    const ACCOUNTS: u64 = 4;
    accounts(&s, &root, ACCOUNTS as i64).await;
    // Two clients move money in transactions, reading the source account twice inside (the
    // two reads must agree whatever commits meanwhile); one client deposits with plain
    // single-statement UPDATEs. Every successful write is recorded in the model.
    let mut clients = Vec::new();
    for c in 0..3u64 {
        let (s, root) = (std::sync::Arc::clone(&s), root.clone());
        clients.push(tokio::spawn(async move {
            let mut rng = Rng(c * 104_729 + 7);
            let mut applied: Vec<(i64, i64, i64)> = Vec::new();
            for _ in 0..30 {
                let from = rng.next(ACCOUNTS) as i64 + 1;
                let to = (from % ACCOUNTS as i64) + 1;
                let amount = rng.next(5) as i64 + 1;
                if c == 2 {
                    s.ok(
                        &root,
                        &format!(
                            "UPDATE app.acct SET balance = balance + {amount} WHERE id = {to}"
                        ),
                    )
                    .await;
                    applied.push((0, to, amount));
                    continue;
                }
                let t = begin(&s, &root).await;
                let read = format!("SELECT balance FROM app.acct WHERE id = {from}");
                let (_, first) = in_tx(&s, &root, &t, &read).await;
                for sql in [
                    format!("UPDATE app.acct SET balance = balance - {amount} WHERE id = {from}"),
                    format!("UPDATE app.acct SET balance = balance + {amount} WHERE id = {to}"),
                ] {
                    let (status, r) = in_tx(&s, &root, &t, &sql).await;
                    assert_eq!(status, 200, "{r}");
                }
                tokio::task::yield_now().await;
                let (_, second) = in_tx(&s, &root, &t, &read).await;
                let balance = |v: &Value| rows(&v["results"][0])[0][0].as_i64().unwrap();
                assert_eq!(
                    balance(&second),
                    balance(&first) - amount,
                    "a snapshot read sees only the transaction's own change"
                );
                let (status, r) = in_tx(&s, &root, &t, "COMMIT").await;
                match status {
                    200 => applied.push((from, to, amount)),
                    409 => {}
                    _ => panic!("unexpected COMMIT reply: {r}"),
                }
            }
            applied
        }));
    }
    let mut model = vec![100i64; ACCOUNTS as usize + 1];
    for c in clients {
        for (from, to, amount) in c.await.unwrap() {
            if from > 0 {
                model[from as usize] -= amount;
            }
            model[to as usize] += amount;
        }
    }
    let want: Vec<(i64, i64)> = (1..=ACCOUNTS as i64)
        .map(|i| (i, model[i as usize]))
        .collect();
    assert_eq!(balances(&s, &root).await, want, "no lost update");
}
