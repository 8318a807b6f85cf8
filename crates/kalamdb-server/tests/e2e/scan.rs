//! Streaming scans: reads across both tiers agree with an in-memory model, and primary-key
//! pushdown and `LIMIT` really narrow what is read.

use crate::support::{Rng, TestServer, rows};
use kalamdb_commons::wire::SqlResponse;
use serde_json::Value;
use std::collections::BTreeMap;

/// A row of the model: `(name, score)` by id.
type Model = BTreeMap<i64, (String, i64)>;

fn text(v: &Value) -> String {
    v.as_str()
        .map(String::from)
        .unwrap_or_else(|| v.to_string())
}

fn int(v: &Value) -> i64 {
    text(v).parse().unwrap()
}

/// A random predicate: its SQL and what it keeps.
fn predicate(rng: &mut Rng) -> (String, Box<dyn Fn(i64, i64) -> bool>) {
    let mut k = || rng.next(420) as i64 - 10;
    let (a, b, c) = (k(), k(), k());
    let (lo, hi) = (a.min(b), a.max(b));
    match rng.next(10) {
        0 => (format!("id = {a}"), Box::new(move |id, _| id == a)),
        1 => (
            format!("id IN ({a}, {b}, {c})"),
            Box::new(move |id, _| id == a || id == b || id == c),
        ),
        2 => (
            format!("id BETWEEN {lo} AND {hi}"),
            Box::new(move |id, _| (lo..=hi).contains(&id)),
        ),
        3 => (
            format!("id > {lo} AND id <= {hi}"),
            Box::new(move |id, _| id > lo && id <= hi),
        ),
        4 => (
            format!("id < {lo} OR id >= {hi}"),
            Box::new(move |id, _| id < lo || id >= hi),
        ),
        5 => (
            format!("score > {}", c % 50),
            Box::new(move |_, s| s > c % 50),
        ),
        6 => (
            format!("id >= {lo} AND score < {}", c % 50),
            Box::new(move |id, s| id >= lo && s < c % 50),
        ),
        7 => (
            format!("id IN ({a}, {b}) OR id > {c}"),
            Box::new(move |id, _| id == a || id == b || id > c),
        ),
        8 => (format!("{lo} <= id"), Box::new(move |id, _| lo <= id)),
        _ => ("1 = 1".to_string(), Box::new(|_, _| true)),
    }
}

/// Random inserts, updates and deletes of ids in `0..400` through `token`, mirrored in `model`
/// (new rows go in one INSERT at the end; changes to them before that change the INSERT).
#[expect(
    clippy::map_entry,
    reason = "each branch also sends SQL; entries would obscure it"
)]
async fn mutate(s: &TestServer, token: &str, table: &str, model: &mut Model, rng: &mut Rng) {
    let mut inserts: BTreeMap<i64, (String, i64)> = BTreeMap::new();
    for _ in 0..rng.next(40) + 1 {
        let id = rng.next(400) as i64;
        let (name, score) = (format!("n{}", rng.next(1000)), rng.next(50) as i64);
        let delete = rng.next(4) == 0;
        if inserts.contains_key(&id) {
            if delete {
                inserts.remove(&id);
                model.remove(&id);
            } else {
                inserts.insert(id, (name.clone(), score));
                model.insert(id, (name, score));
            }
        } else if model.contains_key(&id) {
            if delete {
                s.ok(token, &format!("DELETE FROM {table} WHERE id = {id}"))
                    .await;
                model.remove(&id);
            } else {
                let sql =
                    format!("UPDATE {table} SET name = '{name}', score = {score} WHERE id = {id}");
                s.ok(token, &sql).await;
                model.insert(id, (name, score));
            }
        } else if !delete {
            inserts.insert(id, (name.clone(), score));
            model.insert(id, (name, score));
        }
    }
    if !inserts.is_empty() {
        let values: Vec<String> = inserts
            .iter()
            .map(|(id, (n, sc))| format!("({id}, '{n}', {sc})"))
            .collect();
        s.ok(
            token,
            &format!("INSERT INTO {table} VALUES {}", values.join(", ")),
        )
        .await;
    }
}

