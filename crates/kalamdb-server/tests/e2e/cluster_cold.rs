//! The cold tier of a three-process cluster on a shared S3 bucket (moto's server): a flush or
//! compaction statement on any member runs on the leaders of the scopes' groups, every member
//! reads the same segments (their manifests arrive through the groups' logs, and a restarted
//! member reads them from its own store), the flush's removal of hot versions is not a change
//! to live queries, a flushed row's update reaches followers' subscribers as an update, a
//! table on a node's own folder is refused, STREAM rows expire once, on their leaders,
//! without change events, and a backup taken on one member restores as a single server.

use crate::cluster::{
    Cluster, PASSWORD, USER_SHARDS, converged, ids, leader_of, login, ok, sql, sql_with_consistency,
};
use crate::live::Ws;
use crate::s3::{BUCKET, S3Server, parquet_keys};
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

/// The message of a statement's reply.
fn message(v: &Value) -> String {
    v["results"][0]["message"]
        .as_str()
        .unwrap_or_default()
        .to_string()
}

/// How many segments `url`'s cached manifest of `user`'s scope of `app.u` lists (root reads
/// `system.manifest`, `token`); 0 when it holds none.
async fn segments_of(http: &reqwest::Client, url: &str, token: &str, user: &str) -> usize {
    let q = format!(
        "SELECT manifest_json FROM system.manifest WHERE namespace_id = 'app' \
         AND table_name = 'u' AND scope = '{user}'"
    );
    let v = ok(http, url, token, &q).await;
    let Some(cell) = v["results"][0]["rows"][0].get(0) else {
        return 0;
    };
    let manifest: Value = match cell.as_str() {
        Some(text) => serde_json::from_str(text).unwrap(),
        None => cell.clone(),
    };
    manifest["segments"].as_array().map_or(0, Vec::len)
}

