//! Topics fed by table changes: management statements, the messages a source appends (key,
//! full and diff payloads, the owning user, commit order, transactions), CONSUME and ACK over
//! SQL, consumer groups' claims and committed offsets (kept across a restart), the SDKs' HTTP
//! routes, and what is refused.

use crate::support::{TestServer, rows};
use base64::Engine;
use serde_json::{Value, json};

async fn http(s: &TestServer, token: &str, route: &str, body: Value) -> (u16, Value) {
    let resp = s
        .http
        .post(format!("{}/v1/api/topics/{route}", s.base))
        .bearer_auth(token)
        .json(&body)
        .send()
        .await
        .unwrap();
    (resp.status().as_u16(), resp.json().await.unwrap())
}

/// `(offset, op, user, payload JSON)` of a CONSUME result.
fn consumed(r: &Value) -> Vec<(i64, String, Value, Value)> {
    rows(r)
        .iter()
        .map(|row| {
            (
                row[2].as_str().unwrap().parse().unwrap(),
                row[7].as_str().unwrap().to_string(),
                row[6].clone(),
                serde_json::from_str(row[4].as_str().unwrap()).unwrap(),
            )
        })
        .collect()
}

/// A fresh server on which root ran `setup`; with root's token.
async fn server_with(setup: &str) -> (TestServer, String) {
    let s = TestServer::start().await;
    let root = s.root_token().await;
    s.ok(&root, setup).await;
    (s, root)
}