/// Runs random queries of `table` as `token` and compares each with `model`.
async fn check(s: &TestServer, token: &str, table: &str, model: &Model, rng: &mut Rng) {
    for _ in 0..8 {
        let (p, keep) = predicate(rng);
        let want: Vec<(i64, String, i64)> = model
            .iter()
            .filter(|(id, (_, sc))| keep(**id, *sc))
            .map(|(id, (n, sc))| (*id, n.clone(), *sc))
            .collect();
        let k = rng.next(12) as usize + 1;
        let sql = format!("SELECT id, name, score FROM {table} WHERE {p} ORDER BY id");
        let got: Vec<(i64, String, i64)> = rows(&s.ok(token, &sql).await)
            .iter()
            .map(|r| (int(&r[0]), text(&r[1]), int(&r[2])))
            .collect();
        assert_eq!(got, want, "{sql}");

        let sql = format!("SELECT count(*) FROM {table} WHERE {p}");
        assert_eq!(
            int(&rows(&s.ok(token, &sql).await)[0][0]),
            want.len() as i64,
            "{sql}"
        );

        let sql = format!("SELECT name FROM {table} WHERE {p}");
        let mut names: Vec<String> = rows(&s.ok(token, &sql).await)
            .iter()
            .map(|r| text(&r[0]))
            .collect();
        names.sort();
        let mut want_names: Vec<String> = want.iter().map(|w| w.1.clone()).collect();
        want_names.sort();
        assert_eq!(names, want_names, "{sql}");

        let sql = format!("SELECT id FROM {table} WHERE {p} ORDER BY id LIMIT {k}");
        let first: Vec<i64> = rows(&s.ok(token, &sql).await)
            .iter()
            .map(|r| int(&r[0]))
            .collect();
        let want_first: Vec<i64> = want.iter().take(k).map(|w| w.0).collect();
        assert_eq!(first, want_first, "{sql}");

        let sql = format!("SELECT id FROM {table} WHERE {p} LIMIT {k}");
        let some: Vec<i64> = rows(&s.ok(token, &sql).await)
            .iter()
            .map(|r| int(&r[0]))
            .collect();
        assert_eq!(some.len(), want.len().min(k), "{sql}");
        assert!(
            some.iter().all(|id| want.iter().any(|w| w.0 == *id)),
            "{sql}"
        );
    }
}

#[tokio::test]
async fn scans_match_a_model_across_hot_and_cold_tiers() {
    let s = TestServer::start_with(|c| {
        // Tiered compaction during flushes, so reads meet merged and overlapping segments.
        c.engine.storage.compaction_trigger_segments = 3;
    })
    .await;
    let root = s.root_token().await;
    s.ok(
        &root,
        "CREATE NAMESPACE m; \
         CREATE SHARED TABLE m.shared (id BIGINT PRIMARY KEY, name TEXT, score BIGINT); \
         CREATE USER TABLE m.mine (id BIGINT PRIMARY KEY, name TEXT, score BIGINT)",
    )
    .await;
    let users = s.users_with_tokens(&root, &["ann", "bob"]).await;
    let mut rng = Rng(0x5eed_1234_abcd_0001);
    let mut shared = Model::new();
    let mut mine = [Model::new(), Model::new()];
    for round in 0..14 {
        mutate(&s, &root, "m.shared", &mut shared, &mut rng).await;
        for (u, token) in users.iter().enumerate() {
            mutate(&s, token, "m.mine", &mut mine[u], &mut rng).await;
        }
        match rng.next(4) {
            0 | 1 => {
                s.ok(
                    &root,
                    "STORAGE FLUSH TABLE m.shared; STORAGE FLUSH TABLE m.mine",
                )
                .await;
            }
            2 if round % 3 == 0 => {
                s.ok(
                    &root,
                    "STORAGE COMPACT TABLE m.shared; STORAGE COMPACT TABLE m.mine",
                )
                .await;
            }
            _ => {}
        }
        check(&s, &root, "m.shared", &shared, &mut rng).await;
        for (u, token) in users.iter().enumerate() {
            check(&s, token, "m.mine", &mine[u], &mut rng).await;
        }
    }
}

/// The plan text of `EXPLAIN [ANALYZE] sql`.
async fn plan(s: &TestServer, token: &str, sql: &str) -> String {
    rows(&s.ok(token, &format!("EXPLAIN {sql}")).await)
        .iter()
        .flatten()
        .map(text)
        .collect::<Vec<_>>()
        .join("\n")
}

