//! The SQL endpoint: envelopes, value encoding, DDL/DML flows and every kind of bad input.

use crate::support::{TestServer, rows};
use serde_json::{Value, json};

#[tokio::test]
async fn envelope_and_value_encoding() {
    let s = TestServer::start().await;
    let t = s.root_token().await;
    s.ok(&t, "CREATE NAMESPACE app").await;
    s.ok(
        &t,
        "CREATE SHARED TABLE app.items (id BIGINT PRIMARY KEY, name TEXT NOT NULL, qty INT, price DECIMAL(10,2), \
         ts TIMESTAMP, d DATE, u UUID, j JSON, b BYTES, f DOUBLE, ok BOOLEAN)",
    )
    .await;
    let r = s
        .ok(
            &t,
            "INSERT INTO app.items VALUES (9007199254740993, 'x', 3, 200.75, '2024-01-01T00:00:00Z', '2024-01-02', \
             '67e55044-10b1-426f-9247-bb680e5fe0c8', '{\"a\":1}', 'hi', 1.5, true)",
        )
        .await;
    assert_eq!(r["message"], "Inserted 1 row(s)");
    assert_eq!(r["row_count"], 1);
    assert!(r.get("schema").is_none() && r.get("rows").is_none());
    let (status, body) = s.sql(&t, "SELECT * FROM app.items").await;
    assert_eq!(status, 200);
    assert!(body["took"].as_f64().unwrap() >= 0.0);
    let res = &body["results"][0];
    assert_eq!(res["as_user"], "root");
    let schema = res["schema"].as_array().unwrap();
    assert_eq!(
        schema[0],
        json!({"name":"id","data_type":"BigInt","index":0,"flags":["pk","nn","uq"]})
    );
    assert_eq!(
        schema[3]["data_type"],
        json!({"Decimal":{"precision":10,"scale":2}})
    );
    let names: Vec<_> = schema.iter().map(|f| f["name"].as_str().unwrap()).collect();
    assert_eq!(names[names.len() - 2..], ["_seq", "_deleted"]);
    // A computed column is described by its own type, without the source column's flags.
    let (_, body) = s
        .sql(
            &t,
            "SELECT CAST(id AS TEXT) AS x, CAST(id AS DOUBLE) AS y, TRY_CAST(name AS INT) AS z, \
             id AS same FROM app.items",
        )
        .await;
    let computed = body["results"][0]["schema"].as_array().unwrap();
    assert_eq!(
        computed[..3],
        [
            json!({"name":"x","data_type":"Text","index":0}),
            json!({"name":"y","data_type":"Double","index":1}),
            json!({"name":"z","data_type":"Int","index":2})
        ],
        "{body}"
    );
    assert_eq!(computed[3]["flags"], json!(["pk", "nn", "uq"]), "{body}");
    let row = &rows(res)[0];
    assert_eq!(
        row[0], "9007199254740993",
        "BIGINT is a string, exact beyond 2^53"
    );
    assert_eq!(row[3], "200.75");
    assert_eq!(
        row[4], 1_704_067_200_000_000i64,
        "timestamps are microseconds"
    );
    assert_eq!(row[5], 19724, "dates are days");
    assert_eq!(row[6], "67e55044-10b1-426f-9247-bb680e5fe0c8");
    assert_eq!(row[7], "{\"a\":1}");
    assert_eq!(row[8], json!([104, 105]));
    assert_eq!(row[9], 1.5);
    assert!(
        row[11].as_str().unwrap().parse::<i64>().unwrap() > 0,
        "_seq is a string snowflake"
    );
    assert_eq!(row[12], false);
}

