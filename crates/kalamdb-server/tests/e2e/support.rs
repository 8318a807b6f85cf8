//! Test helpers: start a server, log in, send SQL.

use kalamdb_server::RunningServer;
use kalamdb_server::Settings;
use serde_json::{Value, json};
use std::path::Path;

/// Root's password in every test server.
pub(crate) const ROOT_PASSWORD: &str = "root-pass-123";

/// Starts the real `kalamdb-server` binary on a free port with data in `dir` and the given
/// extra `KALAMDB_*` settings; returns the process and its base URL.
pub(crate) fn spawn_binary(dir: &Path, env: &[(&str, &str)]) -> (std::process::Child, String) {
    use std::io::{BufRead, BufReader};
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_kalamdb-server"))
        .arg("--config")
        .arg(dir.join("absent.toml"))
        .env("KALAMDB_DATA_DIR", dir)
        .env("KALAMDB_SERVER_PORT", "0")
        .env("KALAMDB_ROOT_PASSWORD", ROOT_PASSWORD)
        .env("KALAMDB_AUTH_BCRYPT_COST", "4")
        .env("KALAMDB_LOG_LEVEL", "warn")
        .envs(env.iter().copied())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("server binary starts");
    let stdout = child.stdout.take().unwrap();
    let mut line = String::new();
    BufReader::new(stdout).read_line(&mut line).unwrap();
    let url = line
        .split_whitespace()
        .find(|w| w.starts_with("http://"))
        .unwrap_or_else(|| panic!("no address in {line:?}"))
        .to_string();
    (child, url)
}

/// Installs what the binary installs for `system.server_logs` (each test is its own process
/// under nextest; elsewhere the first test's subscriber stays).
fn keep_recent_log_lines() {
    use tracing_subscriber::layer::SubscriberExt;
    use tracing_subscriber::util::SubscriberInitExt;
    let _ = tracing_subscriber::registry()
        .with(tracing_subscriber::filter::LevelFilter::INFO)
        .with(kalamdb_core::server_logs::layer())
        .try_init();
}

/// A config for a test server on a free loopback port with data in `dir`.
pub(crate) fn test_config(dir: &Path) -> Settings {
    let mut c = Settings::default();
    c.engine.server.port = 0;
    c.engine.server.node_id = "test-node".into();
    c.engine.storage.data_path = dir.to_string_lossy().into_owned();
    // Tests look at the folder right after a compaction.
    c.engine.storage.superseded_file_grace_ms = 0;
    c.engine.auth.root_password = ROOT_PASSWORD.into();
    c.engine.auth.bcrypt_cost = 4;
    c.engine.auth.jwt_secret = "test-secret-test-secret-test-secret-123".into();
    c
}

/// Posts a login of `user` to `base` with `http`; returns status and JSON body.
pub(crate) async fn login_with(
    http: &reqwest::Client,
    base: &str,
    user: &str,
    password: &str,
) -> (u16, Value) {
    let resp = http
        .post(format!("{base}/v1/api/auth/login"))
        .json(&json!({"user": user, "password": password}))
        .send()
        .await
        .unwrap();
    let status = resp.status().as_u16();
    (status, resp.json().await.unwrap_or(Value::Null))
}

/// Logs `user` in at `base` and returns the access token.
pub(crate) async fn login_token(
    http: &reqwest::Client,
    base: &str,
    user: &str,
    password: &str,
) -> String {
    let (status, body) = login_with(http, base, user, password).await;
    assert_eq!(status, 200, "login of {user} failed");
    body["access_token"].as_str().unwrap().to_string()
}

/// Sends `sql` to `base` with `token`; returns status and JSON body (Null if not JSON, or on a
/// connection error, status 0).
pub(crate) async fn post_sql(
    http: &reqwest::Client,
    base: &str,
    token: &str,
    sql: &str,
) -> (u16, Value) {
    match http
        .post(format!("{base}/v1/api/sql"))
        .bearer_auth(token)
        .json(&json!({"sql": sql}))
        .send()
        .await
    {
        Ok(resp) => {
            let status = resp.status().as_u16();
            (status, resp.json().await.unwrap_or(Value::Null))
        }
        Err(_) => (0, Value::Null),
    }
}

/// An in-process server with its own temp dir.
pub(crate) struct TestServer {
    pub(crate) server: Option<RunningServer>,
    pub(crate) dir: tempfile::TempDir,
    pub(crate) base: String,
    pub(crate) http: reqwest::Client,
    /// The config it started with; a restart uses it again.
    config: Settings,
}

impl TestServer {
    /// The failure and pause points of this server's engine.
    pub(crate) fn faults(&self) -> &kalamdb_tables::faults::Faults {
        self.server
            .as_ref()
            .expect("a server started in this process")
            .app
            .tables()
            .faults()
    }

