//! Topics on a three-process cluster: a topic created on one member, fed by a USER and a
//! SHARED table written through every member and by messages published on another, holds
//! every change exactly once, at the same offsets on every member, also across a move of the
//! meta group's leadership (which hands out the offsets); consumer groups fetch and
//! acknowledge through any member (their claims live on the meta leader), a flush into
//! shared storage leaves every member reading the same messages from segments, and a member
//! restarted and made the meta leader hands out offsets after the last ones.

use crate::cluster::{Cluster, PASSWORD, USER_SHARDS, leader_of, login, ok};
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

const PARTITIONS: u32 = 2;

/// `(offset, payload)` of every message of each partition, as `url` reads it (no group: from
/// its own store).
async fn log_on(
    http: &reqwest::Client,
    url: &str,
    token: &str,
) -> BTreeMap<u32, Vec<(i64, String)>> {
    let mut out = BTreeMap::new();
    for p in 0..PARTITIONS {
        let q = format!("CONSUME FROM app.events PARTITION {p} FROM EARLIEST LIMIT 10000");
        let v = ok(http, url, token, &q).await;
        let rows = v["results"][0]["rows"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        let messages = rows
            .iter()
            .map(|r| {
                let offset = r[2]
                    .as_i64()
                    .unwrap_or_else(|| r[2].as_str().unwrap().parse().unwrap());
                (offset, r[4].as_str().unwrap().to_string())
            })
            .collect();
        out.insert(p, messages);
    }
    out
}

/// Waits until every member reads `want` messages, then checks they read the same ones at the
/// same offsets, each offset once; returns the payloads.
async fn agreed(http: &reqwest::Client, urls: &[&str], token: &str, want: usize) -> Vec<String> {
    let until = Instant::now() + Duration::from_secs(20);
    loop {
        let mut logs = Vec::new();
        for url in urls {
            logs.push(log_on(http, url, token).await);
        }
        let counts: Vec<usize> = logs
            .iter()
            .map(|l| l.values().map(Vec::len).sum())
            .collect();
        if counts.iter().all(|c| *c == want) {
            for (url, log) in urls.iter().zip(&logs) {
                assert_eq!(log, &logs[0], "{url} reads another log than {}", urls[0]);
            }
            let mut payloads = Vec::new();
            for messages in logs[0].values() {
                for w in messages.windows(2) {
                    assert!(w[0].0 < w[1].0, "offsets in order, once: {messages:?}");
                }
                payloads.extend(messages.iter().map(|(_, p)| p.clone()));
            }
            return payloads;
        }
        assert!(
            Instant::now() < until,
            "members read {counts:?} messages, not {want} each"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// The ids of the table change payloads (`{"id": "…"}`) and of published ones (`{"n": …}`).
fn ids_of(payloads: &[String]) -> (Vec<i64>, Vec<i64>) {
    let (mut rows, mut published) = (Vec::new(), Vec::new());
    for p in payloads {
        let v: Value = serde_json::from_str(p).unwrap();
        // BIGINT ids are JSON strings (no precision lost in JavaScript).
        let id = v["id"].as_str().and_then(|s| s.parse().ok());
        match (id, v["n"].as_i64()) {
            (Some(id), _) => rows.push(id),
            (None, Some(n)) => published.push(n),
            _ => panic!("unexpected payload {p}"),
        }
    }
    rows.sort_unstable();
    published.sort_unstable();
    (rows, published)
}

/// One round of inserts: five rows per user and five SHARED rows, each with the member index
/// offset it goes through, the token and the statement.
fn round(
    tokens: &[String],
    root: &str,
    round: usize,
    next_id: &mut i64,
    want: &mut Vec<i64>,
) -> Vec<(usize, String, String)> {
    let mut statements = Vec::new();
    for (u, token) in tokens.iter().map(String::as_str).chain([root]).enumerate() {
        let table = if u < tokens.len() { "app.u" } else { "app.s" };
        for _ in 0..5 {
            let q = format!("INSERT INTO {table} VALUES ({next_id}, 'n')");
            statements.push((u + round, token.to_string(), q));
            want.push(*next_id);
            *next_id += 1;
        }
    }
    statements
}

/// The JSON answer of `POST /v1/api/topics/<path>` on `url`.
async fn post(http: &reqwest::Client, url: &str, token: &str, path: &str, body: &Value) -> Value {
    let sent = http
        .post(format!("{url}/v1/api/topics/{path}"))
        .bearer_auth(token)
        .json(body)
        .send();
    sent.await.unwrap().json().await.unwrap()
}

/// Runs the INSERT `q` through `urls[at % len]`, the next member after a failure, until one
/// acknowledges it (a duplicate key after a failure: an attempt of unknown outcome committed).
async fn write(http: &reqwest::Client, urls: &[String], at: usize, token: &str, q: &str) {
    let until = Instant::now() + Duration::from_secs(20);
    for attempt in 0.. {
        let url = &urls[(at + attempt) % urls.len()];
        let v = crate::cluster::sql(http, url, token, q).await;
        let message = v["error"]["message"].as_str().unwrap_or_default();
        if v["status"] == "success" || (attempt > 0 && message.contains("already exists")) {
            return;
        }
        assert!(Instant::now() < until, "{q}: {v}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A consume request of group `g` on partition 0 through `url`.
async fn group_fetch(http: &reqwest::Client, url: &str, token: &str, limit: u64) -> Vec<i64> {
    let body = json!({"topic_id": "app.events", "group_id": "g", "partition_id": 0,
                      "start": "Earliest", "limit": limit});
    let v = post(http, url, token, "consume", &body).await;
    v["messages"]
        .as_array()
        .unwrap_or_else(|| panic!("{v}"))
        .iter()
        .map(|m| m["offset"].as_i64().unwrap())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn topics_hold_every_change_once_at_the_same_offsets_on_every_member() {
    let cluster = Cluster::up(3);
    let http = reqwest::Client::new();
    let urls: Vec<&str> = cluster.urls.iter().map(String::as_str).collect();
    let root = login(&http, urls[0], "root", PASSWORD).await;
    let shared = tempfile::tempdir().unwrap();

    ok(&http, urls[1], &root, "CREATE NAMESPACE app").await;
    ok(
        &http,
        urls[2],
        &root,
        &format!(
            "CREATE STORAGE disk TYPE 'filesystem' PATH '{}'",
            shared.path().display()
        ),
    )
    .await;
    for (i, ddl) in [
        "CREATE USER TABLE app.u (id BIGINT PRIMARY KEY, note TEXT)",
        "CREATE SHARED TABLE app.s (id BIGINT PRIMARY KEY, name TEXT)",
        "CREATE TOPIC app.events PARTITIONS 2 WITH (STORAGE_ID = 'disk')",
        "ALTER TOPIC app.events ADD SOURCE app.u ON INSERT WITH (PAYLOAD = 'key')",
        "ALTER TOPIC app.events ADD SOURCE app.s ON INSERT WITH (PAYLOAD = 'key')",
    ]
    .iter()
    .enumerate()
    {
        // Through every member: topic statements run on the meta leader.
        ok(&http, urls[i % 3], &root, ddl).await;
    }
    // Users whose rows live in different user groups.
    let map = kalamdb_cluster::shard::ShardMap::new(USER_SHARDS as u32, 1);
    let mut names: Vec<&str> = Vec::new();
    for name in ["ann", "bob", "cat", "dan", "eve", "fay"] {
        if names
            .iter()
            .all(|n| map.user_group(n) != map.user_group(name))
        {
            names.push(name);
        }
    }
    assert!(names.len() >= 2, "users of two groups: {names:?}");
    let mut tokens = Vec::new();
    for name in &names {
        let q = format!("CREATE USER {name} WITH PASSWORD '{name}-pass-123' ROLE user");
        ok(&http, urls[0], &root, &q).await;
        tokens.push(login(&http, urls[1], name, &format!("{name}-pass-123")).await);
    }

    // Changes of three groups and messages published on a follower.
    let (mut want_rows, mut next_id) = (Vec::new(), 1i64);
    for (i, (at, token, q)) in round(&tokens, &root, 0, &mut next_id, &mut want_rows)
        .into_iter()
        .enumerate()
    {
        ok(&http, urls[(at + i) % 3], &token, &q).await;
    }
    let meta_leader = leader_of(&http, urls[0], &root, 0).await;
    let follower = urls[meta_leader % 3];
    let body = json!({"topic_id": "app.events",
                      "messages": [{"key": "a", "payload": {"n": 1}}, {"key": "b", "payload": {"n": 2}}]});
    let published = post(&http, follower, &root, "publish", &body).await;
    assert_eq!(
        published["offsets"].as_array().map(Vec::len),
        Some(2),
        "{published}"
    );

    let total = want_rows.len() + 2;
    let payloads = agreed(&http, &urls, &root, total).await;
    let (rows, published) = ids_of(&payloads);
    assert_eq!(rows, want_rows, "every row change once");
    assert_eq!(published, vec![1, 2]);

    // A consumer group through followers: claims and acknowledgements on the meta leader.
    let others: Vec<&str> = (1..=3)
        .filter(|n| *n != meta_leader)
        .map(|n| urls[n - 1])
        .collect();
    let first = group_fetch(&http, others[0], &root, 3).await;
    assert_eq!(first, vec![0, 1, 2]);
    let second = group_fetch(&http, others[1], &root, 3).await;
    assert_eq!(
        second,
        vec![3, 4, 5],
        "the group's next range, not the claimed one"
    );
    ok(
        &http,
        others[1],
        &root,
        "ACK app.events GROUP 'g' PARTITION 0 UPTO OFFSET 5",
    )
    .await;

    // The meta leadership moves while rows are written: every change still lands once.
    let target = others[0];
    let target_id = (1..=3).find(|n| urls[n - 1] == target).unwrap();
    let writes = round(&tokens, &root, 1, &mut next_id, &mut want_rows);
    let (http2, urls2) = (http.clone(), cluster.urls.clone());
    let writer = tokio::spawn(async move {
        for (i, (at, token, q)) in writes.into_iter().enumerate() {
            write(&http2, &urls2, at + i, &token, &q).await;
        }
    });
    ok(
        &http,
        urls[0],
        &root,
        &format!("CLUSTER TRANSFER LEADER {target_id} GROUP 0"),
    )
    .await;
    writer.await.unwrap();
    assert_eq!(leader_of(&http, urls[0], &root, 0).await, target_id);
    let total = want_rows.len() + 2;
    let payloads = agreed(&http, &urls, &root, total).await;
    assert_eq!(
        ids_of(&payloads).0,
        want_rows,
        "every row change once, across the move"
    );
    // The group goes on after its acknowledged offset on the new leader.
    assert_eq!(
        group_fetch(&http, urls[meta_leader - 1], &root, 2).await[0],
        6
    );

    // A flush on a member moves the messages into segments every member reads.
    ok(
        &http,
        urls[meta_leader - 1],
        &root,
        "STORAGE FLUSH TOPIC app.events",
    )
    .await;
    let segments = walkdir(shared.path());
    assert!(
        segments.iter().any(|f| f.ends_with(".parquet")),
        "segments in the shared storage: {segments:?}"
    );
    let after_flush = agreed(&http, &urls, &root, total).await;
    assert_eq!(
        after_flush, payloads,
        "the same messages, now from segments"
    );

    // A member killed while messages go on and restarted, then made the meta leader, hands
    // out the offsets after the last ones (not any it missed while it was away or opening).
    let victim = (1..=3).find(|n| *n != target_id).unwrap();
    cluster.signal(victim, libc::SIGKILL);
    let live: Vec<String> = (1..=3)
        .filter(|n| *n != victim)
        .map(|n| cluster.urls[n - 1].clone())
        .collect();
    for (i, (at, token, q)) in round(&tokens, &root, 2, &mut next_id, &mut want_rows)
        .into_iter()
        .enumerate()
    {
        // The victim's groups elect new leaders meanwhile.
        write(&http, &live, at + i, &token, &q).await;
    }
    cluster.restart(victim);
    ok(
        &http,
        urls[0],
        &root,
        &format!("CLUSTER TRANSFER LEADER {victim} GROUP 0"),
    )
    .await;
    assert_eq!(leader_of(&http, urls[0], &root, 0).await, victim);
    let body = json!({"topic_id": "app.events",
                      "messages": [{"key": "a", "payload": {"n": 3}}, {"key": "b", "payload": {"n": 4}}]});
    let published = post(&http, urls[target_id - 1], &root, "publish", &body).await;
    assert_eq!(
        published["offsets"].as_array().map(Vec::len),
        Some(2),
        "{published}"
    );
    for (i, (at, token, q)) in round(&tokens, &root, 3, &mut next_id, &mut want_rows)
        .into_iter()
        .enumerate()
    {
        ok(&http, urls[(at + i) % 3], &token, &q).await;
    }
    let payloads = agreed(&http, &urls, &root, want_rows.len() + 4).await;
    let (rows, published) = ids_of(&payloads);
    assert_eq!(rows, want_rows, "every row change once, none overwritten");
    assert_eq!(published, vec![1, 2, 3, 4]);
}

/// Every file under `dir`.
fn walkdir(dir: &std::path::Path) -> Vec<String> {
    let mut out = Vec::new();
    let mut todo = vec![dir.to_path_buf()];
    while let Some(d) = todo.pop() {
        for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            let path = e.path();
            if path.is_dir() {
                todo.push(path);
            } else {
                out.push(path.to_string_lossy().into_owned());
            }
        }
    }
    out
}
