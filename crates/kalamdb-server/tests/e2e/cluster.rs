//! A three-process cluster on loopback ports, started by `scripts/cluster.sh` with this build's
//! binary: statements on any node (followers forward to leaders), a leader killed with
//! SIGKILL under concurrent writes (a new leader takes writes; every acknowledged write is on
//! every survivor, nothing deleted comes back, no duplicates), live subscribers on every node
//! across that failover (each ends equal to a fresh SELECT), the killed node restarted (it
//! catches up), and a minority cut off with SIGSTOP (it acknowledges nothing; on return it
//! catches up). A second cluster grows by a fourth node (`cluster.sh add`: CLUSTER ADD NODE)
//! and loses its first (`cluster.sh remove`: CLUSTER REMOVE NODE) with its data complete.

use crate::live::Ws;
use serde_json::{Value, json};
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

pub(crate) const PASSWORD: &str = "cluster-root-pass";
/// Data groups for USER rows in the test cluster: groups 0 (meta), 1-2 (users), 3 (shared).
pub(crate) const USER_SHARDS: u64 = 2;

fn script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../scripts/cluster.sh")
}

/// A port range free for `n` HTTP ports at `base` and their RPC ports at `base + 100`, inside
/// a block of 200 ports of this process's own (nextest runs each test in its own process,
/// often with consecutive ids: blocks of 100 let one test's RPC ports fall on the next one's
/// HTTP ports, and a cluster failed to start on "address in use").
fn free_base(n: u16) -> u16 {
    for _ in 0..200 {
        let block = 20_000 + (std::process::id() % 200) as u16 * 200;
        let base = block + fastrand_u16() % (100 - n);
        let ok = (0..n).all(|i| {
            std::net::TcpListener::bind(("127.0.0.1", base + i)).is_ok()
                && std::net::TcpListener::bind(("127.0.0.1", base + 100 + i)).is_ok()
        });
        if ok {
            return base;
        }
    }
    panic!("no free port range");
}

fn fastrand_u16() -> u16 {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .subsec_nanos();
    (nanos / 1000 % 60_000) as u16
}

pub(crate) struct Cluster {
    dir: tempfile::TempDir,
    pub(crate) urls: Vec<String>,
}