#[tokio::test]
async fn table_changes_feed_topics_that_groups_consume() {
    let (s, root) = server_with(
        "CREATE NAMESPACE app; CREATE USER TABLE app.orders (id INT PRIMARY KEY, item TEXT, qty INT); \
         CREATE TOPIC app.events; \
         ALTER TOPIC app.events ADD SOURCE app.orders ON INSERT; \
         ALTER TOPIC app.events ADD SOURCE app.orders ON UPDATE WITH (PAYLOAD = 'diff'); \
         ALTER TOPIC app.events ADD SOURCE app.orders ON DELETE WITH (PAYLOAD = 'key'); \
         CREATE USER svc WITH PASSWORD 'svc-pass-1234' ROLE service",
    )
    .await;
    let users = s.users_with_tokens(&root, &["ada"]).await;
    let ada = &users[0];
    let svc = s.token("svc", "svc-pass-1234").await;
    s.ok(ada, "INSERT INTO app.orders VALUES (1, 'tea', 2)")
        .await;
    s.ok(ada, "UPDATE app.orders SET qty = 3 WHERE id = 1")
        .await;
    s.ok(ada, "DELETE FROM app.orders WHERE id = 1").await;
    s.ok(
        ada,
        "BEGIN; INSERT INTO app.orders VALUES (2, 'cake', 1); INSERT INTO app.orders VALUES (3, 'pie', 1); COMMIT",
    )
    .await;
    // A rolled-back transaction appends nothing.
    s.ok(
        ada,
        "BEGIN; INSERT INTO app.orders VALUES (4, 'x', 1); ROLLBACK",
    )
    .await;

    let r = s
        .ok(&svc, "CONSUME FROM app.events FROM EARLIEST LIMIT 10")
        .await;
    let got = consumed(&r);
    let ops: Vec<(i64, &str)> = got.iter().map(|(o, op, _, _)| (*o, op.as_str())).collect();
    assert_eq!(
        ops,
        vec![
            (0, "insert"),
            (1, "update"),
            (2, "delete"),
            (3, "insert"),
            (4, "insert")
        ]
    );
    assert!(got.iter().all(|(_, _, user, _)| *user == json!("ada")));
    assert_eq!(
        got[0].3,
        json!({"id": 1, "item": "tea", "qty": 2, "_table": "app.orders"})
    );
    assert_eq!(
        got[1].3,
        json!({"new": {"id": 1, "qty": 3}, "old": {"id": 1, "qty": 2}, "_table": "app.orders"})
    );
    assert_eq!(got[2].3, json!({"id": 1}));
    assert_eq!(rows(&r)[0][3], json!("1"), "the key is the primary key");

    // Groups: a fetch claims what it returns; another group reads everything.
    let offsets = |r: &Value| consumed(r).iter().map(|m| m.0).collect::<Vec<_>>();
    let fetch = |g: &str| format!("CONSUME FROM app.events GROUP '{g}' FROM EARLIEST LIMIT 2");
    assert_eq!(offsets(&s.ok(&svc, &fetch("g")).await), vec![0, 1]);
    assert_eq!(offsets(&s.ok(&svc, &fetch("g")).await), vec![2, 3]);
    assert_eq!(offsets(&s.ok(&svc, &fetch("h")).await), vec![0, 1]);
    s.ok(&svc, "ACK app.events GROUP 'g' UPTO OFFSET 3").await;
    s.ok(&svc, "ACK app.events GROUP 'g' UPTO OFFSET 1").await;
    let r = s
        .ok(
            &root,
            "SELECT group_id, partition_id, last_acked_offset FROM system.topic_offsets",
        )
        .await;
    assert_eq!(rows(&r), vec![vec![json!("g"), json!(0), json!("3")]]);

    // The SDK's routes: base64 payloads, next_offset, acks that only move forward.
    let (status, body) = http(
        &s,
        &svc,
        "consume",
        json!({"topic_id": "app.events", "group_id": "sdk", "start": "Earliest", "limit": 3,
               "partition_id": 0, "timeout_seconds": 30}),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        (body["next_offset"].clone(), body["has_more"].clone()),
        (json!(3), json!(true))
    );
    let first = &body["messages"][0];
    assert_eq!(
        (
            first["offset"].clone(),
            first["op"].clone(),
            first["user"].clone(),
            first["key"].clone()
        ),
        (json!(0), json!("Insert"), json!("ada"), json!("1"))
    );
    let payload = base64::engine::general_purpose::STANDARD
        .decode(first["payload"].as_str().unwrap())
        .unwrap();
    assert_eq!(
        serde_json::from_slice::<Value>(&payload).unwrap()["item"],
        "tea"
    );
    let (status, body) = http(
        &s,
        &svc,
        "ack",
        json!({"topic_id": "app.events", "group_id": "sdk", "partition_id": 0, "upto_offset": 2}),
    )
    .await;
    assert_eq!(
        (status, body),
        (200, json!({"success": true, "acknowledged_offset": 2}))
    );

    // After a restart a group resumes right after its committed offset, whatever it asks.
    let s = s.restart().await;
    let svc = s.token("svc", "svc-pass-1234").await;
    let (_, body) = http(
        &s,
        &svc,
        "consume",
        json!({"topic_id": "app.events", "group_id": "sdk", "start": "Latest", "limit": 10}),
    )
    .await;
    let resumed: Vec<Value> = body["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["offset"].clone())
        .collect();
    assert_eq!(resumed, vec![json!(3), json!(4)]);
    assert_eq!(body["next_offset"], json!(5));
    // Offsets go on after a restart.
    let ada = s.token("ada", "ada-pass-123").await;
    s.ok(&ada, "INSERT INTO app.orders VALUES (5, 'jam', 1)")
        .await;
    let r = s
        .ok(&svc, "CONSUME FROM app.events FROM OFFSET 5 LIMIT 10")
        .await;
    assert_eq!(offsets(&r), vec![5]);

    // Plain users read only their own rows' messages, in groups of their own.
    let bob = s.users_with_tokens(&root, &["bob"]).await.remove(0);
    s.ok(&bob, "INSERT INTO app.orders VALUES (1, 'bun', 1)")
        .await;
    let r = s
        .ok(&bob, "CONSUME FROM app.events FROM EARLIEST LIMIT 100")
        .await;
    let mine = consumed(&r);
    assert_eq!(mine.len(), 1, "{r}");
    assert_eq!((mine[0].0, mine[0].2.clone()), (6, json!("bob")));
    let r = s
        .ok(&ada, "CONSUME FROM app.events FROM EARLIEST LIMIT 100")
        .await;
    assert_eq!(consumed(&r).len(), 6);
    assert!(consumed(&r).iter().all(|m| m.2 == json!("ada")));
    let r = s
        .ok(
            &bob,
            "CONSUME FROM app.events GROUP 'g' FROM EARLIEST LIMIT 10",
        )
        .await;
    assert_eq!(offsets(&r), vec![6]);
    s.ok(&bob, "ACK app.events GROUP 'g' UPTO OFFSET 6").await;
    let r = s
        .ok(
            &root,
            "SELECT group_id, last_acked_offset FROM system.topic_offsets ORDER BY group_id",
        )
        .await;
    assert_eq!(
        rows(&r),
        vec![
            vec![json!("bob/g"), json!("6")],
            vec![json!("g"), json!("3")],
            vec![json!("sdk"), json!("2")]
        ]
    );
    let (status, _) = http(
        &s,
        &bob,
        "publish",
        json!({"topic_id": "app.events", "messages": [{"payload": 1}]}),
    )
    .await;
    assert_eq!(status, 403);

    // Refused: unknown topics, acks past the end, absurd limits.
    let (status, _) = http(&s, &svc, "consume", json!({"topic_id": "app.nope"})).await;
    assert_eq!(status, 404);
    for sql in [
        "ACK app.events GROUP 'g' UPTO OFFSET 99",
        "CONSUME FROM app.events LIMIT 0",
        "CONSUME FROM app.events LIMIT 1000000",
        "CONSUME FROM app.events PARTITION 7",
        "CONSUME FROM app.nope",
    ] {
        let (status, _, msg) = s.err(&svc, sql).await;
        assert_eq!(status, 400, "{sql}: {msg}");
    }
    let (status, code, _) = s.err(&svc, "CREATE TOPIC app.more").await;
    assert_eq!((status, code.as_str()), (403, "PERMISSION_DENIED"));

    // Dropping the source table stops the feed; the messages stay.
    s.ok(&root, "DROP TABLE app.orders").await;
    let r = s
        .ok(
            &root,
            "SELECT routes FROM system.topics WHERE topic_id = 'app.events'",
        )
        .await;
    assert_eq!(rows(&r), vec![vec![json!("[]")]]);
    let r = s
        .ok(&svc, "CONSUME FROM app.events FROM EARLIEST LIMIT 100")
        .await;
    assert_eq!(consumed(&r).len(), 7);
    s.ok(&root, "DROP TOPIC app.events").await;
    let r = s.ok(&root, "SELECT count(*) FROM system.topics").await;
    assert_eq!(rows(&r), vec![vec![json!("0")]]);
}

#[tokio::test]
async fn publishing_long_polls_and_claims_that_expire() {
    let s = TestServer::start_with(|c| c.engine.topics.visibility_timeout_secs = 1).await;
    let root = s.root_token().await;
    s.ok(
        &root,
        "CREATE NAMESPACE app; CREATE TOPIC app.q PARTITIONS 2",
    )
    .await;
    // Direct publishing: keys spread over the partitions, offsets gap-free in each.
    let messages: Vec<Value> = (0..10)
        .map(|i| json!({"key": format!("k{i}"), "payload": {"n": i}}))
        .collect();
    let (status, body) = http(
        &s,
        &root,
        "publish",
        json!({"topic_id": "app.q", "messages": messages}),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let placed = body["offsets"].as_array().unwrap();
    for p in 0..2u64 {
        let offsets: Vec<u64> = placed
            .iter()
            .filter(|o| o["partition_id"] == json!(p))
            .map(|o| o["offset"].as_u64().unwrap())
            .collect();
        assert_eq!(offsets, (0..offsets.len() as u64).collect::<Vec<_>>());
    }
    let p0 = placed[0]["partition_id"].as_u64().unwrap();

    // A long-poll with nothing to read returns the next message as soon as it is appended.
    let waiting = {
        let (http, base, token) = (s.http.clone(), s.base.clone(), root.clone());
        tokio::spawn(async move {
            http.post(format!("{base}/v1/api/topics/consume"))
                .bearer_auth(token)
                .json(
                    &json!({"topic_id": "app.q", "partition_id": p0, "start": "Latest",
                              "timeout_seconds": 20}),
                )
                .send()
                .await
                .unwrap()
                .json::<Value>()
                .await
                .unwrap()
        })
    };
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    http(
        &s,
        &root,
        "publish",
        json!({"topic_id": "app.q", "messages": [{"key": "k0", "payload": "late"}]}),
    )
    .await;
    let body = waiting.await.unwrap();
    let got = &body["messages"][0];
    let payload = base64::engine::general_purpose::STANDARD
        .decode(got["payload"].as_str().unwrap())
        .unwrap();
    assert_eq!(payload, b"\"late\"", "{body}");

    // Two members of a group never get the same offsets while claims stand; an unacked claim
    // is handed out again after the visibility timeout.
    let fetch = |limit: u64| {
        json!({"topic_id": "app.q", "group_id": "w", "partition_id": p0, "start": "Earliest",
               "limit": limit})
    };
    let offsets = |b: &Value| -> Vec<u64> {
        b["messages"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| m["offset"].as_u64().unwrap())
            .collect()
    };
    let (_, a) = http(&s, &root, "consume", fetch(2)).await;
    let (_, b) = http(&s, &root, "consume", fetch(2)).await;
    assert_eq!((offsets(&a), offsets(&b)), (vec![0, 1], vec![2, 3]));
    http(
        &s,
        &root,
        "ack",
        json!({"topic_id": "app.q", "group_id": "w", "partition_id": p0, "upto_offset": 1}),
    )
    .await;
    tokio::time::sleep(std::time::Duration::from_millis(1300)).await;
    let (_, again) = http(&s, &root, "consume", fetch(2)).await;
    assert_eq!(
        offsets(&again),
        vec![2, 3],
        "the unacked claim comes back, not the acked one"
    );

    // CLEAR TOPIC removes the messages; offsets go on from where they were, across a restart.
    let before = s.ok(&root, "DESCRIBE TOPIC app.q").await;
    let r = s.ok(&root, "CLEAR TOPIC app.q").await;
    assert!(
        r["message"].as_str().unwrap().contains("11 message(s)"),
        "{r}"
    );
    let s = s.restart().await;
    let root = s.root_token().await;
    let r = s
        .ok(&root, "CONSUME FROM app.q PARTITION 0 FROM EARLIEST")
        .await;
    assert!(rows(&r).is_empty(), "{r}");
    assert_eq!(
        rows(&s.ok(&root, "DESCRIBE TOPIC app.q").await),
        rows(&before)
    );
    let (_, body) = http(
        &s,
        &root,
        "publish",
        json!({"topic_id": "app.q", "messages": [{"key": "k0", "payload": 1}]}),
    )
    .await;
    let next_of_p0 = rows(&before)[p0 as usize][1].clone();
    assert_eq!(
        json!(body["offsets"][0]["offset"].as_u64().unwrap().to_string()),
        next_of_p0
    );
}

#[tokio::test]
async fn retention_removes_old_messages_but_not_unacked_ones() {
    let s = TestServer::start_with(|c| c.engine.topics.retention_interval_secs = 1).await;
    let root = s.root_token().await;
    s.ok(
        &root,
        "CREATE NAMESPACE app; CREATE TOPIC app.kept WITH (RETENTION_SECONDS = 1); \
         CREATE TOPIC app.dropped WITH (RETENTION_SECONDS = 1, RETENTION_KEEPS_UNACKED = false)",
    )
    .await;
    for topic in ["app.kept", "app.dropped"] {
        let messages: Vec<Value> = (0..3).map(|i| json!({"payload": i})).collect();
        http(
            &s,
            &root,
            "publish",
            json!({"topic_id": topic, "messages": messages}),
        )
        .await;
        s.ok(&root, &format!("ACK {topic} GROUP 'g' UPTO OFFSET 0"))
            .await;
    }
    // The job runs every second; messages are a second old after at most two runs.
    let left = |topic: &'static str| {
        let (s, root) = (&s, &root);
        async move {
            let r = s
                .ok(
                    root,
                    &format!("CONSUME FROM {topic} FROM EARLIEST LIMIT 10"),
                )
                .await;
            consumed(&r).iter().map(|m| m.0).collect::<Vec<_>>()
        }
    };
    let mut done = false;
    for _ in 0..50 {
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
        if left("app.dropped").await.is_empty() && left("app.kept").await == vec![1, 2] {
            done = true;
            break;
        }
    }
    assert!(
        done,
        "kept: {:?}, dropped: {:?}",
        left("app.kept").await,
        left("app.dropped").await
    );
    let r = s
        .ok(
            &root,
            "SELECT count(*) FROM system.jobs WHERE job_type = 'topic_retention'",
        )
        .await;
    assert_ne!(rows(&r)[0][0], json!("0"));
}

#[tokio::test]
async fn source_filters_choose_the_changes_a_topic_receives() {
    let (s, root) = server_with(
        "CREATE NAMESPACE app; CREATE SHARED TABLE app.orders (id INT PRIMARY KEY, qty INT, item TEXT); \
         CREATE TOPIC app.big; \
         ALTER TOPIC app.big ADD SOURCE app.orders ON INSERT WHERE qty >= 10 AND item <> 'gift'; \
         ALTER TOPIC app.big ADD SOURCE app.orders ON DELETE WHERE qty >= 10 WITH (PAYLOAD = 'key')",
    )
    .await;
    s.ok(
        &root,
        "INSERT INTO app.orders VALUES (1, 5, 'tea'), (2, 10, 'tea'), (3, 50, 'gift'), (4, 12, NULL); \
         DELETE FROM app.orders WHERE id IN (1, 2)",
    )
    .await;
    let r = s
        .ok(&root, "CONSUME FROM app.big FROM EARLIEST LIMIT 10")
        .await;
    let got: Vec<(String, Value)> = consumed(&r)
        .into_iter()
        .map(|(_, op, _, payload)| (op, payload["id"].clone()))
        .collect();
    // Row 4's item is NULL: `item <> 'gift'` is unknown, so it does not pass.
    assert_eq!(
        got,
        vec![("insert".into(), json!(2)), ("delete".into(), json!(2))]
    );
    let r = s.ok(&root, "SELECT routes FROM system.topics").await;
    assert!(
        rows(&r)[0][0].as_str().unwrap().contains("qty >= 10"),
        "{r}"
    );
    let (status, code, msg) = s
        .err(
            &root,
            "ALTER TOPIC app.big ADD SOURCE app.orders ON UPDATE WHERE nope = 1",
        )
        .await;
    assert_eq!((status, code.as_str()), (400, "INVALID_SQL"), "{msg}");
}

/// The Parquet segment files under `dir` (a topic partition's folder).
fn segment_files(dir: &std::path::Path) -> Vec<String> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut names: Vec<String> = entries
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".parquet"))
        .collect();
    names.sort();
    names
}

