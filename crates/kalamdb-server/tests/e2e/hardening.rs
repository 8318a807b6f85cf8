//! Queries and clients that tried to crash, freeze or exhaust the server (issue 13's
//! reproducers), each run as a plain user against the real binary: the server refuses or
//! cancels the work with a stable code and keeps serving everyone else.

use crate::live::Ws;
use crate::support::{ROOT_PASSWORD, TestServer, login_token, login_with, post_sql, spawn_binary};
use serde_json::{Value, json};
use std::io::{Read, Write};
use std::time::{Duration, Instant};

/// A running server binary, killed on drop.
struct Proc {
    child: std::process::Child,
    base: String,
    _dir: tempfile::TempDir,
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Proc {
    fn start(env: &[(&str, &str)]) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let (child, base) = spawn_binary(dir.path(), env);
        Self {
            child,
            base,
            _dir: dir,
        }
    }

    /// A field of `/proc/<pid>/status` in KiB (VmRSS, VmHWM …).
    fn status_kib(&self, field: &str) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id())).unwrap();
        status
            .lines()
            .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
            .and_then(|v| v.split_whitespace().next()?.parse().ok())
            .unwrap()
    }

    /// CPU time the process has used, in clock ticks.
    fn cpu_ticks(&self) -> u64 {
        let stat = std::fs::read_to_string(format!("/proc/{}/stat", self.child.id())).unwrap();
        let after_name = &stat[stat.rfind(')').unwrap() + 2..];
        let fields: Vec<&str> = after_name.split_whitespace().collect();
        // utime and stime are fields 14 and 15 of the line: 12 and 13 after the name.
        fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap()
    }

    fn alive(&mut self) -> bool {
        self.child.try_wait().unwrap().is_none()
    }

    /// Health answers (the generous bound only tells a frozen server from a live one).
    async fn healthy(&self, http: &reqwest::Client) -> bool {
        http.get(format!("{}/v1/api/healthcheck", self.base))
            .timeout(Duration::from_secs(5))
            .send()
            .await
            .is_ok_and(|r| r.status().is_success())
    }
}

async fn plain_user(http: &reqwest::Client, base: &str) -> String {
    let root = login_token(http, base, "root", ROOT_PASSWORD).await;
    let (status, body) = post_sql(
        http,
        base,
        &root,
        "CREATE USER mallory WITH PASSWORD 'mallory-pass-1'; CREATE NAMESPACE app; \
         CREATE USER TABLE app.notes (id BIGINT PRIMARY KEY, body TEXT, n BIGINT); \
         CREATE SHARED TABLE app.f (id BIGINT PRIMARY KEY, x DOUBLE) WITH (ACCESS_LEVEL = 'PUBLIC')",
    )
    .await;
    assert_eq!(status, 200, "{}", short(&body));
    login_token(http, base, "mallory", "mallory-pass-1").await
}

fn chain(term: &str, op: &str, n: usize) -> String {
    vec![term; n].join(op)
}

fn code(body: &Value) -> &str {
    body["error"]["code"].as_str().unwrap_or("")
}