#[tokio::test]
async fn dml_semantics_params_and_batches() {
    let s = TestServer::start().await;
    let t = s.root_token().await;
    s.ok(
        &t,
        "CREATE NAMESPACE app; CREATE TABLE app.t (id INT PRIMARY KEY, v TEXT, n INT DEFAULT 7)",
    )
    .await;
    let (_, body) = s.sql(&t, "INSERT INTO app.t (id, v) VALUES (1, 'a'), (2, 'b'); INSERT INTO app.t (id) VALUES (3); UPDATE app.t SET v = 'z' WHERE id > 1; DELETE FROM app.t WHERE id = 3; SELECT id, v, n FROM app.t ORDER BY id").await;
    let results = body["results"].as_array().unwrap();
    assert_eq!(results.len(), 4, "query result, then DML summaries: {body}");
    assert_eq!(
        rows(&results[0]),
        vec![
            vec![json!(1), json!("a"), json!(7)],
            vec![json!(2), json!("z"), json!(7)]
        ]
    );
    let msgs: Vec<_> = results[1..]
        .iter()
        .map(|r| r["message"].as_str().unwrap())
        .collect();
    assert_eq!(
        msgs,
        ["Inserted 3 row(s)", "Updated 2 row(s)", "Deleted 1 row(s)"]
    );

    // Parameters and namespace_id.
    let (_, body) = s
        .sql_body(&t, json!({"sql": "SELECT v FROM t WHERE id = $1 AND v = $2", "params": [2, "z"], "namespace_id": "app"}))
        .await;
    assert_eq!(rows(&body["results"][0]), vec![vec![json!("z")]]);
    // A parameter cannot change the statement's shape.
    let (_, body) = s
        .sql_body(
            &t,
            json!({"sql": "SELECT count(*) FROM app.t WHERE v = $1", "params": ["z' OR '1'='1"]}),
        )
        .await;
    assert_eq!(rows(&body["results"][0]), vec![vec![json!("0")]]);
    // Deleted rows stay invisible, re-insert after delete is allowed, a no-op update writes nothing.
    s.ok(&t, "INSERT INTO app.t (id, v) VALUES (3, 'back')")
        .await;
    let r = s.ok(&t, "UPDATE app.t SET v = 'back' WHERE id = 3").await;
    assert_eq!(r["row_count"], 0);
    let r = s
        .ok(&t, "SELECT count(*) AS c FROM app.t WHERE _deleted = true")
        .await;
    assert_eq!(rows(&r), vec![vec![json!("0")]]);
    // Joins, aggregates, subqueries through DataFusion.
    s.ok(&t, "CREATE TABLE app.u (id INT PRIMARY KEY, t_id INT)")
        .await;
    s.ok(&t, "INSERT INTO app.u VALUES (10, 1), (11, 2), (12, 2)")
        .await;
    let r = s
        .ok(&t, "SELECT t.id, count(u.id) AS c FROM app.t t JOIN app.u u ON u.t_id = t.id WHERE t.id IN (SELECT t_id FROM app.u) GROUP BY t.id ORDER BY t.id")
        .await;
    assert_eq!(
        rows(&r),
        vec![vec![json!(1), json!("1")], vec![json!(2), json!("2")]]
    );
}