    pub(crate) async fn start() -> Self {
        Self::start_with(|_| {}).await
    }

    /// A handle on a server started elsewhere (e.g. the binary) at `base`.
    pub(crate) fn remote(base: &str) -> Self {
        Self {
            server: None,
            dir: tempfile::tempdir().unwrap(),
            base: base.to_string(),
            http: reqwest::Client::new(),
            config: Settings::default(),
        }
    }

    /// Starts a server on the data already in `dir` (e.g. a restored backup).
    pub(crate) async fn start_in(dir: tempfile::TempDir) -> Self {
        Self::launch(dir, |_| {}).await
    }

    /// Starts a server whose test config is first adjusted by `adjust`.
    pub(crate) async fn start_with(adjust: impl FnOnce(&mut Settings)) -> Self {
        Self::launch(tempfile::tempdir().unwrap(), adjust).await
    }

    async fn launch(dir: tempfile::TempDir, adjust: impl FnOnce(&mut Settings)) -> Self {
        keep_recent_log_lines();
        let mut config = test_config(dir.path());
        adjust(&mut config);
        let server = kalamdb_server::start(config.clone(), false).await.unwrap();
        let base = format!("http://{}", server.addr);
        Self {
            server: Some(server),
            dir,
            base,
            http: reqwest::Client::new(),
            config,
        }
    }

    /// Stops the server cleanly and starts a new one on the same data dir and config.
    pub(crate) async fn restart(mut self) -> Self {
        self.server.take().unwrap().shutdown().await;
        let config = self.config.clone();
        Self::launch(self.dir, |c| *c = config).await
    }

    pub(crate) async fn login(&self, user: &str, password: &str) -> (u16, Value) {
        login_with(&self.http, &self.base, user, password).await
    }

    /// Logs in and returns the access token.
    pub(crate) async fn token(&self, user: &str, password: &str) -> String {
        login_token(&self.http, &self.base, user, password).await
    }

    /// Creates users (role user, password `<name>-pass-123`) and returns their access tokens.
    pub(crate) async fn users_with_tokens(&self, admin: &str, names: &[&str]) -> Vec<String> {
        let mut tokens = Vec::new();
        for u in names {
            self.ok(
                admin,
                &format!("CREATE USER {u} WITH PASSWORD '{u}-pass-123'"),
            )
            .await;
            tokens.push(self.token(u, &format!("{u}-pass-123")).await);
        }
        tokens
    }

    pub(crate) async fn root_token(&self) -> String {
        self.token("root", ROOT_PASSWORD).await
    }

    /// Sends a SQL request body; returns status and JSON body.
    pub(crate) async fn sql_body(&self, token: &str, body: Value) -> (u16, Value) {
        let resp = self
            .http
            .post(format!("{}/v1/api/sql", self.base))
            .bearer_auth(token)
            .json(&body)
            .send()
            .await
            .unwrap();
        let status = resp.status().as_u16();
        (status, resp.json().await.unwrap())
    }

    pub(crate) async fn sql(&self, token: &str, sql: &str) -> (u16, Value) {
        self.sql_body(token, json!({"sql": sql})).await
    }

    /// Runs SQL that must succeed; returns the first result.
    pub(crate) async fn ok(&self, token: &str, sql: &str) -> Value {
        let (status, body) = self.sql(token, sql).await;
        assert_eq!(status, 200, "{sql} failed: {body}");
        assert_eq!(body["status"], "success", "{sql}: {body}");
        body["results"][0].clone()
    }

    /// Runs SQL that must fail; returns (status, error code, message).
    pub(crate) async fn err(&self, token: &str, sql: &str) -> (u16, String, String) {
        let (status, body) = self.sql(token, sql).await;
        assert_eq!(body["status"], "error", "{sql} should fail: {body}");
        (
            status,
            body["error"]["code"].as_str().unwrap().to_string(),
            body["error"]["message"].as_str().unwrap().to_string(),
        )
    }
}

/// `(i, 'v<i>'), …` for the ids: VALUES of an `(id, v)` table.
pub(crate) fn id_values(ids: std::ops::RangeInclusive<i32>) -> String {
    ids.map(|i| format!("({i}, 'v{i}')"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Rows of a result as JSON arrays.
pub(crate) fn rows(result: &Value) -> Vec<Vec<Value>> {
    result["rows"]
        .as_array()
        .map(|r| {
            r.iter()
                .map(|row| row.as_array().unwrap().clone())
                .collect()
        })
        .unwrap_or_default()
}

/// xorshift64*: small, deterministic, good enough to pick operations.
pub(crate) struct Rng(pub(crate) u64);

impl Rng {
    /// A number in `0..n`.
    pub(crate) fn next(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D) % n
    }
}
