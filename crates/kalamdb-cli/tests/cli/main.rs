//! The `kalam` binary against a real server on a free port: run like a user runs it
//! (assert_cmd), its shell in a real pseudo-terminal (expectrl), imports of a million rows,
//! and the README's tour.

mod import;
mod interactive;
mod noninteractive;
mod readme;

use serde_json::{Value, json};
use std::path::Path;

/// Root's password in every test server (the README's, so its tour runs as written).
pub(crate) const ROOT_PASSWORD: &str = "kalamdb123";

/// A server started in this process, with its own data dir.
pub(crate) struct Server {
    pub(crate) url: String,
    _server: kalamdb_server::RunningServer,
    _dir: tempfile::TempDir,
    http: reqwest::Client,
}

impl Server {
    pub(crate) async fn start() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let mut c = kalamdb_server::Settings::default();
        c.engine.server.port = 0;
        c.engine.storage.data_path = dir.path().to_string_lossy().into_owned();
        c.engine.auth.root_password = ROOT_PASSWORD.into();
        c.engine.auth.bcrypt_cost = 4;
        c.engine.auth.jwt_secret = JWT_SECRET.into();
        let server = kalamdb_server::start(c, false).await.unwrap();
        Self {
            url: format!("http://{}", server.addr),
            _server: server,
            _dir: dir,
            http: reqwest::Client::new(),
        }
    }

    /// POSTs `body` to `path` (with `token` as Bearer); the JSON reply.
    async fn post(&self, path: &str, token: Option<&str>, body: Value) -> Value {
        let mut req = self.http.post(format!("{}{path}", self.url)).json(&body);
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        req.send().await.unwrap().json().await.unwrap()
    }

    /// Root's access token.
    pub(crate) async fn token(&self) -> String {
        let login = json!({"user": "root", "password": ROOT_PASSWORD});
        let body = self.post("/v1/api/auth/login", None, login).await;
        body["access_token"].as_str().unwrap().to_string()
    }

    /// Runs `sql` as root over HTTP (another client than the CLI); the reply.
    pub(crate) async fn sql(&self, sql: &str) -> Value {
        let token = self.token().await;
        let reply = self
            .post("/v1/api/sql", Some(&token), json!({"sql": sql}))
            .await;
        assert_eq!(reply["status"], "success", "{sql}: {reply}");
        reply
    }
}

/// The signing secret of the test servers (tests forge expired tokens with it).
pub(crate) const JWT_SECRET: &str = "cli-test-secret-cli-test-secret-1234";

/// `kalam` with an empty home (no saved credentials, config or history of the machine's user)
/// talking to `url`.
pub(crate) fn kalam(home: &Path, url: &str) -> assert_cmd::Command {
    let mut cmd = assert_cmd::Command::cargo_bin("kalam").unwrap();
    cmd.env("KALAM_HOME", home)
        .env("KALAM_URL", url)
        .env("COLUMNS", "100")
        .env_remove("KALAM_PASSWORD");
    cmd
}

/// `kalam` logged in as root.
pub(crate) fn root(home: &Path, url: &str) -> assert_cmd::Command {
    let mut cmd = kalam(home, url);
    cmd.args(["--user", "root", "--password", ROOT_PASSWORD]);
    cmd
}

/// Runs a blocking command off the runtime that serves the test's server.
pub(crate) async fn run(mut cmd: assert_cmd::Command) -> std::process::Output {
    tokio::task::spawn_blocking(move || cmd.output().unwrap())
        .await
        .unwrap()
}

pub(crate) fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}