#[tokio::test]
async fn bad_input_gets_codes_and_never_damages_data() {
    let s = TestServer::start().await;
    let t = s.root_token().await;
    s.ok(
        &t,
        "CREATE NAMESPACE app; CREATE TABLE app.t (id INT PRIMARY KEY, n INT NOT NULL)",
    )
    .await;
    s.ok(&t, "INSERT INTO app.t VALUES (1, 1)").await;
    let url = format!("{}/v1/api/sql", s.base);
    let send = |body: reqwest::RequestBuilder| async move {
        let r = body.send().await.unwrap();
        let status = r.status().as_u16();
        let v: serde_json::Value = r.json().await.unwrap();
        (
            status,
            v["error"]["code"].as_str().unwrap_or("").to_string(),
        )
    };
    let req = || s.http.post(&url).bearer_auth(&t);
    assert_eq!(
        send(
            req()
                .header("content-type", "application/json")
                .body("{oops")
        )
        .await,
        (400, "INVALID_INPUT".into())
    );
    assert_eq!(
        send(req().header("content-type", "text/plain").body("SELECT 1")).await,
        (400, "INVALID_INPUT".into())
    );
    assert_eq!(
        send(req().json(&json!({"sql": "   "}))).await,
        (400, "EMPTY_SQL".into())
    );
    assert_eq!(
        send(req().json(&json!({"sql": " ; ; "}))).await,
        (400, "EMPTY_SQL".into())
    );
    assert_eq!(
        send(req().json(&json!({"sql": "SELECT 'x"}))).await,
        (400, "BATCH_PARSE_ERROR".into())
    );
    assert_eq!(
        send(req().json(&json!({"sql": "SELEC 1"}))).await,
        (400, "INVALID_SQL".into())
    );
    assert_eq!(
        send(req().json(&json!({"sql": "SELECT 1; SELECT 2", "params": [1]}))).await,
        (400, "PARAMS_WITH_BATCH".into())
    );
    assert_eq!(
        send(req().json(&json!({"sql": "SELECT $1", "params": [{"a": 1}]}))).await,
        (400, "INVALID_PARAMETER".into())
    );
    assert_eq!(
        send(req().json(&json!({"sql": "SELECT $2", "params": [1]}))).await,
        (400, "INVALID_PARAMETER".into())
    );
    // An oversize body is refused before any handler, on every route, in the transport shape.
    let big = json!({"sql": "x".repeat(11 * 1024 * 1024)}).to_string();
    for path in ["/v1/api/sql", "/v1/api/auth/login", "/v1/api/auth/refresh"] {
        let r = s
            .http
            .post(format!("{}{path}", s.base))
            .bearer_auth(&t)
            .header("content-type", "application/json")
            .body(big.clone())
            .send()
            .await
            .unwrap();
        assert_eq!(r.status().as_u16(), 413, "{path}");
        let v: serde_json::Value = r.json().await.unwrap();
        assert_eq!(
            (&v["error"], &v["size_bytes"], &v["max_bytes"]),
            (
                &json!("BODY_TOO_LARGE"),
                &json!(big.len()),
                &json!(10 * 1024 * 1024)
            ),
            "{path}: {v}"
        );
    }
    for sql in [
        "SELECT * FROM nope.t",
        "SELECT * FROM app.nope",
        "SELECT nope FROM app.t",
        "INSERT INTO app.t (id, nope) VALUES (2, 1)",
        "INSERT INTO app.t VALUES ('abc', 1)",
        "INSERT INTO app.t VALUES (2, 99999999999)",
        "INSERT INTO app.t VALUES (1, 5)",
        "INSERT INTO app.t VALUES (2, 1), (2, 2)",
        "INSERT INTO app.t (id) VALUES (3)",
        "INSERT INTO app.t VALUES (NULL, 1)",
        "UPDATE app.t SET id = 5 WHERE id = 1",
        "UPDATE app.t SET n = NULL WHERE id = 1",
    ] {
        let (status, code) = send(req().json(&json!({"sql": sql}))).await;
        assert_eq!(
            (status, code.as_str()),
            (400, "SQL_EXECUTION_ERROR"),
            "{sql}"
        );
    }
    let (status, code) =
        send(req().json(&json!({"sql": "INSERT INTO system.users (user_id) VALUES ('x')"}))).await;
    assert_eq!(
        (status, code.as_str()),
        (403, "PERMISSION_DENIED"),
        "system tables are read-only"
    );
    // A failing batch keeps the effects of the statements before it, and none after.
    let (status, code) = send(req().json(&json!({"sql": "INSERT INTO app.t VALUES (10, 1); INSERT INTO app.t VALUES (1, 1); INSERT INTO app.t VALUES (11, 1)"}))).await;
    assert_eq!((status, code.as_str()), (400, "SQL_EXECUTION_ERROR"));
    let r = s.ok(&t, "SELECT id, n FROM app.t ORDER BY id").await;
    assert_eq!(
        rows(&r),
        vec![vec![json!(1), json!(1)], vec![json!(10), json!(1)]]
    );
    // Health endpoints answer loopback callers.
    for path in ["/health", "/v1/api/healthcheck"] {
        let r = s
            .http
            .get(format!("{}{path}", s.base))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status().as_u16(), 200);
        let v: serde_json::Value = r.json().await.unwrap();
        assert_eq!(v["status"], "healthy");
        assert_eq!(v["api_version"], "v1");
    }
}