#[tokio::test]
async fn key_ranges_and_limits_narrow_what_a_scan_reads() {
    let s = TestServer::start().await;
    let root = s.root_token().await;
    s.ok(
        &root,
        "CREATE NAMESPACE p; CREATE SHARED TABLE p.t (id BIGINT PRIMARY KEY, note TEXT)",
    )
    .await;
    // Four segments of 5,000 keys each, with disjoint key ranges.
    for seg in 0..4 {
        for part in 0..5 {
            let values: Vec<String> = (0..1000)
                .map(|i| seg * 5000 + part * 1000 + i)
                .map(|id| format!("({id}, 'row {id}')"))
                .collect();
            s.ok(
                &root,
                &format!("INSERT INTO p.t VALUES {}", values.join(", ")),
            )
            .await;
        }
        s.ok(&root, "STORAGE FLUSH TABLE p.t").await;
    }
    // A few hot rows on top.
    s.ok(
        &root,
        "INSERT INTO p.t VALUES (20000, 'hot'), (20001, 'hot')",
    )
    .await;

    let range = "SELECT count(*) FROM p.t WHERE id BETWEEN 6000 AND 6999";
    let explained = plan(&s, &root, range).await;
    assert!(explained.contains("keys=1 range(s)"), "{explained}");
    assert!(explained.contains("segments=1/4"), "{explained}");
    assert!(
        !explained.contains("FilterExec"),
        "an exact key filter: {explained}"
    );
    let analyzed = plan(&s, &root, &format!("ANALYZE {range}")).await;
    let read = metric(&analyzed, "rows_read");
    assert!(
        read < 5000 * 2,
        "a 1,000-key range read {read} rows: {analyzed}"
    );
    assert_eq!(metric(&analyzed, "segments_read"), 1, "{analyzed}");
    assert_eq!(
        int(&rows(&s.ok(&root, range).await)[0][0]),
        1000,
        "the range's rows"
    );

    let limited = "SELECT * FROM p.t LIMIT 10";
    let explained = plan(&s, &root, limited).await;
    assert!(explained.contains("limit=10"), "{explained}");
    let analyzed = plan(&s, &root, &format!("ANALYZE {limited}")).await;
    let read = metric(&analyzed, "rows_read");
    assert!(read <= 3 * 8192, "LIMIT 10 read {read} rows: {analyzed}");
    assert_eq!(rows(&s.ok(&root, limited).await).len(), 10);

    // ORDER BY the key needs no sort, and its LIMIT reaches the scan too.
    let ordered = "SELECT id FROM p.t ORDER BY id LIMIT 3";
    let explained = plan(&s, &root, ordered).await;
    assert!(!explained.contains("SortExec"), "{explained}");
    let got: Vec<i64> = rows(&s.ok(&root, ordered).await)
        .iter()
        .take(10)
        .map(|r| int(&r[0]))
        .collect();
    assert_eq!(got, vec![0, 1, 2], "{explained}");

    // Hot and cold rows together, in key order.
    let tail = "SELECT id FROM p.t WHERE id >= 19998 ORDER BY id";
    let got: Vec<i64> = rows(&s.ok(&root, tail).await)
        .iter()
        .map(|r| int(&r[0]))
        .collect();
    assert_eq!(got, vec![19998, 19999, 20000, 20001]);
}

/// The value of counter `name` in an `EXPLAIN ANALYZE` text.
fn metric(plan: &str, name: &str) -> usize {
    let at = plan
        .find(&format!("{name}="))
        .unwrap_or_else(|| panic!("no {name} in {plan}"));
    plan[at + name.len() + 1..]
        .chars()
        .take_while(|c| c.is_ascii_digit())
        .collect::<String>()
        .parse()
        .unwrap()
}

#[tokio::test]
async fn large_results_stream_in_the_usual_envelope() {
    let s = TestServer::start().await;
    let root = s.root_token().await;
    s.ok(
        &root,
        "CREATE NAMESPACE big; CREATE SHARED TABLE big.t (id BIGINT PRIMARY KEY, note TEXT)",
    )
    .await;
    let total = 40_000;
    for start in (0..total).step_by(5000) {
        let values: Vec<String> = (start..start + 5000)
            .map(|id| format!("({id}, 'a note of about forty bytes for row {id:08}')"))
            .collect();
        s.ok(
            &root,
            &format!("INSERT INTO big.t VALUES {}", values.join(", ")),
        )
        .await;
    }
    let post = |sql: &str| {
        s.http
            .post(format!("{}/v1/api/sql", s.base))
            .bearer_auth(&root)
            .json(&serde_json::json!({ "sql": sql }))
            .send()
    };
    // Over the threshold: chunked, no Content-Length, and the same envelope.
    let resp = post("SELECT id, note FROM big.t").await.unwrap();
    assert_eq!(resp.status(), 200);
    assert!(resp.headers().get("content-length").is_none(), "streamed");
    let text = resp.text().await.unwrap();
    assert!(text.len() > 2_000_000, "{} bytes", text.len());
    let body: SqlResponse = serde_json::from_str(&text).unwrap();
    assert_eq!(body.results.len(), 1);
    let result = &body.results[0];
    assert_eq!(result.row_count, total);
    let got = result.rows.as_ref().unwrap();
    assert_eq!(got.len(), total);
    assert!(
        got.iter().enumerate().all(|(i, r)| int(&r[0]) == i as i64),
        "in key order"
    );
    // A small result keeps a plain body; both have the same fields in the same order.
    let small = post("SELECT id, note FROM big.t LIMIT 2").await.unwrap();
    assert!(small.headers().get("content-length").is_some());
    let small = small.text().await.unwrap();
    let shape = |t: &str| {
        let v: serde_json::Value = serde_json::from_str(t).unwrap();
        let keys = |o: &serde_json::Value| -> Vec<String> {
            o.as_object().unwrap().keys().cloned().collect()
        };
        (keys(&v), keys(&v["results"][0]))
    };
    assert_eq!(shape(&text), shape(&small));
    assert!(text.starts_with(&small[..small.find("\"rows\"").unwrap()]));

    // The official SDK parses it too.
    let c = kalam_client::KalamLinkClient::builder()
        .base_url(s.base.clone())
        .auth(kalam_client::AuthProvider::basic_auth(
            "root".into(),
            crate::support::ROOT_PASSWORD.into(),
        ))
        .timeout(std::time::Duration::from_secs(30))
        .build()
        .unwrap();
    let r = c
        .execute_query("SELECT id, note FROM big.t", None, None, None)
        .await
        .unwrap();
    assert!(r.success());
    assert_eq!(r.results[0].row_count, total);
}