/// Every message of `partition` from the earliest, in fetches of `limit`: (offset, payload).
async fn all_of(
    s: &TestServer,
    token: &str,
    topic: &str,
    partition: u32,
    limit: u32,
) -> Vec<(i64, Value)> {
    let mut out: Vec<(i64, Value)> = Vec::new();
    loop {
        let from = out
            .last()
            .map_or("EARLIEST".to_string(), |(o, _)| (o + 1).to_string());
        let r = s
            .ok(
                token,
                &format!("CONSUME FROM {topic} PARTITION {partition} FROM {from} LIMIT {limit}"),
            )
            .await;
        let got = consumed(&r);
        if got.is_empty() {
            return out;
        }
        out.extend(got.into_iter().map(|(o, _, _, p)| (o, p)));
    }
}

/// The `id` of a row payload (BIGINT travels as a JSON string).
fn id_of(payload: &Value) -> i64 {
    let id = &payload["id"];
    id.as_i64()
        .or_else(|| id.as_str().and_then(|s| s.parse().ok()))
        .unwrap_or_else(|| panic!("no id in {payload}"))
}

/// Both partitions of `app.t` hold offsets 0.. without gaps, and between them the rows
/// `0..rows` once each.
async fn every_id_once_in_offset_order(s: &TestServer, root: &str, rows: i64) {
    let mut ids = Vec::new();
    for p in 0..2 {
        let read = all_of(s, root, "app.t", p, 700).await;
        let offsets: Vec<i64> = read.iter().map(|(o, _)| *o).collect();
        assert_eq!(
            offsets,
            (0..read.len() as i64).collect::<Vec<_>>(),
            "partition {p}"
        );
        ids.extend(read.iter().map(|(_, v)| id_of(v)));
    }
    ids.sort_unstable();
    assert_eq!(ids, (0..rows).collect::<Vec<_>>());
}