impl Cluster {
    fn cluster_sh(&self, args: &[&str]) -> String {
        let out = Command::new("bash")
            .arg(script())
            .args(args)
            .env("KALAMDB_SERVER_BIN", env!("CARGO_BIN_EXE_kalamdb-server"))
            .env("KALAMDB_ROOT_PASSWORD", PASSWORD)
            .env("KALAMDB_AUTH_BCRYPT_COST", "4")
            .env("KALAMDB_LOG_LEVEL", "warn")
            .env("KALAMDB_CLUSTER_HEARTBEAT_MS", "100")
            .env("KALAMDB_CLUSTER_ELECTION_MIN_MS", "500")
            .env("KALAMDB_CLUSTER_ELECTION_MAX_MS", "1000")
            .env("KALAMDB_CLUSTER_USER_SHARDS", USER_SHARDS.to_string())
            .env("KALAMDB_STREAM_EVICTION_SECS", "1")
            .output()
            .expect("cluster.sh runs");
        assert!(
            out.status.success(),
            "cluster.sh {args:?} failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    pub(crate) fn up(n: u16) -> Self {
        let dir = tempfile::tempdir().unwrap();
        // Room for one more node (`cluster.sh add`).
        let base = free_base(n + 1);
        let mut cluster = Self {
            dir,
            urls: Vec::new(),
        };
        let path = cluster.dir.path().to_string_lossy().into_owned();
        let out = cluster.cluster_sh(&["up", &n.to_string(), &base.to_string(), &path]);
        // One line per node: node <id> <url> pid <pid>.
        for (i, line) in out.lines().enumerate() {
            let words: Vec<&str> = line.split_whitespace().collect();
            assert_eq!(words[..2], ["node", &(i + 1).to_string()[..]], "{out}");
            assert_eq!(words[3], "pid", "{out}");
            cluster.urls.push(words[2].to_string());
        }
        assert_eq!(cluster.urls.len(), n as usize, "{out}");
        cluster
    }

    fn pid(&self, node: usize) -> i32 {
        std::fs::read_to_string(self.dir.path().join(format!("node-{node}/pid")))
            .unwrap()
            .trim()
            .parse()
            .unwrap()
    }

    pub(crate) fn signal(&self, node: usize, signal: i32) {
        // SAFETY: kill(2) on a child process id this test started.
        assert_eq!(unsafe { libc::kill(self.pid(node), signal) }, 0);
    }

    /// `cluster.sh add`: one more node, added to every group; returns its URL.
    fn add(&mut self) -> String {
        let path = self.dir.path().to_string_lossy().into_owned();
        let out = self.cluster_sh(&["add", &path]);
        let words: Vec<&str> = out.split_whitespace().collect();
        let next = (self.urls.len() + 1).to_string();
        assert_eq!(words[..2], ["node", &next[..]], "{out}");
        self.urls.push(words[2].to_string());
        words[2].to_string()
    }

    /// `cluster.sh remove`: node `node` leaves every group and stops.
    fn remove(&self, node: usize) {
        let path = self.dir.path().to_string_lossy().into_owned();
        self.cluster_sh(&["remove", &path, &node.to_string()]);
    }

    /// Starts node `node` again with `user_shards` in its configuration, expecting it to
    /// refuse; what `cluster.sh` printed (the node's last log lines). The configuration is
    /// put back afterwards.
    fn start_with_user_shards(&self, node: usize, user_shards: u64) -> String {
        let config = self.dir.path().join(format!("node-{node}/server.toml"));
        let original = std::fs::read_to_string(&config).unwrap();
        let changed = original.replace(
            &format!("user_shards = {USER_SHARDS}"),
            &format!("user_shards = {user_shards}"),
        );
        assert_ne!(changed, original);
        std::fs::write(&config, changed).unwrap();
        let path = self.dir.path().to_string_lossy().into_owned();
        let out = Command::new("bash")
            .arg(script())
            .args(["start", &path, &node.to_string()])
            .env("KALAMDB_SERVER_BIN", env!("CARGO_BIN_EXE_kalamdb-server"))
            .output()
            .expect("cluster.sh runs");
        std::fs::write(&config, original).unwrap();
        assert!(
            !out.status.success(),
            "node {node} started with another map"
        );
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    }

    pub(crate) fn restart(&self, node: usize) {
        let path = self.dir.path().to_string_lossy().into_owned();
        self.cluster_sh(&["start", &path, &node.to_string()]);
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for node in 1..=self.urls.len() {
            let _ = std::fs::read_to_string(self.dir.path().join(format!("node-{node}/pid")))
                .ok()
                .and_then(|p| p.trim().parse::<i32>().ok())
                // SAFETY: kill(2) on a child process id this test started.
                .map(|pid| unsafe { libc::kill(pid, libc::SIGCONT) });
        }
        let path = self.dir.path().to_string_lossy().into_owned();
        let _ = Command::new("bash")
            .arg(script())
            .args(["down", &path])
            .status();
    }
}

pub(crate) async fn login(http: &reqwest::Client, url: &str, user: &str, password: &str) -> String {
    let (status, body) = crate::support::login_with(http, url, user, password).await;
    assert_eq!(status, 200, "{body}");
    body["access_token"].as_str().unwrap().to_string()
}

pub(crate) async fn sql(http: &reqwest::Client, url: &str, token: &str, q: &str) -> Value {
    answer(sql_request(http, url, token, q)).await
}

/// A request running `q` on `url` as `token`'s user.
fn sql_request(http: &reqwest::Client, url: &str, token: &str, q: &str) -> reqwest::RequestBuilder {
    http.post(format!("{url}/v1/api/sql"))
        .bearer_auth(token)
        .json(&json!({ "sql": q }))
}

/// The JSON answer to `request`.
async fn answer(request: reqwest::RequestBuilder) -> Value {
    request.send().await.unwrap().json().await.unwrap()
}

pub(crate) async fn ok(http: &reqwest::Client, url: &str, token: &str, q: &str) -> Value {
    let v = sql(http, url, token, q).await;
    assert_eq!(v["status"], "success", "{q} on {url}: {v}");
    v
}

pub(crate) async fn ids(http: &reqwest::Client, url: &str, token: &str, table: &str) -> Vec<i64> {
    let v = ok(
        http,
        url,
        token,
        &format!("SELECT id FROM {table} ORDER BY id"),
    )
    .await;
    first_column(&v)
}

/// The first column of a SELECT's rows, as numbers (shown as numbers or strings).
fn first_column(v: &Value) -> Vec<i64> {
    v["results"][0]["rows"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            r[0].as_i64()
                .unwrap_or_else(|| r[0].as_str().unwrap().parse().unwrap())
        })
        .collect()
}