#[tokio::test]
async fn point_lookups_match_the_planned_path() {
    let s = TestServer::start().await;
    let t = s.root_token().await;
    s.ok(
        &t,
        "CREATE NAMESPACE app; CREATE TABLE app.t (id BIGINT PRIMARY KEY, name TEXT, score DOUBLE)",
    )
    .await;
    s.ok(
        &t,
        "INSERT INTO app.t VALUES (1, 'a', 1.5), (2, 'b', NULL), (3, 'c', 3.0)",
    )
    .await;
    s.ok(&t, "DELETE FROM app.t WHERE id = 3").await;
    for (fast, planned) in [
        (
            "SELECT * FROM app.t WHERE id = 1",
            "SELECT * FROM app.t WHERE id = 1 ORDER BY id",
        ),
        (
            "SELECT name, id, _seq FROM app.t WHERE 2 = id",
            "SELECT name, id, _seq FROM app.t WHERE 2 = id LIMIT 10",
        ),
        (
            "SELECT * FROM app.t WHERE id = 3",
            "SELECT * FROM app.t WHERE id = 3 ORDER BY id",
        ),
        (
            "SELECT * FROM app.t WHERE id = 99",
            "SELECT * FROM app.t WHERE id = 99 ORDER BY id",
        ),
        (
            "SELECT NAME FROM app.t WHERE ID = 1",
            "SELECT name FROM app.t WHERE id = 1 ORDER BY 1",
        ),
    ] {
        let a = s.ok(&t, fast).await;
        let b = s.ok(&t, planned).await;
        assert_eq!(a["schema"], b["schema"], "{fast}");
        assert_eq!(a["rows"], b["rows"], "{fast}");
    }
    let (_, body) = s
        .sql_body(
            &t,
            json!({"sql": "SELECT name FROM app.t WHERE id = $1", "params": ["2"]}),
        )
        .await;
    assert_eq!(rows(&body["results"][0]), vec![vec![json!("b")]]);
    // Unknown columns still get the planner's error.
    let (status, code, _) = s.err(&t, "SELECT nope FROM app.t WHERE id = 1").await;
    assert_eq!((status, code.as_str()), (400, "SQL_EXECUTION_ERROR"));
}

#[tokio::test]
async fn stream_tables_are_append_only_per_user_and_expire() {
    let s = TestServer::start().await;
    let root = s.root_token().await;
    s.ok(&root, "CREATE NAMESPACE app; CREATE USER alice WITH PASSWORD 'alice-pass-1'; CREATE USER bob WITH PASSWORD 'bob-pass-12'").await;
    let alice = s.token("alice", "alice-pass-1").await;
    let bob = s.token("bob", "bob-pass-12").await;
    let (status, _, msg) = s
        .err(&alice, "CREATE STREAM TABLE app.typing (room TEXT)")
        .await;
    assert!(status == 400 && msg.contains("TTL_SECONDS"), "{msg}");
    s.ok(&alice, "CREATE STREAM TABLE app.typing (room TEXT, who TEXT DEFAULT CURRENT_USER()) WITH (TTL_SECONDS = 1)").await;
    s.ok(
        &alice,
        "INSERT INTO app.typing (room) VALUES ('a'), ('a'), ('b')",
    )
    .await;
    s.ok(&bob, "INSERT INTO app.typing (room) VALUES ('a')")
        .await;
    let r = s
        .ok(&alice, "SELECT room, who FROM app.typing ORDER BY _seq")
        .await;
    assert_eq!(
        rows(&r).len(),
        3,
        "duplicates are fine in a stream; only alice's rows"
    );
    assert!(rows(&r).iter().all(|row| row[1] == "alice"));
    let (status, _, msg) = s.err(&alice, "UPDATE app.typing SET room = 'c'").await;
    assert!(status == 400 && msg.contains("append-only"), "{msg}");
    let r = s
        .ok(&alice, "DELETE FROM app.typing WHERE room = 'b'")
        .await;
    assert_eq!(r["row_count"], 1);
    let r = s.ok(&alice, "SELECT count(*) FROM app.typing").await;
    assert_eq!(rows(&r), vec![vec![json!("2")]]);

    // After the TTL the rows are invisible at once, and eviction frees their storage.
    tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
    let r = s.ok(&alice, "SELECT count(*) FROM app.typing").await;
    assert_eq!(rows(&r), vec![vec![json!("0")]]);
    let app = s.server.as_ref().unwrap().app.clone();
    assert_eq!(
        kalamdb_core::maintenance::evict_expired_stream_rows(&app).unwrap(),
        3,
        "alice's 2 and bob's 1"
    );
    assert_eq!(
        kalamdb_core::maintenance::evict_expired_stream_rows(&app).unwrap(),
        0
    );
    s.ok(&bob, "INSERT INTO app.typing (room) VALUES ('fresh')")
        .await;
    let r = s.ok(&bob, "SELECT room FROM app.typing").await;
    assert_eq!(rows(&r), vec![vec![json!("fresh")]]);
}