/// The start of a reply, for assertion messages (results can be megabytes).
fn short(body: &Value) -> String {
    body.to_string().chars().take(300).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn flat_chains_are_refused_and_the_server_lives() {
    let mut p = Proc::start(&[]);
    let http = reqwest::Client::new();
    let t = plain_user(&http, &p.base).await;
    let deep = [
        format!("SELECT {}", chain("1", "+", 2000)),
        format!("SELECT 1 WHERE {}", chain("1 = 1", " OR ", 2000)),
        format!("SELECT 1 WHERE {}", chain("1 = 1", " AND ", 2000)),
        format!("SELECT {}", chain("'a'", " || ", 2000)),
        format!("SELECT {}", chain("1", " - ", 2000)),
        chain("SELECT 1", " UNION ALL ", 2000),
        format!(
            "UPDATE app.notes SET n = {} WHERE id = 1",
            chain("n", " + ", 2000)
        ),
        format!(
            "INSERT INTO app.notes VALUES (1, 'a', {})",
            chain("1", "+", 2000)
        ),
        // 200 KB: far deeper than any stage could recurse on a normal stack.
        format!("SELECT {}", chain("1", "+", 100_000)),
        chain("SELECT 1", " UNION ALL ", 50_000),
    ];
    for sql in &deep {
        let (status, body) = post_sql(&http, &p.base, &t, sql).await;
        assert_eq!(
            (status, code(&body)),
            (400, "INVALID_SQL"),
            "{}",
            short(&body)
        );
        assert!(p.alive(), "the server died on {}…", &sql[..60]);
    }
    let (_, body) = post_sql(&http, &p.base, &t, &deep[0]).await;
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("max_expression_depth"),
        "{}",
        short(&body)
    );

    // A subscription's WHERE is held to the same limit.
    let s = TestServer::remote(&p.base);
    let mut ws = Ws::authed(&s, &t).await;
    let sql = format!(
        "SELECT * FROM app.notes WHERE {}",
        chain("id = 1", " OR ", 5000)
    );
    ws.subscribe("deep", &sql, json!({})).await;
    let e = ws.next().await;
    assert_eq!(
        (e["type"].as_str(), e["code"].as_str()),
        (Some("error"), Some("INVALID_SQL")),
        "{e}"
    );

    // Queries people write stay fine: long IN lists, many CASE branches, a few hundred terms.
    let in_list = (0..10_000)
        .map(|i| i.to_string())
        .collect::<Vec<_>>()
        .join(",");
    let branches: String = (0..1000)
        .map(|i| format!(" WHEN id = {i} THEN {i}"))
        .collect();
    for sql in [
        format!("SELECT count(*) FROM app.notes WHERE id IN ({in_list})"),
        format!("SELECT CASE{branches} ELSE 0 END FROM app.notes"),
        format!("SELECT {}", chain("1", "+", 500)),
        format!(
            "SELECT * FROM app.notes WHERE {}",
            chain("id = 1", " OR ", 500)
        ),
    ] {
        let (status, body) = post_sql(&http, &p.base, &t, &sql).await;
        assert_eq!(status, 200, "{}…: {}", &sql[..60], short(&body));
    }
    assert!(p.healthy(&http).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn huge_values_and_results_fail_fast_and_memory_stays_bounded() {
    let mut p = Proc::start(&[("KALAMDB_QUERY_MEMORY_LIMIT_MB", "512")]);
    let http = reqwest::Client::new();
    let t = plain_user(&http, &p.base).await;
    for sql in [
        "SELECT repeat('ab', 1000000000)",
        "SELECT lpad('a', 2000000000)",
        "SELECT cardinality(array_repeat(1, 1000000000))",
    ] {
        let (status, body) = post_sql(&http, &p.base, &t, sql).await;
        assert_eq!(
            (status, code(&body)),
            (400, "RESOURCE_EXHAUSTED"),
            "{sql}: {}",
            short(&body)
        );
        assert!(p.alive());
    }
    // Results of a hundred million rows stream to the client as they are produced (memory
    // stays bounded); a client that stops reading and goes away cancels its query.
    for sql in [
        "SELECT * FROM generate_series(1, 100000000)",
        "SELECT * FROM generate_series(1, 11000) a, generate_series(1, 11000) b",
        "SELECT a.value FROM generate_series(1, 5000000) a ORDER BY a.value DESC",
    ] {
        let mut resp = http
            .post(format!("{}/v1/api/sql", p.base))
            .bearer_auth(&t)
            .json(&serde_json::json!({ "sql": sql }))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 200, "{sql}");
        let first = resp.chunk().await.unwrap().unwrap_or_default();
        assert!(first.starts_with(b"{\"status\":\"success\""), "{sql}");
        drop(resp);
        assert!(p.alive());
    }
    // Memory never came near what the statements asked for (GiBs each).
    let peak_mib = p.status_kib("VmHWM") / 1024;
    assert!(peak_mib < 1536, "peak RSS {peak_mib} MiB");
    // A join copying one big value into every row cannot use 64-bit offsets to get past the
    // 2 GiB an array can hold.
    let copy = "SELECT length(v) FROM (SELECT arrow_cast(repeat('x', 60000000), 'LargeUtf8') v) s \
                CROSS JOIN generate_series(1, 8192)";
    let (status, body) = post_sql(&http, &p.base, &t, copy).await;
    assert_eq!(status, 400, "{}", short(&body));
    assert!(p.alive());
    assert!(p.healthy(&http).await);
}

#[tokio::test]
async fn sorts_larger_than_the_memory_pool_spill_to_disk() {
    let s = TestServer::start_with(|c| c.engine.query.memory_limit_mb = 16).await;
    let root = s.root_token().await;
    // A full sort of 32 MB of values (OFFSET without LIMIT keeps every row in the sort).
    let result = s
        .ok(
            &root,
            "SELECT value FROM generate_series(1, 4000000) ORDER BY value DESC OFFSET 3999999",
        )
        .await;
    assert_eq!(result["rows"], json!([["1"]]), "{}", short(&result));
    // The sort's metrics show that it spilled.
    let plan = s
        .ok(
            &root,
            "EXPLAIN ANALYZE SELECT value FROM generate_series(1, 4000000) \
             ORDER BY value DESC OFFSET 3999999",
        )
        .await;
    let text = plan.to_string();
    let spills = text
        .split("spill_count=")
        .skip(1)
        .filter_map(|rest| {
            let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
            digits.parse::<u64>().ok()
        })
        .max();
    assert!(spills.is_some_and(|n| n > 0), "no spill: {}", short(&plan));
    assert!(
        s.dir.path().join("tmp").is_dir(),
        "spill files go under <data_path>/tmp"
    );
}

const FREEZE: &str = "SELECT count(*) FROM generate_series(1,11000) a, generate_series(1,11000) b, \
                      generate_series(1,11000) c WHERE a.value + b.value + c.value = -1";

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn heavy_queries_time_out_and_are_cancelled_by_disconnects_and_kill() {
    let mut p = Proc::start(&[("KALAMDB_QUERY_TIMEOUT_SECS", "4")]);
    let http = reqwest::Client::new();
    let t = plain_user(&http, &p.base).await;
    let root = login_token(&http, &p.base, "root", ROOT_PASSWORD).await;

    // Two worst-case queries at once: health checks and point reads still answer.
    let started = Instant::now();
    let heavy: Vec<_> = (0..2)
        .map(|_| {
            let (http, base, t) = (http.clone(), p.base.clone(), t.clone());
            tokio::spawn(async move { post_sql(&http, &base, &t, FREEZE).await })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(500)).await;
    for _ in 0..5 {
        assert!(p.healthy(&http).await, "health answers while queries run");
        let (status, body) =
            post_sql(&http, &p.base, &t, "SELECT * FROM app.notes WHERE id = 7").await;
        assert_eq!(status, 200, "{}", short(&body));
    }
    let (status, body) = post_sql(
        &http,
        &p.base,
        &root,
        "SELECT query_id, user_id, query FROM system.queries",
    )
    .await;
    assert_eq!(status, 200, "{}", short(&body));
    let running = body["results"][0]["rows"].as_array().unwrap().clone();
    assert!(
        running.iter().filter(|r| r[1] == "mallory").count() >= 2,
        "{running:?}"
    );
    for h in heavy {
        let (status, body) = h.await.unwrap();
        assert_eq!(
            (status, code(&body)),
            (504, "QUERY_TIMEOUT"),
            "{}",
            short(&body)
        );
    }
    assert!(started.elapsed() < Duration::from_secs(30));

    // KILL QUERY (admins only) cancels one.
    let killed = {
        let (http, base, t) = (http.clone(), p.base.clone(), t.clone());
        tokio::spawn(async move { post_sql(&http, &base, &t, FREEZE).await })
    };
    let id = loop {
        let (_, body) = post_sql(
            &http,
            &p.base,
            &root,
            "SELECT query_id FROM system.queries WHERE user_id = 'mallory'",
        )
        .await;
        if let Some(id) = body["results"][0]["rows"][0][0].as_str() {
            break id.to_string();
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let (status, body) = post_sql(&http, &p.base, &t, &format!("KILL QUERY {id}")).await;
    assert_eq!(
        (status, code(&body)),
        (403, "PERMISSION_DENIED"),
        "{}",
        short(&body)
    );
    let (status, body) = post_sql(&http, &p.base, &root, &format!("KILL QUERY {id}")).await;
    assert_eq!(status, 200, "{}", short(&body));
    let (status, body) = killed.await.unwrap();
    assert_eq!(
        (status, code(&body)),
        (400, "QUERY_CANCELLED"),
        "{}",
        short(&body)
    );

    // A client that goes away cancels its query: the CPU goes back to idle.
    let gone = http
        .post(format!("{}/v1/api/sql", p.base))
        .bearer_auth(&t)
        .json(&json!({"sql": FREEZE}))
        .timeout(Duration::from_millis(700))
        .send()
        .await;
    assert!(gone.is_err(), "the client gave up");
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let before = p.cpu_ticks();
    tokio::time::sleep(Duration::from_secs(2)).await;
    let used = p.cpu_ticks() - before;
    // 2 s on 2 cores would be 400 ticks at 100 Hz; an idle server uses a few.
    assert!(
        used < 60,
        "the server kept working after the client left: {used} ticks"
    );
    assert!(p.alive() && p.healthy(&http).await);
}

/// Reads from `stream` until EOF or error; true when the server closed it within `wait`.
fn closed_within(stream: &mut std::net::TcpStream, wait: Duration) -> bool {
    stream.set_read_timeout(Some(wait)).unwrap();
    let mut buf = [0u8; 1024];
    loop {
        match stream.read(&mut buf) {
            Ok(0) => return true,
            Ok(_) => continue,
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => return true,
            Err(_) => return false,
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_idle_and_excess_connections_are_closed() {
    let p = Proc::start(&[
        ("KALAMDB_SERVER_REQUEST_HEADER_TIMEOUT_SECS", "1"),
        ("KALAMDB_SERVER_REQUEST_BODY_TIMEOUT_SECS", "1"),
        ("KALAMDB_SERVER_MAX_CONNECTIONS_PER_IP", "4"),
        ("KALAMDB_SERVER_RESPONSE_WRITE_TIMEOUT_SECS", "1"),
    ]);
    let addr = p.base.trim_start_matches("http://").to_string();
    let connect = || std::net::TcpStream::connect(&addr).unwrap();

    // Idle, and half-sent headers: closed after the header timeout.
    let mut idle = connect();
    let mut partial = connect();
    partial
        .write_all(b"POST /v1/api/sql HTTP/1.1\r\nHost: x\r\n")
        .unwrap();
    assert!(closed_within(&mut idle, Duration::from_secs(5)));
    assert!(closed_within(&mut partial, Duration::from_secs(5)));

    // An unfinished body: 408 after the body timeout.
    let mut slow = connect();
    slow.write_all(
        b"POST /v1/api/sql HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{\"sql\"",
    )
    .unwrap();
    slow.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut reply = String::new();
    let _ = slow.read_to_string(&mut reply);
    assert!(reply.starts_with("HTTP/1.1 408"), "{reply}");

    // A client that stops reading a large response is disconnected.
    let token = login_token(&reqwest::Client::new(), &p.base, "root", ROOT_PASSWORD).await;
    let body =
        json!({"sql": "SELECT repeat('x', 1000) FROM generate_series(1, 50000)"}).to_string();
    let mut reader = connect();
    write!(
        reader,
        "POST /v1/api/sql HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {token}\r\n\
         Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    tokio::time::sleep(Duration::from_secs(4)).await;
    reader
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let mut got = Vec::new();
    let _ = reader.read_to_end(&mut got);
    assert!(
        got.starts_with(b"HTTP/1.1 200"),
        "{:?}",
        String::from_utf8_lossy(&got[..got.len().min(200)])
    );
    assert!(
        got.len() < 50_000_000,
        "the whole response was kept for the client: {}",
        got.len()
    );

    // Per-address limit: the fifth connection from 127.0.0.1 is closed at once, while another
    // address is served.
    let held: Vec<_> = (0..4).map(|_| connect()).collect();
    let mut extra = connect();
    assert!(closed_within(&mut extra, Duration::from_millis(500)));
    let other = reqwest::Client::builder()
        .local_address(Some("127.0.0.2".parse().unwrap()))
        .build()
        .unwrap();
    let port = addr.rsplit(':').next().unwrap();
    let resp = other
        .post(format!("http://127.0.0.1:{port}/v1/api/auth/login"))
        .json(&json!({"user": "root", "password": ROOT_PASSWORD}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 200);
    drop(held);
}

#[tokio::test]
async fn client_chosen_names_have_length_limits() {
    let s = TestServer::start().await;
    let root = s.root_token().await;
    let mut ws = Ws::authed(&s, &root).await;
    let long = "s".repeat(300);
    ws.subscribe(&long, "SELECT * FROM system.namespaces", json!({}))
        .await;
    let e = ws.next().await;
    assert_eq!(e["code"], "INVALID_SUBSCRIPTION_ID", "{e}");
    let (status, body) = s
        .sql_body(&root, json!({"sql": "SELECT 1", "namespace_id": long}))
        .await;
    assert_eq!(
        (status, code(&body)),
        (400, "INVALID_INPUT"),
        "{}",
        short(&body)
    );
}

async fn refresh(s: &TestServer, refresh_token: &str) -> u16 {
    s.http
        .post(format!("{}/v1/api/auth/refresh", s.base))
        .bearer_auth(refresh_token)
        .send()
        .await
        .unwrap()
        .status()
        .as_u16()
}

#[tokio::test]
async fn tokens_die_with_password_role_and_account_changes() {
    let s = TestServer::start().await;
    let root = s.root_token().await;
    s.ok(&root, "CREATE USER bob WITH PASSWORD 'bob-pass-1234'")
        .await;
    let (_, grant) = s.login("bob", "bob-pass-1234").await;
    let (access, refresh_token) = (
        grant["access_token"].as_str().unwrap().to_string(),
        grant["refresh_token"].as_str().unwrap().to_string(),
    );
    assert_eq!(s.sql(&access, "SELECT 1").await.0, 200);

    s.ok(&root, "ALTER USER bob SET PASSWORD 'bob-pass-5678'")
        .await;
    assert_eq!(s.sql(&access, "SELECT 1").await.0, 401);
    assert_eq!(refresh(&s, &refresh_token).await, 401);

    let bob = s.token("bob", "bob-pass-5678").await;
    s.ok(&root, "ALTER USER bob SET ROLE service").await;
    assert_eq!(s.sql(&bob, "SELECT 1").await.0, 401);
    s.ok(&root, "ALTER USER bob SET ROLE user").await;
    assert_eq!(
        s.sql(&bob, "SELECT 1").await.0,
        401,
        "a role change back does not revive it"
    );

    let bob = s.token("bob", "bob-pass-5678").await;
    s.ok(&root, "DROP USER bob").await;
    s.ok(&root, "CREATE USER bob WITH PASSWORD 'bob-pass-5678'")
        .await;
    assert_eq!(s.sql(&bob, "SELECT 1").await.0, 401, "re-created account");
    let fresh = s.token("bob", "bob-pass-5678").await;
    assert_eq!(s.sql(&fresh, "SELECT 1").await.0, 200);
}

async fn login_from(s: &TestServer, from: &str, user: &str, password: &str) -> (u16, Value) {
    let client = reqwest::Client::builder()
        .local_address(Some(from.parse().unwrap()))
        .build()
        .unwrap();
    login_with(&client, &s.base, user, password).await
}

#[tokio::test]
async fn lockout_is_per_account_and_address_and_says_nothing_of_existence() {
    let s = TestServer::start_with(|c| c.engine.auth.auth_requests_per_ip_per_sec = 1000).await;
    for _ in 0..5 {
        let (status, _) = login_from(&s, "127.0.0.2", "root", "wrong-password").await;
        assert_eq!(status, 401);
        login_from(&s, "127.0.0.2", "ghost", "wrong-password").await;
    }
    let locked = login_from(&s, "127.0.0.2", "root", ROOT_PASSWORD).await;
    let ghost = login_from(&s, "127.0.0.2", "ghost", "any-password").await;
    assert_eq!(locked.1["error"], "account_locked", "{locked:?}");
    assert_eq!(locked, ghost, "a missing account locks and answers alike");
    // root from another address is not locked out.
    let (status, _) = login_from(&s, "127.0.0.3", "root", ROOT_PASSWORD).await;
    assert_eq!(status, 200);
    assert_eq!(s.login("root", ROOT_PASSWORD).await.0, 200);
}

#[tokio::test]
async fn errors_do_not_reveal_accounts_or_view_definitions() {
    let s = TestServer::start().await;
    let root = s.root_token().await;
    s.ok(&root, "CREATE NAMESPACE app; CREATE SHARED TABLE app.t (id BIGINT PRIMARY KEY, secret TEXT) WITH (ACCESS_LEVEL = 'PUBLIC'); CREATE VIEW app.v AS SELECT id FROM app.t WHERE secret = 'x'").await;
    let t = s.users_with_tokens(&root, &["carol"]).await.remove(0);
    let (a_status, a) = s.sql(&t, "EXECUTE AS USER 'root' (SELECT 1)").await;
    let (b_status, b) = s.sql(&t, "EXECUTE AS USER 'nobody' (SELECT 1)").await;
    assert_eq!((a_status, code(&a)), (b_status, code(&b)));
    assert_eq!(
        a["error"]["message"].as_str().unwrap().replace("root", "?"),
        b["error"]["message"]
            .as_str()
            .unwrap()
            .replace("nobody", "?"),
    );
    let plain = s
        .ok(
            &t,
            "SELECT table_name, definition FROM information_schema.views",
        )
        .await;
    assert_eq!(plain["rows"], json!([["v", null]]), "{plain}");
    let admin = s
        .ok(&root, "SELECT definition FROM information_schema.views")
        .await;
    assert!(
        admin["rows"][0][0].as_str().unwrap().contains("secret"),
        "{admin}"
    );
}

#[tokio::test]
async fn nested_views_cannot_make_planning_explode() {
    let s = TestServer::start().await;
    let root = s.root_token().await;
    s.ok(
        &root,
        "CREATE NAMESPACE app; CREATE VIEW app.v0 AS SELECT 1 AS x",
    )
    .await;
    // Each view names the previous one twice: planning the last one would double 30 times.
    // Views are not expanded when created; the statement that reads the last one is refused.
    for n in 1..=30 {
        let sql = format!(
            "CREATE VIEW app.v{n} AS SELECT x FROM app.v{p} UNION ALL SELECT x FROM app.v{p}",
            p = n - 1
        );
        s.ok(&root, &sql).await;
    }
    let (status, body) = s.sql(&root, "SELECT count(*) FROM app.v30").await;
    assert_eq!(
        (status, code(&body)),
        (400, "INVALID_SQL"),
        "{}",
        short(&body)
    );
    let message = body["error"]["message"].as_str().unwrap();
    // Refused by the plan-size limit: planning stopped there instead of doubling 30 times.
    assert!(message.contains("max_plan_nodes"), "{message}");
    // Shallow views still work.
    let r = s.ok(&root, "SELECT count(*) FROM app.v3").await;
    assert_eq!(r["rows"], json!([["8"]]));
}
