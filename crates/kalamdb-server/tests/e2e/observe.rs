//! Operating the server: `GET /metrics` scraped around a workload (counts equal the requests
//! made, the exposition parses with a Prometheus text parser), `system.stats` showing the same
//! samples, the metrics token, request ids, and the slow-query log in `system.server_logs`.

use crate::live::Ws;
use crate::support::{TestServer, rows};
use serde_json::json;
use std::collections::HashMap;

/// The samples of a scrape, by name with labels in the exposition's order.
async fn scrape(s: &TestServer, token: Option<&str>) -> (u16, HashMap<String, f64>) {
    let mut req = s.http.get(format!("{}/metrics", s.base));
    if let Some(t) = token {
        req = req.bearer_auth(t);
    }
    let resp = req.send().await.unwrap();
    let status = resp.status().as_u16();
    let text = resp.text().await.unwrap();
    if status != 200 {
        return (status, HashMap::new());
    }
    assert!(text.ends_with("# EOF\n"), "{text}");
    // A standard parser reads it (it ignores the OpenMetrics-only `# EOF`/`# UNIT` lines).
    let parsed = prometheus_parse::Scrape::parse(text.lines().map(|l| Ok(l.to_string())))
        .unwrap_or_else(|e| panic!("unparsable exposition ({e}):\n{text}"));
    assert!(
        parsed.docs.contains_key("kalamdb_sql_statements"),
        "{:?}",
        parsed.docs.keys()
    );
    let mut samples = HashMap::new();
    for sample in parsed.samples {
        let mut labels: Vec<String> = sample
            .labels
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect();
        labels.sort();
        let value = match sample.value {
            prometheus_parse::Value::Counter(v)
            | prometheus_parse::Value::Gauge(v)
            | prometheus_parse::Value::Untyped(v) => v,
            prometheus_parse::Value::Histogram(h) => h.last().map_or(0.0, |b| b.count),
            prometheus_parse::Value::Summary(_) => continue,
        };
        samples.insert(format!("{}{{{}}}", sample.metric, labels.join(",")), value);
    }
    (status, samples)
}

/// `after - before` for one sample (absent = 0).
fn moved(before: &HashMap<String, f64>, after: &HashMap<String, f64>, key: &str) -> f64 {
    after.get(key).copied().unwrap_or(0.0) - before.get(key).copied().unwrap_or(0.0)
}

#[tokio::test]
async fn metrics_count_what_clients_did_and_system_stats_shows_them() {
    let s = TestServer::start().await;
    let root = s.root_token().await;
    s.ok(
        &root,
        "CREATE NAMESPACE app; CREATE SHARED TABLE app.m (id INT PRIMARY KEY, v TEXT)",
    )
    .await;
    let mut ws = Ws::authed(&s, &root).await;
    ws.subscribe_all("m", "SELECT * FROM app.m", json!({}))
        .await;

    let (status, before) = scrape(&s, None).await;
    assert_eq!(status, 200);
    for i in 0..20 {
        s.ok(&root, &format!("INSERT INTO app.m VALUES ({i}, 'v{i}')"))
            .await;
    }
    for _ in 0..5 {
        s.ok(&root, "SELECT * FROM app.m WHERE id < 4").await;
    }
    s.err(&root, "SELECT nope FROM app.m").await;
    for _ in 0..20 {
        assert_eq!(ws.next().await["type"], "change");
    }
    let r = s.ok(&root, "STORAGE FLUSH TABLE app.m").await;
    assert!(r["message"].as_str().unwrap().contains("Flushed 20"), "{r}");
    let (_, after) = scrape(&s, None).await;

    let sql_ok = "kalamdb_http_requests_total{method=POST,route=/v1/api/sql,status=200}";
    // 20 inserts, 5 selects and the flush.
    assert_eq!(moved(&before, &after, sql_ok), 26.0);
    let sql_err = "kalamdb_http_requests_total{method=POST,route=/v1/api/sql,status=400}";
    assert_eq!(moved(&before, &after, sql_err), 1.0);
    assert_eq!(
        moved(
            &before,
            &after,
            "kalamdb_http_request_seconds_count{kind=/v1/api/sql}"
        ),
        27.0
    );
    for (kind, n) in [
        ("insert", 20.0),
        ("select", 5.0),
        ("ddl", 1.0),
        ("failed", 1.0),
    ] {
        let key = format!("kalamdb_sql_statements_total{{kind={kind}}}");
        assert_eq!(moved(&before, &after, &key), n, "{key}");
    }
    assert_eq!(moved(&before, &after, "kalamdb_rows_written_total{}"), 20.0);
    assert_eq!(moved(&before, &after, "kalamdb_rows_read_total{}"), 20.0);
    assert_eq!(
        moved(&before, &after, "kalamdb_live_deliveries_total{}"),
        20.0
    );
    assert_eq!(
        moved(
            &before,
            &after,
            "kalamdb_jobs_total{kind=flush,status=completed}"
        ),
        1.0
    );
    assert_eq!(moved(&before, &after, "kalamdb_flushed_rows_total{}"), 20.0);
    assert!(moved(&before, &after, "kalamdb_flushed_bytes_total{}") > 0.0);
    assert_eq!(after["kalamdb_websocket_connections{}"], 1.0);
    assert_eq!(after["kalamdb_live_subscriptions{}"], 1.0);
    assert_eq!(after["kalamdb_websocket_connections_opened_total{}"], 1.0);
    for gauge in [
        "kalamdb_process_resident_memory_bytes{}",
        "kalamdb_process_open_fds{}",
        "kalamdb_rocksdb_sst_bytes{}",
        "kalamdb_uptime_seconds{}",
    ] {
        assert!(after[gauge] > 0.0, "{gauge}");
    }

    // The same samples, by the same names, in system.stats.
    let stats = s
        .ok(
            &root,
            "SELECT metric_name, metric_value FROM system.stats \
             WHERE metric_name LIKE 'kalamdb_sql_statements_total%insert%'",
        )
        .await;
    assert_eq!(
        rows(&stats),
        vec![vec![
            json!("kalamdb_sql_statements_total{kind=\"insert\"}"),
            json!("20")
        ]]
    );
}