/// `SUBSCRIBE TO` over HTTP registers nothing and answers one row describing the WebSocket
/// subscription to open (`docs/protocol.md` §6.8).
#[tokio::test]
async fn subscribe_to_over_http_describes_the_websocket_subscription() {
    let s = TestServer::start().await;
    let t = s.root_token().await;
    s.ok(
        &t,
        "CREATE NAMESPACE app; CREATE SHARED TABLE app.t (id BIGINT PRIMARY KEY, v TEXT)",
    )
    .await;
    let r = s
        .ok(
            &t,
            "SUBSCRIBE TO SELECT * FROM app.t WHERE id > 1 OPTIONS (last_rows=10, batch_size=20)",
        )
        .await;
    let names: Vec<&str> = r["schema"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["status", "ws_url", "subscription", "message"]);
    let row = &rows(&r)[0];
    assert_eq!(row[0], "active");
    assert_eq!(
        row[1],
        format!("{}/v1/ws", s.base.replace("http://", "ws://"))
    );
    let sub: serde_json::Value = serde_json::from_str(row[2].as_str().unwrap()).unwrap();
    assert!(
        sub["id"].as_str().unwrap().starts_with("sub-app-t-"),
        "{sub}"
    );
    assert_eq!(sub["sql"], "SELECT * FROM app.t WHERE id > 1");
    assert_eq!(sub["options"], json!({"last_rows": 10, "batch_size": 20}));
    assert!(rows(&s.ok(&t, "SELECT * FROM system.live").await).is_empty());
    let (status, _, msg) = s.err(&t, "SUBSCRIBE TO SELECT * FROM t").await;
    assert_eq!(status, 400, "{msg}");
    // The WebSocket refuses these too (live::subscriptions_refuse_…): one recogniser.
    for unsupported in [
        "SUBSCRIBE TO SELECT * FROM app.t ORDER BY id",
        "SUBSCRIBE TO SELECT * FROM app.t LIMIT 3",
        "SUBSCRIBE TO SELECT count(*) FROM app.t",
    ] {
        let (status, code, msg) = s.err(&t, unsupported).await;
        assert_eq!(
            (status, code.as_str()),
            (400, "UNSUPPORTED"),
            "{unsupported}: {msg}"
        );
    }
}

/// Catalog changes run one at a time: of two racing CREATEs of one name exactly one succeeds,
/// and the table is the one that answered 200 (before, both could succeed and the survivor
/// after a restart was not the one written to).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn racing_creates_of_one_name_let_exactly_one_win() {
    let s = TestServer::start().await;
    let t = s.root_token().await;
    s.ok(&t, "CREATE NAMESPACE cr").await;
    for i in 0..20 {
        let shared = format!("CREATE SHARED TABLE cr.t{i} (id BIGINT PRIMARY KEY, a INT)");
        let user = format!("CREATE USER TABLE cr.t{i} (id BIGINT PRIMARY KEY, b INT)");
        let ((s1, _), (s2, _)) = tokio::join!(s.sql(&t, &shared), s.sql(&t, &user));
        assert_eq!(
            [s1, s2].iter().filter(|&&c| c == 200).count(),
            1,
            "round {i}: {s1} {s2}"
        );
        let kind = rows(
            &s.ok(
                &t,
                &format!("SELECT table_type FROM system.tables WHERE table_name = 't{i}'"),
            )
            .await,
        );
        let expected = if s1 == 200 { "SHARED" } else { "USER" };
        assert_eq!(kind, vec![vec![json!(expected)]], "round {i}");
        let user_sql = format!("CREATE USER u{i} WITH PASSWORD 'u{i}-pass-1234'");
        let dba_sql = format!("CREATE USER u{i} WITH PASSWORD 'u{i}-pass-5678' ROLE dba");
        let ((u1, _), (u2, _)) = tokio::join!(s.sql(&t, &user_sql), s.sql(&t, &dba_sql));
        assert_eq!(
            [u1, u2].iter().filter(|&&c| c == 200).count(),
            1,
            "users round {i}"
        );
    }
}

