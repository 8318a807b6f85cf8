//! Login, tokens, roles and the first-run setup flow.

use crate::support::{ROOT_PASSWORD, TestServer, rows, test_config};
use jsonwebtoken::{EncodingKey, Header, encode};
use serde_json::json;

#[tokio::test]
async fn login_and_generic_failures() {
    let s = TestServer::start().await;
    let (status, body) = s.login("root", ROOT_PASSWORD).await;
    assert_eq!(status, 200);
    assert_eq!(body["user"]["id"], "root");
    assert_eq!(body["user"]["role"], "system");
    assert_eq!(body["admin_ui_access"], true);
    assert!(body["refresh_token"].is_string() && body["expires_at"].is_string());

    let (s1, wrong) = s.login("root", "nope-nope").await;
    let (s2, unknown) = s.login("nobody", "nope-nope").await;
    assert_eq!((s1, s2), (401, 401));
    assert_eq!(
        wrong, unknown,
        "unknown user and wrong password must look the same"
    );
    assert_eq!(wrong["error"], "unauthorized");

    let resp = s
        .http
        .post(format!("{}/v1/api/auth/login", s.base))
        .body("{not json")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 400);
}

#[tokio::test]
async fn bearer_auth_on_sql_endpoint() {
    let s = TestServer::start().await;
    let url = format!("{}/v1/api/sql", s.base);
    let body = json!({"sql": "SELECT 1"});
    let code = |v: serde_json::Value| v["error"]["code"].as_str().unwrap().to_string();

    let r = s.http.post(&url).json(&body).send().await.unwrap();
    assert_eq!(r.status().as_u16(), 401);
    assert_eq!(code(r.json().await.unwrap()), "MISSING_AUTHORIZATION");

    let r = s
        .http
        .post(&url)
        .basic_auth("root", Some(ROOT_PASSWORD))
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 401, "Basic auth is refused");
    assert_eq!(code(r.json().await.unwrap()), "INVALID_CREDENTIALS");

    for bad in ["garbage", "a.b.c"] {
        let (status, v) = s.sql_body(bad, body.clone()).await;
        assert_eq!((status, code(v)), (401, "INVALID_CREDENTIALS".to_string()));
    }

    // Forged: right claims, wrong key.
    let now = chrono_now();
    let claims = json!({"sub":"root","iss":"kalamdb","exp":now+3600,"iat":now,"role":"system","token_type":"access","email":null});
    let forged = encode(
        &Header::default(),
        &claims,
        &EncodingKey::from_secret(b"wrong-secret-wrong-secret-wrong!!"),
    )
    .unwrap();
    let (status, v) = s.sql_body(&forged, body.clone()).await;
    assert_eq!((status, code(v)), (401, "INVALID_CREDENTIALS".to_string()));

    // alg: none.
    let b64 = |b: &[u8]| base64url(b);
    let none = format!(
        "{}.{}.",
        b64(br#"{"alg":"none","typ":"JWT"}"#),
        b64(claims.to_string().as_bytes())
    );
    let (status, v) = s.sql_body(&none, body.clone()).await;
    assert_eq!((status, code(v)), (401, "INVALID_CREDENTIALS".to_string()));

    // Expired, signed with the server's own key.
    let secret = test_config(s.dir.path()).engine.auth.jwt_secret;
    let expired = json!({"sub":"root","iss":"kalamdb","exp":now-7200,"iat":now-9000,"role":"system","token_type":"access","email":null});
    let token = encode(
        &Header::default(),
        &expired,
        &EncodingKey::from_secret(secret.as_bytes()),
    )
    .unwrap();
    let (status, v) = s.sql_body(&token, body.clone()).await;
    assert_eq!((status, code(v)), (401, "TOKEN_EXPIRED".to_string()));

    // A refresh token is not an access token.
    let (_, login) = s.login("root", ROOT_PASSWORD).await;
    let refresh = login["refresh_token"].as_str().unwrap();
    let (status, v) = s.sql_body(refresh, body.clone()).await;
    assert_eq!((status, code(v)), (401, "INVALID_CREDENTIALS".to_string()));
    // … but it buys a new pair.
    let r = s
        .http
        .post(format!("{}/v1/api/auth/refresh", s.base))
        .bearer_auth(refresh)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 200);
    let fresh: serde_json::Value = r.json().await.unwrap();
    s.ok(fresh["access_token"].as_str().unwrap(), "SELECT 1")
        .await;
}