/// Waits until `url` holds a manifest of `user`'s scope with `want` segments (a member applies
/// a moment after the leader answered).
async fn wait_segments(http: &reqwest::Client, url: &str, token: &str, user: &str, want: usize) {
    let until = Instant::now() + Duration::from_secs(15);
    loop {
        let got = segments_of(http, url, token, user).await;
        if got == want {
            return;
        }
        assert!(
            Instant::now() < until,
            "{url} lists {got} segments of {user}, not {want}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_cluster_flushes_and_compacts_on_the_leaders_into_shared_storage() {
    let s3 = S3Server::start().await;
    s3.create_bucket(BUCKET).await;
    let cluster = Cluster::up(3);
    let http = reqwest::Client::new();
    let urls: Vec<&str> = cluster.urls.iter().map(String::as_str).collect();
    let root = login(&http, urls[0], "root", PASSWORD).await;

    ok(&http, urls[1], &root, &s3.create_lake()).await;
    ok(&http, urls[2], &root, "CREATE NAMESPACE app").await;
    for ddl in [
        "CREATE SHARED TABLE app.s (id BIGINT PRIMARY KEY, name TEXT) WITH (STORAGE_ID = 'lake')",
        "CREATE USER TABLE app.u (id INT PRIMARY KEY, note TEXT) WITH (STORAGE_ID = 'lake')",
        "CREATE SHARED TABLE app.here (id BIGINT PRIMARY KEY)",
    ] {
        ok(&http, urls[0], &root, ddl).await;
    }

    // Users whose rows live in both user groups.
    let map = kalamdb_cluster::shard::ShardMap::new(USER_SHARDS as u32, 1);
    let mut names: Vec<String> = Vec::new();
    for name in [
        "ann", "bob", "cat", "dan", "eve", "fay", "gus", "hal", "ivy", "jon",
    ] {
        let group = map.user_group(name);
        if names.iter().filter(|n| map.user_group(n) == group).count() < 2 {
            names.push(name.to_string());
        }
    }
    assert_eq!(names.len(), 4, "two users per user group: {names:?}");
    let mut tokens = Vec::new();
    for name in &names {
        ok(
            &http,
            urls[0],
            &root,
            &format!("CREATE USER {name} WITH PASSWORD '{name}-pass-123' ROLE user"),
        )
        .await;
        tokens.push(login(&http, urls[1], name, &format!("{name}-pass-123")).await);
    }
    for (u, token) in tokens.iter().enumerate() {
        for id in 1..=5 {
            let q = format!("INSERT INTO app.u VALUES ({id}, '{}-{id}')", names[u]);
            ok(&http, urls[(u + id) % 3], token, &q).await;
        }
    }
    for id in 1..=20 {
        let q = format!("INSERT INTO app.s VALUES ({id}, 's{id}')");
        ok(&http, urls[id % 3], &root, &q).await;
    }
    ok(&http, urls[0], &root, "INSERT INTO app.here VALUES (1)").await;

    // The first user's subscribers on every member, before the flush.
    let mut subscribers = Vec::new();
    for url in &urls {
        converged(&http, &urls, &tokens[0], "app.u").await;
        let mut ws = Ws::connect_to(url, Some(&tokens[0]), "").await;
        assert_eq!(ws.next().await["type"], "auth_success");
        let mut rows = BTreeMap::new();
        for r in ws
            .subscribe_all("u", "SELECT * FROM app.u", json!({}))
            .await
        {
            rows.insert(r["id"].as_i64().unwrap(), r);
        }
        assert_eq!(rows.len(), 5, "initial rows on {url}");
        subscribers.push((ws, rows));
    }

    // One statement on one member flushes every scope, each on its group's leader.
    let flushed = message(&ok(&http, urls[2], &root, "STORAGE FLUSH TABLE app.u").await);
    assert!(flushed.contains("Node "), "other members' lines: {flushed}");
    ok(&http, urls[1], &root, "STORAGE FLUSH TABLE app.s").await;
    for name in &names {
        let keys = s3.keys(&format!("kalam/app/u/{name}")).await;
        assert_eq!(parquet_keys(&keys).len(), 1, "{name}: {keys:?}\n{flushed}");
    }
    assert_eq!(parquet_keys(&s3.keys("kalam/app/s").await).len(), 1);

    // Every member reads every row from the segments, and plans with them.
    for (u, token) in tokens.iter().enumerate() {
        assert_eq!(
            converged(&http, &urls, token, "app.u").await,
            (1..=5).collect::<Vec<i64>>(),
            "{}",
            names[u]
        );
        for url in &urls {
            wait_segments(&http, url, &root, &names[u], 1).await;
        }
    }
    assert_eq!(
        converged(&http, &urls, &root, "app.s").await,
        (1..=20).collect::<Vec<i64>>()
    );
    // Moving rows to segments is not a change.
    for (node, (ws, _)) in subscribers.iter_mut().enumerate() {
        let msg = ws.try_next(Duration::from_millis(300)).await;
        assert!(msg.is_none(), "node {}: {msg:?}", node + 1);
    }

    // The hot versions are gone on every member: after the SHARED table's group moves to
    // another member, its flush finds nothing left to flush.
    let shared_group = map.shared_group("app.s");
    let before = leader_of(&http, urls[0], &root, shared_group).await;
    let target = before % 3 + 1;
    ok(
        &http,
        urls[0],
        &root,
        &format!("CLUSTER TRANSFER LEADER {target}"),
    )
    .await;
    assert_eq!(leader_of(&http, urls[0], &root, shared_group).await, target);
    let again = message(&ok(&http, urls[0], &root, "STORAGE FLUSH ALL IN app").await);
    for line in again.lines().filter(|l| l.contains("Flushed ")) {
        assert!(line.contains("Flushed 0 row(s)"), "{again}");
    }
    assert!(again.contains("Skipped: "), "app.here is skipped: {again}");

    // A flushed row's update and delete through any member reach every subscriber as an
    // update (the replaced version read from its segment) and a delete.
    ok(
        &http,
        urls[1],
        &tokens[0],
        "UPDATE app.u SET note = 'changed' WHERE id = 1",
    )
    .await;
    ok(&http, urls[2], &tokens[0], "DELETE FROM app.u WHERE id = 2").await;
    let fresh = converged(&http, &urls, &tokens[0], "app.u").await;
    assert_eq!(fresh, vec![1, 3, 4, 5]);
    for (node, (ws, rows)) in subscribers.iter_mut().enumerate() {
        let update = ws.next().await;
        assert_eq!(
            update["change_type"],
            "update",
            "node {}: {update}",
            node + 1
        );
        assert_eq!(update["rows"][0]["note"], "changed", "node {}", node + 1);
        crate::live::apply(rows, &update);
        let delete = ws.next().await;
        assert_eq!(
            delete["change_type"],
            "delete",
            "node {}: {delete}",
            node + 1
        );
        crate::live::apply(rows, &delete);
        assert_eq!(rows.keys().copied().collect::<Vec<_>>(), fresh);
    }

    // A second segment, then a compaction: every member plans with the merged one.
    ok(&http, urls[0], &root, "STORAGE FLUSH TABLE app.u").await;
    for url in &urls {
        wait_segments(&http, url, &root, &names[0], 2).await;
    }
    ok(&http, urls[1], &root, "STORAGE COMPACT TABLE app.u").await;
    for url in &urls {
        wait_segments(&http, url, &root, &names[0], 1).await;
        let v = ok(
            &http,
            url,
            &tokens[0],
            "SELECT note FROM app.u WHERE id = 1",
        )
        .await;
        assert_eq!(v["results"][0]["rows"][0][0], "changed", "{url}");
    }

    // A restarted member reads its manifests from its own store (replicated records).
    cluster.signal(3, libc::SIGKILL);
    cluster.restart(3);
    for (u, token) in tokens.iter().enumerate() {
        let want: Vec<i64> = if u == 0 {
            fresh.clone()
        } else {
            (1..=5).collect()
        };
        assert_eq!(
            ids(&http, urls[2], token, "app.u").await,
            want,
            "{}",
            names[u]
        );
    }
    wait_segments(&http, urls[2], &root, &names[0], 1).await;

    // A table on a node's own folder is not flushed in a cluster.
    let refused = sql(&http, urls[0], &root, "STORAGE FLUSH TABLE app.here").await;
    assert_eq!(refused["status"], "error", "{refused}");
    assert_eq!(refused["error"]["code"], "UNSUPPORTED", "{refused}");

    // STREAM rows expire on the leaders of their users' groups: each row is evicted once
    // (the members' eviction jobs add up to every row), and a replica's subscribers hear
    // nothing of it, as on the leader.
    ok(
        &http,
        urls[0],
        &root,
        "CREATE STREAM TABLE app.ev (id INT, kind TEXT) WITH (TTL_SECONDS = 3)",
    )
    .await;
    let evicted_before = evicted(&http, &urls, &root).await;
    // Linearizable: a member that has not applied the CREATE yet waits for it.
    for (u, token) in tokens.iter().enumerate() {
        for id in 1..=3 {
            let q = format!("INSERT INTO app.ev VALUES ({id}, 'k')");
            let url = urls[(u + id) % 3];
            let done = sql_with_consistency(&http, url, token, &q, "linearizable").await;
            assert_eq!(done["status"], "success", "{q} on {url}: {done}");
        }
    }
    let mut watchers = Vec::new();
    for url in &urls {
        let mut ws = Ws::connect_to(url, Some(&tokens[0]), "").await;
        assert_eq!(ws.next().await["type"], "auth_success");
        ws.subscribe_all("ev", "SELECT * FROM app.ev", json!({}))
            .await;
        watchers.push(ws);
    }
    let until = Instant::now() + Duration::from_secs(20);
    loop {
        let n = evicted(&http, &urls, &root).await - evicted_before;
        if n == 12 {
            break;
        }
        assert!(
            n < 12 && Instant::now() < until,
            "{n} STREAM rows evicted, not 12"
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    for (node, ws) in watchers.iter_mut().enumerate() {
        let msg = ws.try_next(Duration::from_millis(300)).await;
        assert!(msg.is_none(), "node {}: {msg:?}", node + 1);
    }
    for url in &urls {
        assert!(ids(&http, url, &tokens[0], "app.ev").await.is_empty());
    }

    // A backup taken on one member (every member pauses its flushes for the copy) restores
    // into a single server's folder that answers as the cluster did: hot rows from the
    // member's store, flushed ones from the shared bucket.
    let mut expected = vec![ids(&http, urls[0], &root, "app.s").await];
    for token in &tokens {
        expected.push(ids(&http, urls[0], token, "app.u").await);
    }
    let backups = tempfile::tempdir().unwrap();
    let target = backups.path().join("b");
    let done = message(
        &ok(
            &http,
            urls[1],
            &root,
            &format!("BACKUP DATABASE TO '{}'", target.display()),
        )
        .await,
    );
    assert!(done.contains("Backup written"), "{done}");
    let data = backups.path().join("data");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_kalamdb-server"))
        .args(["restore", "--keep-s3-storages", "--from"])
        .arg(&target)
        .arg("--data-dir")
        .arg(&data)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let dir = tempfile::TempDir::new_in(backups.path()).unwrap();
    std::fs::remove_dir(dir.path()).unwrap();
    std::fs::rename(&data, dir.path()).unwrap();
    let single = crate::support::TestServer::start_in(dir).await;
    let (shttp, base) = (single.http.clone(), single.base.clone());
    let sroot = single.root_token().await;
    let mut restored = vec![ids(&shttp, &base, &sroot, "app.s").await];
    for name in &names {
        let token = login(&shttp, &base, name, &format!("{name}-pass-123")).await;
        restored.push(ids(&shttp, &base, &token, "app.u").await);
    }
    assert_eq!(restored, expected);
    assert!(expected.iter().all(|ids| !ids.is_empty()), "{expected:?}");
}

/// STREAM rows the members' eviction jobs removed, all together (each member lists its own).
async fn evicted(http: &reqwest::Client, urls: &[&str], token: &str) -> i64 {
    let mut total = 0;
    for url in urls {
        let v = ok(
            http,
            url,
            token,
            "SELECT SUM(rows) FROM system.jobs WHERE job_type = 'stream_eviction'",
        )
        .await;
        let cell = &v["results"][0]["rows"][0][0];
        total += cell
            .as_i64()
            .or_else(|| cell.as_str().and_then(|s| s.parse().ok()))
            .unwrap_or(0);
    }
    total
}