/// `GET /v1/api/schema`: what the caller may query, in one document.
#[tokio::test]
async fn the_schema_route_lists_what_the_caller_may_query() {
    let s = TestServer::start().await;
    let root = s.root_token().await;
    s.ok(
        &root,
        "CREATE NAMESPACE app; \
         CREATE SHARED TABLE app.pub (id BIGINT PRIMARY KEY DEFAULT SNOWFLAKE_ID(), title TEXT NOT NULL) WITH (ACCESS_LEVEL = 'PUBLIC'); \
         CREATE SHARED TABLE app.secret (id BIGINT PRIMARY KEY, v TEXT); \
         CREATE USER TABLE app.notes (id BIGINT PRIMARY KEY, body TEXT DEFAULT 'x'); \
         CREATE VIEW app.titles AS SELECT title FROM app.pub; \
         CREATE USER alice WITH PASSWORD 'alice-pass-1' ROLE 'user'",
    )
    .await;
    let get = |token: Option<String>| {
        let s = &s;
        async move {
            let mut req = s.http.get(format!("{}/v1/api/schema", s.base));
            if let Some(t) = token {
                req = req.bearer_auth(t);
            }
            let resp = req.send().await.unwrap();
            (resp.status().as_u16(), resp.json::<Value>().await.unwrap())
        }
    };
    let (status, doc) = get(Some(root)).await;
    assert_eq!(status, 200, "{doc}");
    let app = namespace(&doc, "app");
    let names = |app: &Value| -> Vec<String> {
        app["tables"]
            .as_array()
            .unwrap()
            .iter()
            .map(|t| t["name"].as_str().unwrap().to_string())
            .collect()
    };
    assert_eq!(names(&app), vec!["notes", "pub", "secret"]);
    let public = &app["tables"][1];
    assert_eq!(public["kind"], "shared");
    assert_eq!(public["access_level"], "PUBLIC");
    assert_eq!(public["primary_key"], json!(["id"]));
    assert_eq!(
        public["columns"][0],
        json!({"name": "id", "type": "BIGINT", "nullable": false, "primary_key": true, "default": "SNOWFLAKE_ID()"})
    );
    assert_eq!(app["tables"][0]["kind"], "user");
    assert_eq!(app["views"][0]["name"], "titles");

    // A plain user does not see the SHARED table their role may not read.
    let alice = s.token("alice", "alice-pass-1").await;
    let (_, doc) = get(Some(alice)).await;
    let app = namespace(&doc, "app");
    assert_eq!(names(&app), vec!["notes", "pub"]);
    let (status, doc) = get(None).await;
    assert_eq!(status, 401, "{doc}");
    assert_eq!(doc["error"]["code"], "MISSING_AUTHORIZATION");
}

/// The namespace `name` of a `/v1/api/schema` document.
fn namespace(doc: &Value, name: &str) -> Value {
    doc["namespaces"]
        .as_array()
        .unwrap()
        .iter()
        .find(|n| n["name"] == name)
        .unwrap()
        .clone()
}

/// `[security.cors]`: preflights and CORS headers for allowed origins only, and the same list
/// for WebSocket upgrades (403 for another origin; clients without `Origin` unaffected).
#[tokio::test]
async fn cors_allows_listed_origins_for_http_and_websocket() {
    use tokio_tungstenite::tungstenite::client::IntoClientRequest;
    let s = TestServer::start_with(|c| {
        c.security.cors.allowed_origins = vec!["http://app.test".into()];
    })
    .await;
    let preflight = |origin: &'static str| {
        let s = &s;
        async move {
            s.http
                .request(reqwest::Method::OPTIONS, format!("{}/v1/api/sql", s.base))
                .header("Origin", origin)
                .header("Access-Control-Request-Method", "POST")
                .header(
                    "Access-Control-Request-Headers",
                    "authorization, content-type",
                )
                .send()
                .await
                .unwrap()
        }
    };
    let allowed = preflight("http://app.test").await;
    assert!(allowed.status().is_success(), "{}", allowed.status());
    assert_eq!(
        allowed.headers()["access-control-allow-origin"],
        "http://app.test"
    );
    let other = preflight("http://evil.test").await;
    assert!(other.headers().get("access-control-allow-origin").is_none());
    // The actual request carries the header too.
    let root = s.root_token().await;
    let resp = s
        .http
        .post(format!("{}/v1/api/sql", s.base))
        .header("Origin", "http://app.test")
        .bearer_auth(&root)
        .json(&json!({"sql": "SELECT 1"}))
        .send()
        .await
        .unwrap();
    assert_eq!(
        resp.headers()["access-control-allow-origin"],
        "http://app.test"
    );

    let ws = |origin: Option<&'static str>| {
        let url = format!("{}/v1/ws", s.base.replace("http://", "ws://"));
        async move {
            let mut req = url.into_client_request().unwrap();
            if let Some(o) = origin {
                req.headers_mut().insert("Origin", o.parse().unwrap());
            }
            match tokio_tungstenite::connect_async(req).await {
                Ok(_) => 101,
                Err(tokio_tungstenite::tungstenite::Error::Http(r)) => r.status().as_u16(),
                Err(e) => panic!("{e}"),
            }
        }
    };
    assert_eq!(ws(Some("http://evil.test")).await, 403);
    assert_eq!(ws(Some("http://app.test")).await, 101);
    assert_eq!(ws(None).await, 101);
}