#[tokio::test]
async fn users_roles_and_drop_user() {
    let s = TestServer::start().await;
    let root = s.root_token().await;
    s.ok(
        &root,
        "CREATE USER alice WITH PASSWORD 'alice-pass-1' ROLE 'user'",
    )
    .await;
    let (_, code, msg) = s.err(&root, "CREATE USER bob WITH PASSWORD 'short'").await;
    assert_eq!(code, "SQL_EXECUTION_ERROR");
    assert!(msg.contains("at least 8"), "{msg}");
    let (_, code, _) = s
        .err(&root, "CREATE USER alice WITH PASSWORD 'alice-pass-2'")
        .await;
    assert_eq!(code, "SQL_EXECUTION_ERROR");

    let alice = s.token("alice", "alice-pass-1").await;
    let me = s
        .http
        .get(format!("{}/v1/api/auth/me", s.base))
        .bearer_auth(&alice)
        .send()
        .await
        .unwrap();
    let me: serde_json::Value = me.json().await.unwrap();
    assert_eq!(me["user"]["role"], "user");
    for sql in [
        "CREATE NAMESPACE x",
        "SELECT * FROM system.users",
        "CREATE USER eve WITH PASSWORD 'eve-pass-12'",
    ] {
        let (status, code, _) = s.err(&alice, sql).await;
        assert_eq!((status, code.as_str()), (403, "PERMISSION_DENIED"), "{sql}");
    }
    let (_, body) = s.sql(&alice, "SELECT 1 AS one").await;
    assert_eq!(body["results"][0]["as_user"], "alice");

    s.ok(&root, "DROP USER alice").await;
    let (status, body) = s.sql(&alice, "SELECT 1").await;
    assert_eq!(status, 401, "a dropped user's token stops working: {body}");
    let (status, _) = s.login("alice", "alice-pass-1").await;
    assert_eq!(status, 401);
}

#[tokio::test]
async fn first_run_setup() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = test_config(dir.path());
    config.engine.auth.root_password = String::new();
    let server = kalamdb_server::start(config, false).await.unwrap();
    let base = format!("http://{}", server.addr);
    let http = reqwest::Client::new();

    let status: serde_json::Value = http
        .get(format!("{base}/v1/api/auth/status"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(status["needs_setup"], true);
    let r = http
        .post(format!("{base}/v1/api/auth/login"))
        .json(&json!({"user":"root","password":""}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 428);
    let body: serde_json::Value = r.json().await.unwrap();
    assert_eq!(body["error"], "setup_required");

    let setup = json!({"user":"admin","password":"admin-pass-1","root_password":"new-root-pass-1"});
    let weak = json!({"user":"admin","password":"password","root_password":"new-root-pass-1"});
    // Weak password refused; then setup succeeds once; a second setup is a conflict.
    for (body, expected) in [(&weak, 400), (&setup, 200), (&setup, 409)] {
        let r = http
            .post(format!("{base}/v1/api/auth/setup"))
            .json(body)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status().as_u16(), expected, "{body}");
    }
    for (user, pw, role) in [
        ("admin", "admin-pass-1", "dba"),
        ("root", "new-root-pass-1", "system"),
    ] {
        let r = http
            .post(format!("{base}/v1/api/auth/login"))
            .json(&json!({"user":user,"password":pw}))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status().as_u16(), 200);
        let body: serde_json::Value = r.json().await.unwrap();
        assert_eq!(body["user"]["role"], role);
    }
    server.shutdown().await;
}

fn chrono_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

fn base64url(input: &[u8]) -> String {
    const T: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let mut out = String::new();
    for chunk in input.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..=chunk.len() {
            out.push(T[((n >> (18 - 6 * i)) & 63) as usize] as char);
        }
    }
    out
}