#[tokio::test]
async fn a_metrics_token_guards_the_endpoint() {
    let s = TestServer::start_with(|c| c.engine.metrics.token = "scrape-secret".into()).await;
    assert_eq!(scrape(&s, None).await.0, 401);
    assert_eq!(scrape(&s, Some("wrong")).await.0, 401);
    assert_eq!(scrape(&s, Some("scrape-secret")).await.0, 200);
    // Without a token: loopback only, and not what a proxy on this host forwards.
    let open = TestServer::start().await;
    assert_eq!(scrape(&open, None).await.0, 200);
    let forwarded = open
        .http
        .get(format!("{}/metrics", open.base))
        .header("x-forwarded-for", "203.0.113.9")
        .send()
        .await
        .unwrap();
    assert_eq!(forwarded.status(), 401);
    let off = TestServer::start_with(|c| c.engine.metrics.enabled = false).await;
    assert_eq!(scrape(&off, None).await.0, 404);
}

#[tokio::test]
async fn requests_carry_ids_and_slow_statements_are_logged_with_them() {
    let s = TestServer::start_with(|c| c.engine.logging.slow_query_ms = 1).await;
    let root = s.root_token().await;
    // A fresh id is made, and one the client sends is kept.
    let resp = s
        .http
        .get(format!("{}/v1/api/auth/status", s.base))
        .send()
        .await
        .unwrap();
    let made = resp.headers()["x-request-id"].to_str().unwrap().to_string();
    assert_eq!(made.len(), 32, "{made}");
    let slow = "SELECT count(*) FROM generate_series(1, 300000)";
    let resp = s
        .http
        .post(format!("{}/v1/api/sql", s.base))
        .bearer_auth(&root)
        .header("x-request-id", "slow-one-1")
        .json(&json!({"sql": slow}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.headers()["x-request-id"], "slow-one-1");
    assert_eq!(resp.status(), 200);
    // The line is written as the statement ends, which may be just after the response left.
    let mut found = Vec::new();
    for _ in 0..100 {
        let logged = s
            .ok(
                &root,
                "SELECT level, message, request_id FROM system.server_logs \
                 WHERE target = 'kalamdb::slow_query' AND request_id = 'slow-one-1'",
            )
            .await;
        found = rows(&logged);
        if !found.is_empty() {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    assert_eq!(found.len(), 1, "{found:?}");
    assert_eq!(found[0][0], "WARN");
    let message = found[0][1].as_str().unwrap();
    for part in ["slow query", "user=root", "generate_series", "duration_ms="] {
        assert!(message.contains(part), "{part}: {message}");
    }
}

/// A statement cut off by the query timeout is counted as failed and logged as slow.
#[tokio::test]
async fn timed_out_statements_are_counted_and_logged() {
    let s = TestServer::start_with(|c| {
        c.engine.query.timeout_secs = 1;
        c.engine.logging.slow_query_ms = 500;
    })
    .await;
    let root = s.root_token().await;
    let (_, before) = scrape(&s, None).await;
    let freeze = "SELECT count(*) FROM generate_series(1,11000) a, generate_series(1,11000) b \
                  WHERE a.value + b.value = -1";
    let (status, body) = s.sql(&root, freeze).await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (504, Some("QUERY_TIMEOUT"))
    );
    let (_, after) = scrape(&s, None).await;
    assert_eq!(
        moved(&before, &after, "kalamdb_sql_statements_total{kind=failed}"),
        1.0
    );
    // The 1 s limit holds for this read too: on a loaded machine (the cancelled query's last
    // batches still running, other tests in parallel) it may time out, so it is asked again.
    let log_query = "SELECT message FROM system.server_logs WHERE target = 'kalamdb::slow_query' \
                     AND message LIKE '%generate_series%'";
    let mut logged = s.sql(&root, log_query).await;
    for _ in 0..10 {
        if logged.0 != 504 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(500)).await;
        logged = s.sql(&root, log_query).await;
    }
    assert_eq!(logged.0, 200, "{}", logged.1);
    // A timed-out read above is logged too (its text names generate_series): count the freeze.
    let frozen = rows(&logged.1["results"][0])
        .iter()
        .filter(|r| {
            r[0].as_str()
                .is_some_and(|m| m.contains("statement=SELECT count(*)"))
        })
        .count();
    assert_eq!(frozen, 1, "{}", logged.1);
}