#[tokio::test]
async fn flushed_messages_are_consumed_with_hot_ones_across_a_restart() {
    let (s, root) = server_with(
        "CREATE NAMESPACE app; CREATE TOPIC app.t PARTITIONS 2; \
         CREATE SHARED TABLE app.src (id BIGINT PRIMARY KEY, v TEXT); \
         ALTER TOPIC app.t ADD SOURCE app.src ON INSERT",
    )
    .await;
    let insert = |from: i64, to: i64| {
        let values: Vec<String> = (from..to).map(|i| format!("({i}, 'v{i}')")).collect();
        format!("INSERT INTO app.src (id, v) VALUES {}", values.join(", "))
    };
    s.ok(&root, &insert(0, 6_000)).await;
    let r = s.ok(&root, "STORAGE FLUSH TOPIC app.t").await;
    assert!(r.to_string().contains("Job ID"), "{r}");
    let dirs: Vec<_> = (0..2)
        .map(|p| {
            s.dir
                .path()
                .join(format!("storage/system/topics/app.t/p{p}"))
        })
        .collect();
    assert!(dirs.iter().all(|d| segment_files(d).len() == 1), "{dirs:?}");
    // Hot messages after the flushed ones; a flush of nothing changes nothing.
    s.ok(&root, &insert(6_000, 6_500)).await;

    every_id_once_in_offset_order(&s, &root, 6_500).await;

    // A group reads across both tiers: every message once, in fetches that straddle them.
    let mut seen = Vec::new();
    for p in 0..2u32 {
        loop {
            let r = s
                .ok(
                    &root,
                    &format!("CONSUME FROM app.t GROUP 'g' PARTITION {p} FROM EARLIEST LIMIT 999"),
                )
                .await;
            let got = consumed(&r);
            let Some(last) = got.last().map(|m| m.0) else {
                break;
            };
            seen.extend(got.iter().map(|m| id_of(&m.3)));
            s.ok(
                &root,
                &format!("ACK app.t GROUP 'g' PARTITION {p} UPTO OFFSET {last}"),
            )
            .await;
        }
    }
    seen.sort_unstable();
    assert_eq!(seen, (0..6_500).collect::<Vec<_>>());

    // After a restart the segments are read again and offsets go on after both tiers.
    let s = s.restart().await;
    let root = s.root_token().await;
    every_id_once_in_offset_order(&s, &root, 6_500).await;
    s.ok(&root, "STORAGE FLUSH TOPIC app.t").await;
    assert!(dirs.iter().all(|d| segment_files(d).len() == 2));
    s.ok(&root, &insert(6_500, 6_510)).await;
    let ends: Vec<i64> = {
        let mut ends = Vec::new();
        for p in 0..2 {
            ends.push(
                all_of(&s, &root, "app.t", p, 10_000)
                    .await
                    .last()
                    .unwrap()
                    .0,
            );
        }
        ends
    };
    let total: i64 = ends.iter().map(|e| e + 1).sum();
    assert_eq!(total, 6_510);

    // CLEAR TOPIC empties both tiers; offsets do not go back.
    s.ok(&root, "CLEAR TOPIC app.t").await;
    assert!(dirs.iter().all(|d| segment_files(d).is_empty()));
    s.ok(&root, &insert(7_000, 7_010)).await;
    let mut after = Vec::new();
    for p in 0..2 {
        let read = all_of(&s, &root, "app.t", p, 100).await;
        assert!(
            read.iter().all(|(o, _)| *o > ends[p as usize]),
            "partition {p}: {read:?}"
        );
        after.extend(read);
    }
    assert_eq!(after.len(), 10);

    // DROP TOPIC removes its files.
    s.ok(&root, "STORAGE FLUSH TOPIC app.t; DROP TOPIC app.t")
        .await;
    assert!(
        dirs.iter()
            .all(|d| !d.join("manifest.json").exists() && segment_files(d).is_empty())
    );
}