#[tokio::test]
async fn alter_user_password_role_and_token_invalidation() {
    let s = TestServer::start().await;
    let root = s.root_token().await;
    s.ok(
        &root,
        "CREATE USER bob WITH PASSWORD 'bob-pass-12'; CREATE USER amy WITH PASSWORD 'amy-pass-12'",
    )
    .await;
    let bob = s.token("bob", "bob-pass-12").await;
    // Self-service password change.
    s.ok(&bob, "ALTER USER bob SET PASSWORD 'bob-pass-34'")
        .await;
    assert_eq!(s.login("bob", "bob-pass-12").await.0, 401);
    let bob = s.token("bob", "bob-pass-34").await;
    // No self-promotion, no changing others.
    for sql in [
        "ALTER USER bob SET ROLE 'dba'",
        "ALTER USER amy SET PASSWORD 'amy-pass-99'",
    ] {
        let (status, code, _) = s.err(&bob, sql).await;
        assert_eq!((status, code.as_str()), (403, "PERMISSION_DENIED"), "{sql}");
    }
    let (_, _, msg) = s.err(&bob, "ALTER USER bob SET PASSWORD 'short'").await;
    assert!(msg.contains("at least 8"), "{msg}");
    // A role change stops tokens that carry the old role.
    s.ok(&root, "ALTER USER bob SET ROLE 'service'").await;
    let (status, _) = s.sql(&bob, "SELECT 1").await;
    assert_eq!(status, 401);
    let (_, login) = s.login("bob", "bob-pass-34").await;
    assert_eq!(login["user"]["role"], "service");
    let (_, code, _) = s.err(&root, "ALTER USER root SET ROLE 'user'").await;
    assert_eq!(code, "PERMISSION_DENIED");
    let (_, code, _) = s.err(&root, "ALTER USER ghost SET EMAIL 'g@x'").await;
    assert_eq!(code, "SQL_EXECUTION_ERROR");
}

#[tokio::test]
async fn failed_logins_lock_the_account_until_the_lock_expires() {
    let s = TestServer::start_with(|c| {
        c.engine.auth.max_failed_logins = 3;
        c.engine.auth.lockout_seconds = 1;
    })
    .await;
    let root = s.root_token().await;
    s.ok(&root, "CREATE USER carol WITH PASSWORD 'carol-pass-1'")
        .await;
    for _ in 0..3 {
        assert_eq!(s.login("carol", "wrong-pass-0").await.0, 401);
    }
    let (status, body) = s.login("carol", "carol-pass-1").await;
    assert_eq!(status, 401);
    assert_eq!(body["error"], "account_locked", "{body}");
    tokio::time::sleep(std::time::Duration::from_millis(1200)).await;
    assert_eq!(
        s.login("carol", "carol-pass-1").await.0,
        200,
        "the lock ends"
    );
}

#[tokio::test]
async fn auth_endpoints_are_rate_limited_per_ip() {
    let s = TestServer::start_with(|c| c.engine.auth.auth_requests_per_ip_per_sec = 3).await;
    let mut statuses = Vec::new();
    for _ in 0..8 {
        let (status, body) = s.login("nobody", "wrong-pass-0").await;
        if status == 429 {
            assert_eq!(body["error"], "rate_limited");
        }
        statuses.push(status);
    }
    assert!(
        statuses.contains(&401) && statuses.contains(&429),
        "{statuses:?}"
    );
    // The SQL endpoint is not affected by the auth limit.
    tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
    let root = s.root_token().await;
    for _ in 0..8 {
        s.ok(&root, "SELECT 1").await;
    }
}