/// The largest value of counter `name` in an `EXPLAIN ANALYZE` text (0 when absent).
fn max_metric(plan: &str, name: &str) -> u64 {
    plan.split(&format!("{name}="))
        .skip(1)
        .filter_map(|rest| {
            let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
            digits.parse().ok()
        })
        .max()
        .unwrap_or(0)
}

#[tokio::test]
async fn sorts_and_aggregates_over_a_table_larger_than_query_memory_spill() {
    // 16 MiB for all queries; the sort needs several times that.
    let s = TestServer::start_with(|c| c.engine.query.memory_limit_mb = 16).await;
    let root = s.root_token().await;
    s.ok(
        &root,
        "CREATE NAMESPACE sp; CREATE SHARED TABLE sp.t (id BIGINT PRIMARY KEY, note TEXT)",
    )
    .await;
    let total = 400_000;
    for start in (0..total).step_by(10_000) {
        let values: Vec<String> = (start..start + 10_000)
            .map(|id| format!("({id}, 'note {:012} with some padding text')", total - id))
            .collect();
        s.ok(
            &root,
            &format!("INSERT INTO sp.t VALUES {}", values.join(", ")),
        )
        .await;
        if start == total / 2 {
            s.ok(&root, "STORAGE FLUSH TABLE sp.t").await; // half cold, half hot
        }
    }
    let sort = "SELECT id FROM sp.t ORDER BY note DESC OFFSET 399999";
    assert_eq!(int(&rows(&s.ok(&root, sort).await)[0][0]), 399_999);
    let analyzed = plan(&s, &root, &format!("ANALYZE {sort}")).await;
    assert!(max_metric(&analyzed, "spill_count") > 0, "the sort spilled");

    let group = "SELECT count(*) FROM (SELECT note, count(*) FROM sp.t GROUP BY note) g";
    assert_eq!(int(&rows(&s.ok(&root, group).await)[0][0]), total);
}

#[tokio::test]
async fn the_segment_cache_stays_within_its_bound() {
    let s = TestServer::start_with(|c| c.engine.storage.segment_cache_mb = 1).await;
    let root = s.root_token().await;
    s.ok(
        &root,
        "CREATE NAMESPACE sc; CREATE SHARED TABLE sc.t (id BIGINT PRIMARY KEY, note TEXT)",
    )
    .await;
    // Eight segments of 2,000 rows, each decoding to a few hundred KiB.
    for seg in 0..8 {
        let values: Vec<String> = (0..2_000)
            .map(|i| seg * 2_000 + i)
            .map(|id| format!("({id}, 'a cached note of some length, row {id:08}')"))
            .collect();
        s.ok(
            &root,
            &format!("INSERT INTO sc.t VALUES {}", values.join(", ")),
        )
        .await;
        s.ok(&root, "STORAGE FLUSH TABLE sc.t").await;
    }
    let cold = || {
        s.server
            .as_ref()
            .unwrap()
            .app
            .tables()
            .cold()
            .segment_cache()
    };
    // Key lookups decode the segments that hold their keys; the cache keeps what fits.
    for round in 0..2 {
        for seg in 0..8 {
            let id = seg * 2_000 + 17;
            let got = rows(
                &s.ok(&root, &format!("SELECT note FROM sc.t WHERE id = {id}"))
                    .await,
            );
            assert_eq!(got.len(), 1, "round {round}, key {id}");
            let stats = cold();
            assert!(stats.bytes <= stats.capacity, "{stats:?}");
        }
    }
    let stats = cold();
    assert_eq!(stats.capacity, 1024 * 1024);
    assert!(
        stats.misses >= 8,
        "every segment was decoded once at least: {stats:?}"
    );
    assert!(
        stats.segments < 8,
        "not every segment fits in 1 MiB: {stats:?}"
    );
    assert!(stats.bytes > 0, "{stats:?}");
}