#[tokio::test]
async fn retention_by_bytes_and_age_reaches_flushed_segments() {
    let s = TestServer::start_with(|c| c.engine.topics.retention_interval_secs = 1).await;
    let root = s.root_token().await;
    let publish = |topic: &'static str, from: usize, count: usize| {
        let (s, root) = (&s, &root);
        async move {
            let messages: Vec<Value> = (from..from + count)
                .map(|i| json!({"payload": {"n": i, "pad": "x".repeat(100)}}))
                .collect();
            let body = json!({"topic_id": topic, "messages": messages});
            let (status, body) = http(s, root, "publish", body).await;
            assert_eq!(status, 200, "{body}");
        }
    };
    let dir = |t: &str| s.dir.path().join(format!("storage/system/topics/{t}/p0"));
    // The size of one flushed round, measured on a topic without retention.
    s.ok(&root, "CREATE NAMESPACE app; CREATE TOPIC app.probe")
        .await;
    publish("app.probe", 0, 500).await;
    s.ok(&root, "STORAGE FLUSH TOPIC app.probe").await;
    let segment = std::fs::metadata(dir("app.probe").join(&segment_files(&dir("app.probe"))[0]))
        .unwrap()
        .len();
    // Four flushed rounds and ten hot messages; the bound leaves room for two segments.
    let max_bytes = 2 * segment + segment / 2 + 2_000;
    s.ok(
        &root,
        &format!(
            "CREATE TOPIC app.small WITH (RETENTION_MAX_BYTES = {max_bytes}, \
             RETENTION_KEEPS_UNACKED = false); \
             CREATE TOPIC app.young WITH (RETENTION_SECONDS = 1); \
             CREATE TOPIC app.guarded WITH (RETENTION_SECONDS = 1)"
        ),
    )
    .await;
    for topic in ["app.small", "app.young", "app.guarded"] {
        for round in 0..4 {
            publish(topic, round * 500, 500).await;
            s.ok(&root, &format!("STORAGE FLUSH TOPIC {topic}")).await;
        }
        publish(topic, 2_000, 10).await;
    }
    // A group that acked offset 999 holds app.guarded's messages from 1000 on.
    s.ok(&root, "ACK app.guarded GROUP 'g' UPTO OFFSET 999")
        .await;
    let (mut last, mut settled) = (None, false);
    for _ in 0..50 {
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
        let first = |m: &[(i64, Value)]| m.first().map(|(o, _)| *o);
        let small = all_of(&s, &root, "app.small", 0, 10_000).await;
        let young = all_of(&s, &root, "app.young", 0, 10_000).await;
        let guarded = all_of(&s, &root, "app.guarded", 0, 10_000).await;
        let state = (
            first(&small),
            small.len(),
            young.len(),
            first(&guarded),
            guarded.len(),
        );
        // By bytes: whole segments, oldest first, down to the bound. By age: everything but
        // what the group has not acknowledged.
        if state == (Some(1_000), 1_010, 0, Some(1_000), 1_010) {
            assert_eq!(segment_files(&dir("app.small")).len(), 2);
            assert!(segment_files(&dir("app.young")).is_empty());
            assert_eq!(segment_files(&dir("app.guarded")).len(), 2);
            settled = true;
            break;
        }
        last = Some(state);
    }
    assert!(settled, "retention did not settle: {last:?}");
    // Every message of app.young is gone from both tiers: after a restart, offsets still go on.
    let s = s.restart().await;
    let root = s.root_token().await;
    let body = json!({"topic_id": "app.young", "messages": [{"payload": "after"}]});
    let (_, reply) = http(&s, &root, "publish", body).await;
    assert_eq!(reply["offsets"][0]["offset"], json!(2_010), "{reply}");
}