#[tokio::test]
async fn execute_as_user_follows_the_role_hierarchy() {
    let s = TestServer::start().await;
    let root = s.root_token().await;
    s.ok(
        &root,
        "CREATE NAMESPACE app; CREATE USER TABLE app.notes (id INT PRIMARY KEY, body TEXT); \
         CREATE USER alice WITH PASSWORD 'alice-pass-1'; CREATE USER svc WITH PASSWORD 'svc-pass-12' ROLE 'service'; \
         CREATE USER dba1 WITH PASSWORD 'dba1-pass-12' ROLE 'dba'",
    )
    .await;
    let svc = s.token("svc", "svc-pass-12").await;
    let alice = s.token("alice", "alice-pass-1").await;
    let r = s
        .ok(
            &svc,
            "EXECUTE AS USER 'alice' (INSERT INTO app.notes VALUES (1, 'from svc'))",
        )
        .await;
    assert_eq!(r["as_user"], "alice");
    let r = s.ok(&alice, "SELECT id, body FROM app.notes").await;
    assert_eq!(rows(&r), vec![vec![json!(1), json!("from svc")]]);
    let r = s.ok(&svc, "SELECT count(*) FROM app.notes").await;
    assert_eq!(
        rows(&r),
        vec![vec![json!("0")]],
        "the service's own partition is untouched"
    );
    let r = s
        .ok(
            &svc,
            "EXECUTE AS USER alice (SELECT body FROM app.notes WHERE id = 1)",
        )
        .await;
    assert_eq!(
        (r["as_user"].clone(), rows(&r)),
        (json!("alice"), vec![vec![json!("from svc")]])
    );
    let r = s
        .ok(
            &alice,
            "EXECUTE AS USER 'alice' (SELECT count(*) FROM app.notes)",
        )
        .await;
    assert_eq!(rows(&r), vec![vec![json!("1")]]);
    for (token, sql) in [
        (&svc, "EXECUTE AS USER 'dba1' (SELECT 1)"),
        (&alice, "EXECUTE AS USER 'svc' (SELECT 1)"),
    ] {
        let (status, code, _) = s.err(token, sql).await;
        assert_eq!((status, code.as_str()), (403, "PERMISSION_DENIED"), "{sql}");
    }
    let (status, code, _) = s.err(&svc, "EXECUTE AS USER 'alice' ()").await;
    assert_eq!((status, code.as_str()), (400, "INVALID_INPUT"));
    // A missing user answers like a forbidden one to callers who cannot list users; admins
    // learn that it is missing.
    let (status, code, _) = s.err(&svc, "EXECUTE AS USER 'ghost' (SELECT 1)").await;
    assert_eq!((status, code.as_str()), (403, "PERMISSION_DENIED"));
    let (status, code, _) = s.err(&root, "EXECUTE AS USER 'ghost' (SELECT 1)").await;
    assert_eq!((status, code.as_str()), (400, "SQL_EXECUTION_ERROR"));
}

#[tokio::test]
async fn ddl_user_management_and_impersonation_are_audited() {
    let s = TestServer::start().await;
    let root = s.root_token().await;
    s.ok(
        &root,
        "CREATE NAMESPACE app; CREATE USER TABLE app.n (id INT PRIMARY KEY); \
         CREATE USER alice WITH PASSWORD 'alice-pass-1'; ALTER USER alice SET PASSWORD 'alice-pass-2'",
    )
    .await;
    s.ok(
        &root,
        "EXECUTE AS USER 'alice' (INSERT INTO app.n VALUES (1))",
    )
    .await;
    s.ok(&root, "DROP USER alice").await;
    let r = s
        .ok(
            &root,
            "SELECT actor_user_id, action, target, subject_user_id, details FROM system.audit_log \
                    WHERE action NOT LIKE 'LOGIN%' ORDER BY audit_id",
        )
        .await;
    let got: Vec<Vec<serde_json::Value>> =
        rows(&r).into_iter().map(|row| row[..4].to_vec()).collect();
    assert_eq!(
        got,
        vec![
            vec![
                json!("root"),
                json!("CREATE_NAMESPACE"),
                json!("app"),
                json!(null)
            ],
            vec![
                json!("root"),
                json!("CREATE_TABLE"),
                json!("app.n"),
                json!(null)
            ],
            vec![
                json!("root"),
                json!("CREATE_USER"),
                json!("alice"),
                json!(null)
            ],
            vec![
                json!("root"),
                json!("ALTER_USER"),
                json!("alice"),
                json!(null)
            ],
            vec![
                json!("root"),
                json!("EXECUTE_AS"),
                json!("alice"),
                json!("alice")
            ],
            vec![
                json!("root"),
                json!("DROP_USER"),
                json!("alice"),
                json!(null)
            ],
        ]
    );
    let text = r.to_string();
    assert!(
        !text.contains("alice-pass"),
        "passwords never reach the audit log: {text}"
    );
    assert!(text.contains("INSERT INTO app.n VALUES (1)"));
}