/// Waits until `url` and `reference` hold the same ids of `table` (a follower applies a
/// moment after the leader answered).
pub(crate) async fn converged(
    http: &reqwest::Client,
    urls: &[&str],
    token: &str,
    table: &str,
) -> Vec<i64> {
    let until = Instant::now() + Duration::from_secs(15);
    loop {
        let mut sets = Vec::new();
        for url in urls {
            sets.push(ids(http, url, token, table).await);
        }
        if sets.windows(2).all(|w| w[0] == w[1]) {
            return sets.remove(0);
        }
        assert!(Instant::now() < until, "nodes differ on {table}: {sets:?}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// The node (1-based) leading `group`, as `url` sees it.
pub(crate) async fn leader_of(http: &reqwest::Client, url: &str, token: &str, group: u64) -> usize {
    let until = Instant::now() + Duration::from_secs(15);
    loop {
        let v = ok(
            http,
            url,
            token,
            &format!("SELECT current_leader FROM system.cluster_groups WHERE group_id = '{group}'"),
        )
        .await;
        if let Some(leader) = v["results"][0]["rows"][0][0].as_str() {
            return leader.parse().unwrap();
        }
        assert!(Instant::now() < until, "group {group} has no leader");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Inserts `id` into `table` through `urls` in turn until one node acknowledges it; a
/// duplicate key after an unanswered attempt means an earlier attempt committed.
async fn insert_acknowledged(
    http: &reqwest::Client,
    urls: &[String],
    token: &str,
    table: &str,
    id: i64,
    stop: Instant,
) -> bool {
    let mut attempt = 0usize;
    while Instant::now() < stop {
        let url = &urls[(id as usize + attempt) % urls.len()];
        attempt += 1;
        let sent = http
            .post(format!("{url}/v1/api/sql"))
            .bearer_auth(token)
            .timeout(Duration::from_secs(5))
            .json(&json!({ "sql": format!("INSERT INTO {table} VALUES ({id}, 'w')") }))
            .send()
            .await;
        let Ok(resp) = sent else {
            tokio::time::sleep(Duration::from_millis(50)).await;
            continue;
        };
        let body: Value = resp.json().await.unwrap_or(Value::Null);
        if body["status"] == "success" {
            return true;
        }
        let message = body["error"]["message"].as_str().unwrap_or_default();
        if attempt > 1 && message.contains("already exists") {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    false
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_cluster_replicates_fails_over_and_catches_up() {
    let cluster = Cluster::up(3);
    let http = reqwest::Client::new();
    let urls: Vec<&str> = cluster.urls.iter().map(String::as_str).collect();
    // A token from one node works on every node (one signing secret, one user table).
    let root = login(&http, urls[0], "root", PASSWORD).await;

    // DDL and writes on any node: followers forward to the leaders of the groups.
    ok(&http, urls[2], &root, "CREATE NAMESPACE c").await;
    ok(
        &http,
        urls[1],
        &root,
        "CREATE TABLE c.kv (id BIGINT PRIMARY KEY, v TEXT) WITH (TYPE = 'SHARED')",
    )
    .await;
    ok(
        &http,
        urls[0],
        &root,
        "CREATE TABLE c.notes (id INT PRIMARY KEY, body TEXT) WITH (TYPE = 'USER')",
    )
    .await;
    for id in 1..=20 {
        ok(
            &http,
            urls[id % 3],
            &root,
            &format!("INSERT INTO c.kv VALUES ({id}, 'v{id}')"),
        )
        .await;
    }
    ok(&http, urls[1], &root, "DELETE FROM c.kv WHERE id <= 5").await;
    let before = converged(&http, &urls, &root, "c.kv").await;
    assert_eq!(before, (6..=20).collect::<Vec<i64>>());

    // USER rows: a user's partition, written on one node and read on another.
    ok(
        &http,
        urls[0],
        &root,
        "CREATE USER alice WITH PASSWORD 'alice-pass-123' ROLE user",
    )
    .await;
    let alice = login(&http, urls[1], "alice", "alice-pass-123").await;
    ok(
        &http,
        urls[2],
        &alice,
        "INSERT INTO c.notes VALUES (1, 'mine')",
    )
    .await;
    assert_eq!(converged(&http, &urls, &alice, "c.notes").await, vec![1]);
    assert!(ids(&http, urls[0], &root, "c.notes").await.is_empty());

    // Live subscribers of alice's notes on every node, before the writes below.
    let mut subscribers = Vec::new();
    for url in &urls {
        let mut ws = Ws::connect_to(url, Some(&alice), "").await;
        assert_eq!(ws.next().await["type"], "auth_success");
        let mut rows = std::collections::BTreeMap::new();
        for r in ws
            .subscribe_all("notes", "SELECT * FROM c.notes", json!({}))
            .await
        {
            rows.insert(r["id"].as_i64().unwrap(), r);
        }
        subscribers.push((ws, rows));
    }

    // Concurrent writers through every node (the shared table, and alice's notes: inserts,
    // updates and deletes); the leader of alice's group is killed meanwhile.
    let alice_group =
        kalamdb_cluster::shard::ShardMap::new(USER_SHARDS as u32, 1).user_group("alice");
    let victim = leader_of(&http, urls[0], &root, alice_group).await;
    let acked = Arc::new(Mutex::new(BTreeSet::new()));
    let killed_at = Arc::new(Mutex::new(None::<Instant>));
    let first_after = Arc::new(Mutex::new(None::<Instant>));
    let stop = Instant::now() + Duration::from_secs(9);
    let mut writers = Vec::new();
    for w in 0..3i64 {
        let (http, token, all) = (http.clone(), root.clone(), cluster.urls.clone());
        let (acked, killed_at, first_after) = (
            Arc::clone(&acked),
            Arc::clone(&killed_at),
            Arc::clone(&first_after),
        );
        writers.push(tokio::spawn(async move {
            let mut id = 1000 * (w + 1);
            while Instant::now() < stop {
                id += 1;
                if insert_acknowledged(&http, &all, &token, "c.kv", id, stop).await {
                    acked.lock().unwrap().insert(id);
                    let killed = *killed_at.lock().unwrap();
                    if let Some(at) = killed {
                        let mut first = first_after.lock().unwrap();
                        if first.is_none() && Instant::now() > at {
                            *first = Some(Instant::now());
                        }
                    }
                }
            }
        }));
    }
    {
        let (http, token, all) = (http.clone(), alice.clone(), cluster.urls.clone());
        writers.push(tokio::spawn(async move {
            let mut rng = crate::support::Rng(7);
            let mut n = 0usize;
            while Instant::now() < stop {
                let id = rng.next(30) as i64 + 2;
                let q = match rng.next(3) {
                    0 => format!("INSERT INTO c.notes VALUES ({id}, 'n{id}')"),
                    1 => format!("UPDATE c.notes SET body = 'u{id}-{n}' WHERE id = {id}"),
                    _ => format!("DELETE FROM c.notes WHERE id = {id}"),
                };
                n += 1;
                // Retried on another node until answered (a duplicate key is an answer).
                for attempt in 0..50usize {
                    let url = &all[(n + attempt) % all.len()];
                    let sent = http
                        .post(format!("{url}/v1/api/sql"))
                        .bearer_auth(&token)
                        .timeout(Duration::from_secs(5))
                        .json(&json!({ "sql": q }))
                        .send()
                        .await;
                    if let Ok(resp) = sent
                        && let Ok(body) = resp.json::<Value>().await
                        && (body["status"] == "success"
                            || body.to_string().contains("already exists"))
                    {
                        break;
                    }
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            }
        }));
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    cluster.signal(victim, libc::SIGKILL);
    *killed_at.lock().unwrap() = Some(Instant::now());
    // Subscribers stay quiet while changes arrive: pinged within the server's idle timeout.
    while !writers.iter().all(|w| w.is_finished()) {
        for (node, (ws, _)) in subscribers.iter_mut().enumerate() {
            if node + 1 != victim {
                ws.ping().await;
            }
        }
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
    for w in writers {
        w.await.unwrap();
    }
    let killed = killed_at.lock().unwrap().unwrap();
    let resumed = first_after
        .lock()
        .unwrap()
        .expect("no write was acknowledged after the leader was killed");
    eprintln!(
        "writes acknowledged again {:?} after the leader was killed",
        resumed - killed
    );
    let acked = acked.lock().unwrap().clone();
    assert!(acked.len() > 20, "only {} writes acknowledged", acked.len());

    let survivors: Vec<&str> = (1..=3)
        .filter(|n| *n != victim)
        .map(|n| urls[n - 1])
        .collect();
    let after = converged(&http, &survivors, &root, "c.kv").await;
    let held: BTreeSet<i64> = after.iter().copied().collect();
    assert_eq!(held.len(), after.len(), "duplicate ids");
    let missing: Vec<i64> = acked.difference(&held).copied().collect();
    assert!(missing.is_empty(), "acknowledged writes lost: {missing:?}");
    assert!(
        (1..=5).all(|id| !held.contains(&id)),
        "deleted rows came back"
    );
    assert!((6..=20).all(|id| held.contains(&id)));

    // Subscribers on the survivors saw every change of alice's notes, in order, once: their
    // rows equal a fresh SELECT.
    let fresh = converged(&http, &survivors, &alice, "c.notes").await;
    for (node, (ws, rows)) in subscribers.iter_mut().enumerate() {
        if node + 1 == victim {
            continue;
        }
        while let Some(msg) = ws.try_next(Duration::from_millis(500)).await {
            crate::live::apply(rows, &msg);
        }
        let got: Vec<i64> = rows.keys().copied().collect();
        assert_eq!(got, fresh, "subscriber on node {}", node + 1);
        let bodies = ok(
            &http,
            survivors[0],
            &alice,
            "SELECT id, body FROM c.notes ORDER BY id",
        )
        .await;
        for row in bodies["results"][0]["rows"].as_array().unwrap() {
            let id = row[0].as_i64().unwrap();
            assert_eq!(rows[&id]["body"], row[1], "node {}, id {id}", node + 1);
        }
    }

    // Configured with another shard map it refuses to start, saying why; with the cluster's,
    // it restarts on its folder and catches up.
    let why = cluster.start_with_user_shards(victim, USER_SHARDS + 1);
    assert!(
        why.contains("is not the cluster's") && why.contains("user_shards"),
        "{why}"
    );
    cluster.restart(victim);
    let all = converged(&http, &urls, &root, "c.kv").await;
    assert_eq!(all, after);

    // A minority acknowledges nothing: two nodes stopped, the third cannot commit.
    let (a, b) = match victim {
        1 => (2, 3),
        2 => (1, 3),
        _ => (1, 2),
    };
    cluster.signal(a, libc::SIGSTOP);
    cluster.signal(b, libc::SIGSTOP);
    let alone = urls[victim - 1];
    let attempt = http
        .post(format!("{alone}/v1/api/sql"))
        .bearer_auth(&root)
        .timeout(Duration::from_secs(4))
        .json(&json!({ "sql": "INSERT INTO c.kv VALUES (99999, 'minority')" }))
        .send()
        .await;
    if let Ok(resp) = attempt {
        let body: Value = resp.json().await.unwrap_or(Value::Null);
        assert_ne!(body["status"], "success", "a minority acknowledged: {body}");
    }
    // It still answers reads from what it applied, but refuses a linearizable one: it cannot
    // learn that it has seen every acknowledged write.
    let local =
        sql_with_consistency(&http, alone, &root, "SELECT count(*) FROM c.kv", "local").await;
    assert_eq!(local["status"], "success", "{local}");
    let refused = sql_with_consistency(
        &http,
        alone,
        &root,
        "SELECT count(*) FROM c.kv",
        "linearizable",
    )
    .await;
    assert_eq!(refused["error"]["code"], "CLUSTER_UNAVAILABLE", "{refused}");
    cluster.signal(a, libc::SIGCONT);
    cluster.signal(b, libc::SIGCONT);
    // Back together, the cluster takes writes again and every node converges.
    let resume = Instant::now() + Duration::from_secs(20);
    assert!(
        insert_acknowledged(&http, &cluster.urls, &root, "c.kv", 50_000, resume).await,
        "no write after the partition healed"
    );
    let healed = converged(&http, &urls, &root, "c.kv").await;
    assert!(healed.contains(&50_000));
    assert!(after.iter().all(|id| healed.contains(id)));

    // Operations: a snapshot of every group; a transfer to a node that is not a member is
    // refused (transfers: see the membership test).
    let snap = ok(&http, urls[0], &root, "CLUSTER SNAPSHOT").await;
    assert!(snap.to_string().contains("Snapshots of 4 groups"), "{snap}");
    let transfer = sql(&http, urls[0], &root, "CLUSTER TRANSFER LEADER 7").await;
    assert_eq!(transfer["status"], "error", "{transfer}");
    let alice_user = sql(&http, urls[0], &alice, "CLUSTER SNAPSHOT").await;
    assert_eq!(
        alice_user["error"]["code"], "PERMISSION_DENIED",
        "{alice_user}"
    );
}

/// `q` on `url` with `x-kalamdb-consistency: <consistency>`.
pub(crate) async fn sql_with_consistency(
    http: &reqwest::Client,
    url: &str,
    token: &str,
    q: &str,
    consistency: &str,
) -> Value {
    let request = sql_request(http, url, token, q)
        .header("x-kalamdb-consistency", consistency)
        .timeout(Duration::from_secs(15));
    answer(request).await
}

/// The node ids `system.cluster` on `url` lists.
async fn member_ids(http: &reqwest::Client, url: &str, token: &str) -> Vec<i64> {
    let v = ok(
        http,
        url,
        token,
        "SELECT node_id FROM system.cluster ORDER BY node_id",
    )
    .await;
    first_column(&v)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_node_joins_and_another_leaves_with_the_data_complete() {
    let mut cluster = Cluster::up(3);
    let http = reqwest::Client::new();
    let first = cluster.urls[0].clone();
    let root = login(&http, &first, "root", PASSWORD).await;
    ok(&http, &first, &root, "CREATE NAMESPACE m").await;
    ok(
        &http,
        &first,
        &root,
        "CREATE TABLE m.kv (id BIGINT PRIMARY KEY, v TEXT) WITH (TYPE = 'SHARED')",
    )
    .await;
    ok(
        &http,
        &first,
        &root,
        "CREATE TABLE m.notes (id BIGINT PRIMARY KEY, v TEXT) WITH (TYPE = 'USER')",
    )
    .await;
    for id in 1..=30 {
        let url = &cluster.urls[id % 3];
        ok(
            &http,
            url,
            &root,
            &format!("INSERT INTO m.kv VALUES ({id}, 'v')"),
        )
        .await;
        ok(
            &http,
            url,
            &root,
            &format!("INSERT INTO m.notes VALUES ({id}, 'n')"),
        )
        .await;
    }
    ok(&http, &first, &root, "DELETE FROM m.kv WHERE id > 25").await;
    // Racing inserts of one key, while earlier inserts of the scope are still in flight on
    // the leader (keyed writers do not wait for them): exactly one wins.
    let racers: Vec<_> = (0..8)
        .map(|i| {
            let (http, url, root) = (http.clone(), cluster.urls[i % 3].clone(), root.clone());
            tokio::spawn(async move {
                let a = sql(
                    &http,
                    &url,
                    &root,
                    &format!("INSERT INTO m.kv VALUES ({}, 'a')", 200 + i),
                )
                .await;
                let b = sql(&http, &url, &root, "INSERT INTO m.kv VALUES (26, 'race')").await;
                assert_eq!(a["status"], "success", "{a}");
                b["status"] == "success"
            })
        })
        .collect();
    let mut won = 0;
    for racer in racers {
        won += usize::from(racer.await.unwrap());
    }
    assert_eq!(won, 1, "one of the racing inserts of one key wins");
    ok(&http, &first, &root, "DELETE FROM m.kv WHERE id > 25").await;

    // Bad membership statements are refused with clear errors, nothing changed.
    for (q, why) in [
        (
            "CLUSTER ADD NODE 0 RPC '127.0.0.1:1' API 'http://x'",
            "node ids start at 1",
        ),
        (
            "CLUSTER JOIN 9 RPC 'nowhere' API 'http://x'",
            "not an ip:port address",
        ),
        ("CLUSTER REMOVE NODE 9", "not found"),
    ] {
        let v = sql(&http, &first, &root, q).await;
        let message = v["error"]["message"].as_str().unwrap_or_default();
        assert!(message.to_lowercase().contains(why), "{q}: {v}");
    }

    // A fourth node joins: it gets every group's log and serves reads and writes.
    let fourth = cluster.add();
    let all: Vec<String> = cluster.urls.clone();
    let all: Vec<&str> = all.iter().map(String::as_str).collect();
    for url in &all {
        assert_eq!(
            member_ids(&http, url, &root).await,
            [1, 2, 3, 4],
            "on {url}"
        );
    }
    assert_eq!(
        converged(&http, &all, &root, "m.kv").await,
        (1..=25).collect::<Vec<i64>>()
    );
    assert_eq!(
        converged(&http, &all, &root, "m.notes").await,
        (1..=30).collect::<Vec<i64>>()
    );
    ok(
        &http,
        &fourth,
        &root,
        "INSERT INTO m.kv VALUES (100, 'from 4')",
    )
    .await;
    ok(
        &http,
        &fourth,
        &root,
        "INSERT INTO m.notes VALUES (100, 'from 4')",
    )
    .await;

    // Read-your-writes: a write through any member (forwarded to the leader) and a read on
    // that member right after see each other.
    for id in 500..520 {
        let url = all[id % all.len()];
        ok(
            &http,
            url,
            &root,
            &format!("INSERT INTO m.kv VALUES ({id}, 'ryw')"),
        )
        .await;
        let read = ok(
            &http,
            url,
            &root,
            &format!("SELECT id FROM m.kv WHERE id = {id}"),
        )
        .await;
        assert_eq!(first_column(&read), [id as i64], "{url}");
    }
    // Linearizable reads: a write acknowledged by one member is seen by a linearizable read
    // on any other member right after, with no marks passed along.
    for id in 520..540 {
        let (writer, reader) = (all[id % all.len()], all[(id + 1) % all.len()]);
        ok(
            &http,
            writer,
            &root,
            &format!("INSERT INTO m.kv VALUES ({id}, 'lin')"),
        )
        .await;
        let q = format!("SELECT id FROM m.kv WHERE id = {id}");
        let read = sql_with_consistency(&http, reader, &root, &q, "linearizable").await;
        assert_eq!(first_column(&read), [id as i64], "{reader}: {read}");
    }
    let bad = sql_with_consistency(&http, all[0], &root, "SELECT 1", "strong").await;
    assert_eq!(bad["error"]["code"], "INVALID_INPUT", "{bad}");

    // Answers carry the marks; a request asking for more than any member applied waits, then
    // is refused; bad marks are refused at once.
    let with_marks = |marks: &str| {
        http.post(format!("{}/v1/api/sql", all[2]))
            .bearer_auth(&root)
            .header("x-kalamdb-min-applied", marks)
            .json(&json!({ "sql": "SELECT 1" }))
    };
    let stamped = with_marks("0:1").send().await.unwrap();
    let marks = stamped.headers()["x-kalamdb-applied"]
        .to_str()
        .unwrap()
        .to_string();
    assert!(marks.starts_with("0:") && marks.contains(','), "{marks}");
    for (marks, code) in [
        ("0:999999999", "CLUSTER_UNAVAILABLE"),
        ("zero", "INVALID_INPUT"),
    ] {
        let refused = answer(with_marks(marks)).await;
        assert_eq!(refused["error"]["code"], code, "{marks}: {refused}");
    }

    // Every group's leadership moves to the new node while a client keeps writing.
    let writer = {
        let (http, urls, root) = (http.clone(), cluster.urls.clone(), root.clone());
        tokio::spawn(async move {
            let stop = Instant::now() + Duration::from_secs(30);
            for id in 300..330 {
                assert!(insert_acknowledged(&http, &urls, &root, "m.kv", id, stop).await);
            }
        })
    };
    let started = Instant::now();
    let moved = ok(&http, all[1], &root, "CLUSTER TRANSFER LEADER 4").await;
    eprintln!("leadership of every group moved in {:?}", started.elapsed());
    assert!(moved.to_string().contains("leads every group"), "{moved}");
    for group in 0..=USER_SHARDS + 1 {
        assert_eq!(
            leader_of(&http, all[1], &root, group).await,
            4,
            "group {group}"
        );
    }
    writer.await.unwrap();
    ok(&http, &first, &root, "DELETE FROM m.kv WHERE id >= 300").await;

    // The first node leaves (it led the meta group when the cluster formed, likely more).
    cluster.remove(1);
    let rest: Vec<&str> = all[1..].to_vec();
    for url in &rest {
        assert_eq!(member_ids(&http, url, &root).await, [2, 3, 4], "on {url}");
    }
    // Every group elects a leader among the members left.
    let until = Instant::now() + Duration::from_secs(15);
    for group in 0..=USER_SHARDS + 1 {
        while leader_of(&http, rest[0], &root, group).await == 1 {
            assert!(
                Instant::now() < until,
                "group {group} still led by the removed node"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    for id in 101..=110 {
        let url = rest[id % 3];
        ok(
            &http,
            url,
            &root,
            &format!("INSERT INTO m.kv VALUES ({id}, 'after')"),
        )
        .await;
        ok(
            &http,
            url,
            &root,
            &format!("INSERT INTO m.notes VALUES ({id}, 'after')"),
        )
        .await;
    }
    let mut kv: Vec<i64> = (1..=25).collect();
    kv.push(100);
    kv.extend(101..=110);
    assert_eq!(converged(&http, &rest, &root, "m.kv").await, kv);
    let mut notes: Vec<i64> = (1..=30).collect();
    notes.push(100);
    notes.extend(101..=110);
    assert_eq!(converged(&http, &rest, &root, "m.notes").await, notes);

    // `from` resumes across members: `_seq` values are the leader's on every replica, so a
    // subscriber that reconnects to another member gets exactly what it missed.
    let seq = |r: &Value| -> i64 { r["_seq"].as_str().unwrap().parse().unwrap() };
    let mut ws = Ws::connect_to(rest[0], Some(&root), "").await;
    assert_eq!(ws.next().await["type"], "auth_success");
    let rows = ws
        .subscribe_all("kv", "SELECT * FROM m.kv", json!({}))
        .await;
    assert_eq!(rows.len(), kv.len());
    let last = rows.iter().map(seq).max().unwrap();
    drop(ws);
    ok(
        &http,
        rest[2],
        &root,
        "INSERT INTO m.kv VALUES (400, 'new')",
    )
    .await;
    ok(
        &http,
        rest[2],
        &root,
        "UPDATE m.kv SET v = 'B' WHERE id = 101",
    )
    .await;
    ok(&http, rest[2], &root, "DELETE FROM m.kv WHERE id = 102").await;
    kv.retain(|id| *id != 102);
    kv.push(400);
    assert_eq!(converged(&http, &rest, &root, "m.kv").await, kv);
    let mut ws = Ws::connect_to(rest[1], Some(&root), "").await;
    assert_eq!(ws.next().await["type"], "auth_success");
    let missed = ws
        .subscribe_all("kv", "SELECT * FROM m.kv", json!({"from": last}))
        .await;
    let mut got: Vec<(i64, String)> = missed
        .iter()
        .map(|r| {
            (
                r["id"]
                    .as_str()
                    .map_or_else(|| r["id"].as_i64().unwrap(), |s| s.parse().unwrap()),
                r["v"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    got.sort();
    assert_eq!(got, [(101, "B".to_string()), (400, "new".to_string())]);
    assert!(missed.iter().all(|r| seq(r) > last));
    let gone = ws.next().await;
    assert_eq!(gone["change_type"], "delete", "{gone}");
    assert_eq!(
        gone["old_values"][0]["id"].to_string().trim_matches('"'),
        "102",
        "{gone}"
    );

    // DDL reaches live queries on every member: subscribers of m.notes on the members that
    // did not run the DROP get the end of their subscription too.
    let mut watchers = Vec::new();
    for url in &rest {
        let mut ws = Ws::connect_to(url, Some(&root), "").await;
        assert_eq!(ws.next().await["type"], "auth_success");
        let rows = ws
            .subscribe_all("n", "SELECT * FROM m.notes", json!({}))
            .await;
        assert_eq!(rows.len(), notes.len(), "{url}");
        watchers.push(ws);
    }
    ok(&http, rest[1], &root, "DROP TABLE m.notes").await;
    for (ws, url) in watchers.iter_mut().zip(&rest) {
        let msg = ws.next().await;
        assert_eq!(
            (&msg["type"], &msg["subscription_id"], &msg["code"]),
            (&json!("error"), &json!("n"), &json!("NOT_FOUND")),
            "{url}: {msg}"
        );
    }
}