#[tokio::test]
async fn a_job_flushes_messages_older_than_flush_after_secs() {
    let s = TestServer::start_with(|c| {
        c.engine.topics.flush_after_secs = 1;
        c.engine.topics.flush_interval_secs = 1;
    })
    .await;
    let root = s.root_token().await;
    s.ok(&root, "CREATE NAMESPACE app; CREATE TOPIC app.t")
        .await;
    let messages: Vec<Value> = (0..20).map(|i| json!({"payload": i})).collect();
    http(
        &s,
        &root,
        "publish",
        json!({"topic_id": "app.t", "messages": messages}),
    )
    .await;
    let dir = s.dir.path().join("storage/system/topics/app.t/p0");
    for _ in 0..50 {
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
        if !segment_files(&dir).is_empty() {
            break;
        }
    }
    assert_eq!(segment_files(&dir).len(), 1);
    let read = all_of(&s, &root, "app.t", 0, 7).await;
    let payloads: Vec<Value> = read.into_iter().map(|(_, p)| p).collect();
    assert_eq!(payloads, (0..20).map(|i| json!(i)).collect::<Vec<_>>());
    let r = s
        .ok(
            &root,
            "SELECT rows FROM system.jobs WHERE job_type = 'topic_flush'",
        )
        .await;
    assert_eq!(rows(&r), vec![vec![json!("20")]], "{r}");
}