#[tokio::test]
async fn logins_and_show_describe_are_audited_with_the_client_address() {
    let s = TestServer::start().await;
    let root = s.root_token().await;
    s.ok(
        &root,
        "CREATE NAMESPACE app; CREATE TABLE app.t (id INT PRIMARY KEY); \
         CREATE USER alice WITH PASSWORD 'alice-pass-1'",
    )
    .await;
    assert_eq!(s.login("alice", "wrong-pass-1").await.0, 401);
    assert_eq!(s.login("ghost", "wrong-pass-1").await.0, 401);
    assert_eq!(s.login("alice", "alice-pass-1").await.0, 200);
    s.ok(
        &root,
        "SHOW NAMESPACES; SHOW TABLES IN app; SHOW STORAGES; DESCRIBE TABLE app.t",
    )
    .await;
    let r = s
        .ok(
            &root,
            "SELECT actor_user_id, action, target, ip_address, details FROM system.audit_log \
             WHERE action LIKE 'LOGIN%' OR action LIKE 'SHOW%' OR action LIKE 'DESCRIBE%' \
             ORDER BY audit_id",
        )
        .await;
    let got: Vec<Vec<serde_json::Value>> =
        rows(&r).into_iter().map(|row| row[..4].to_vec()).collect();
    let local = json!("127.0.0.1");
    let row = |actor: &str, action: &str, target: &str| {
        vec![json!(actor), json!(action), json!(target), local.clone()]
    };
    assert_eq!(
        got,
        vec![
            row("root", "LOGIN", "root"),
            row("alice", "LOGIN_FAILED", "alice"),
            row("ghost", "LOGIN_FAILED", "ghost"),
            row("alice", "LOGIN", "alice"),
            row("root", "SHOW_NAMESPACES", ""),
            row("root", "SHOW_TABLES", "app"),
            row("root", "SHOW_STORAGES", ""),
            row("root", "DESCRIBE_TABLE", "app.t"),
        ]
    );
    assert!(
        !r.to_string().contains("wrong-pass"),
        "passwords never reach the audit log"
    );
}

#[tokio::test]
async fn permission_matrix_by_role() {
    let s = TestServer::start().await;
    let root = s.root_token().await;
    s.ok(
        &root,
        "CREATE NAMESPACE app; \
         CREATE SHARED TABLE app.pub (id INT PRIMARY KEY) WITH (ACCESS_LEVEL = 'PUBLIC'); \
         CREATE SHARED TABLE app.priv (id INT PRIMARY KEY) WITH (ACCESS_LEVEL = 'PRIVATE'); \
         CREATE SHARED TABLE app.dbaonly (id INT PRIMARY KEY) WITH (ACCESS_LEVEL = 'DBA')",
    )
    .await;
    let roles = ["user", "service", "dba", "system"];
    let mut tokens = Vec::new();
    for r in roles {
        s.ok(
            &root,
            &format!("CREATE USER u_{r} WITH PASSWORD 'pass-{r}-123' ROLE '{r}'"),
        )
        .await;
        tokens.push(s.token(&format!("u_{r}"), &format!("pass-{r}-123")).await);
    }
    // (statement template, allowed for user, service, dba, system); {r} is the role name.
    let matrix: &[(&str, [bool; 4])] = &[
        ("CREATE NAMESPACE ns_{r}", [false, false, true, true]),
        (
            "CREATE SHARED TABLE app.s_{r} (id INT PRIMARY KEY)",
            [false, true, true, true],
        ),
        (
            "CREATE USER TABLE app.u_{r} (id INT PRIMARY KEY)",
            [true, true, true, true],
        ),
        ("DROP TABLE app.u_{r}", [false, false, true, true]),
        (
            "CREATE USER x_{r} WITH PASSWORD 'x-pass-1234'",
            [false, false, true, true],
        ),
        ("SELECT * FROM system.users", [false, false, true, true]),
        ("SELECT * FROM app.pub", [true, true, true, true]),
        ("SELECT * FROM app.priv", [false, true, true, true]),
        ("SELECT * FROM app.dbaonly", [false, false, true, true]),
        (
            "INSERT INTO app.pub VALUES ({n})",
            [false, true, true, true],
        ),
        (
            "INSERT INTO app.dbaonly VALUES ({n})",
            [false, false, true, true],
        ),
        ("EXPLAIN SELECT 1", [false, false, true, true]),
    ];
    for (template, allowed) in matrix {
        for (i, role) in roles.iter().enumerate() {
            let sql = template.replace("{r}", role).replace("{n}", &i.to_string());
            let (status, body) = s.sql(&tokens[i], &sql).await;
            if allowed[i] {
                assert_eq!(status, 200, "{role} should be allowed: {sql}: {body}");
            } else {
                assert_eq!(status, 403, "{role} should be denied: {sql}: {body}");
                assert_eq!(body["error"]["code"], "PERMISSION_DENIED");
            }
        }
    }
}

/// The user id is the user name: an account created under a dropped user's name starts empty
/// (hot and flushed rows of the old account are gone), and only system users drop system users.
#[tokio::test]
async fn a_recreated_user_name_does_not_inherit_the_dropped_accounts_rows() {
    let s = TestServer::start().await;
    let root = s.root_token().await;
    s.ok(
        &root,
        "CREATE NAMESPACE app; CREATE USER TABLE app.notes (id BIGINT PRIMARY KEY, body TEXT); \
         CREATE STREAM TABLE app.ev (v TEXT) WITH (TTL_SECONDS = 3600)",
    )
    .await;
    let users = s.users_with_tokens(&root, &["henry", "ivy"]).await;
    s.ok(
        &users[0],
        "INSERT INTO app.notes VALUES (1, 'flushed secret')",
    )
    .await;
    s.ok(
        &users[1],
        "INSERT INTO app.notes VALUES (1, 'ivy keeps this')",
    )
    .await;
    s.ok(&root, "STORAGE FLUSH TABLE app.notes").await;
    s.ok(
        &users[0],
        "INSERT INTO app.notes VALUES (2, 'hot secret'); INSERT INTO app.ev VALUES ('secret event')",
    )
    .await;

    s.ok(&root, "DROP USER henry").await;
    let r = s
        .ok(&root, "CREATE USER henry WITH PASSWORD 'henry-pass-2'")
        .await;
    assert!(r["message"].as_str().unwrap().contains("removed"), "{r}");
    let henry = s.token("henry", "henry-pass-2").await;
    assert!(rows(&s.ok(&henry, "SELECT * FROM app.notes").await).is_empty());
    assert!(rows(&s.ok(&henry, "SELECT * FROM app.ev").await).is_empty());
    let restarted = s.restart().await;
    let henry = restarted.token("henry", "henry-pass-2").await;
    assert!(rows(&restarted.ok(&henry, "SELECT * FROM app.notes").await).is_empty());
    let ivy = restarted.token("ivy", "ivy-pass-123").await;
    assert_eq!(
        rows(&restarted.ok(&ivy, "SELECT body FROM app.notes").await),
        vec![vec![json!("ivy keeps this")]]
    );

    // A dba may not drop a system user; a plain user may not learn system tables' columns.
    let root = restarted.root_token().await;
    restarted
        .ok(
            &root,
            "CREATE USER sys2 WITH PASSWORD 'sys2-pass-123' ROLE system; \
             CREATE USER dba1 WITH PASSWORD 'dba1-pass-123' ROLE dba",
        )
        .await;
    let dba = restarted.token("dba1", "dba1-pass-123").await;
    let (status, _, msg) = restarted.err(&dba, "DROP USER sys2").await;
    assert_eq!(status, 403, "{msg}");
    let (status, _, msg) = restarted
        .err(&ivy, "SELECT nonexistent FROM system.users")
        .await;
    assert_eq!(status, 403, "{msg}");
    assert!(!msg.contains("password_hash"), "{msg}");
}

/// Columns named `credentials` or `password_hash` show `***` to non-admin callers (spec §4.3).
#[tokio::test]
async fn sensitive_columns_are_masked_for_non_admins() {
    let s = TestServer::start().await;
    let root = s.root_token().await;
    s.ok(
        &root,
        "CREATE NAMESPACE app; \
         CREATE SHARED TABLE app.acc (id BIGINT PRIMARY KEY, password_hash TEXT, credentials TEXT, note TEXT) \
           WITH (ACCESS_LEVEL = 'PUBLIC'); \
         INSERT INTO app.acc VALUES (1, 'h', 'c', 'n'), (2, NULL, NULL, 'm'); \
         CREATE USER svc WITH PASSWORD 'svc-pass-1234' ROLE service",
    )
    .await;
    let q = "SELECT password_hash, credentials, note FROM app.acc ORDER BY id";
    let svc = s.token("svc", "svc-pass-1234").await;
    assert_eq!(
        rows(&s.ok(&svc, q).await),
        vec![
            vec![json!("***"), json!("***"), json!("n")],
            vec![json!(null), json!(null), json!("m")]
        ]
    );
    assert_eq!(
        rows(&s.ok(&root, q).await)[0],
        vec![json!("h"), json!("c"), json!("n")]
    );
    let as_user = format!("EXECUTE AS USER 'svc' ({q})");
    assert_eq!(rows(&s.ok(&root, &as_user).await)[0][0], json!("***"));
}