/// A topic flush stopped after each step (the state a crash there leaves), then a restart:
/// every message read once, offsets go on, the next flush completes.
#[tokio::test]
async fn a_topic_flush_interrupted_at_any_step_loses_and_doubles_nothing() {
    use kalamdb_tables::faults::FlushStep;
    let mut s = TestServer::start().await;
    let mut root = s.root_token().await;
    s.ok(&root, "CREATE NAMESPACE app; CREATE TOPIC app.f")
        .await;
    let dir = s.dir.path().join("storage/system/topics/app.f/p0");
    let mut published = 0;
    for (step, files_after) in [
        // Written, not listed: nobody reads the file; the next flush sweeps (here: rewrites) it.
        (FlushStep::SegmentWritten, 1),
        (FlushStep::ManifestCommitted, 1),
    ] {
        let messages: Vec<Value> = (published..published + 50)
            .map(|i| json!({"payload": i}))
            .collect();
        let body = json!({"topic_id": "app.f", "messages": messages});
        assert_eq!(http(&s, &root, "publish", body).await.0, 200);
        published += 50;
        s.faults().fail_flush_at(step);
        let (status, _, msg) = s.err(&root, "STORAGE FLUSH TOPIC app.f").await;
        assert_eq!(status, 500, "{msg}");
        let read = all_of(&s, &root, "app.f", 0, 30).await;
        let payloads: Vec<i64> = read.iter().map(|(_, p)| p.as_i64().unwrap()).collect();
        assert_eq!(payloads, (0..published).collect::<Vec<_>>(), "{step:?}");
        s = s.restart().await;
        root = s.root_token().await;
        assert_eq!(segment_files(&dir).len(), files_after, "{step:?}");
        let read = all_of(&s, &root, "app.f", 0, 30).await;
        let offsets: Vec<i64> = read.iter().map(|(o, _)| *o).collect();
        assert_eq!(offsets, (0..published).collect::<Vec<_>>(), "{step:?}");
    }
    let body = json!({"topic_id": "app.f", "messages": [{"payload": 100}]});
    let (_, reply) = http(&s, &root, "publish", body).await;
    assert_eq!(reply["offsets"][0]["offset"], json!(100));
    s.ok(&root, "STORAGE FLUSH TOPIC app.f").await;
    let read = all_of(&s, &root, "app.f", 0, 1_000).await;
    let offsets: Vec<i64> = read.iter().map(|(o, _)| *o).collect();
    assert_eq!(offsets, (0..=100).collect::<Vec<_>>());
    assert_eq!(segment_files(&dir).len(), 2);
}
