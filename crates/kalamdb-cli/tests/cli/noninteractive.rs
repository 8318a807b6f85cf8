//! `-c`, `-f`, stdin, the output formats, exit codes and the errors people meet; saved
//! credentials (mode 0600, listed without secrets, refreshed when the token expires).

use crate::{Server, kalam, root, run, text};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn commands_files_stdin_and_formats() {
    let s = Server::start().await;
    let home = tempfile::tempdir().unwrap();
    let home = home.path();
    let out = run({
        let mut c = root(home, &s.url);
        c.args([
            "-c",
            "CREATE NAMESPACE app; \
             CREATE SHARED TABLE app.t (id BIGINT PRIMARY KEY, name TEXT, score DOUBLE); \
             INSERT INTO app.t VALUES (1, 'a', 1.5), (2, NULL, 2)",
        ]);
        c
    })
    .await;
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(text(&out.stdout).contains("Inserted 2 row(s)"));

    let query = "SELECT id, name, score FROM app.t ORDER BY id";
    let csv = run({
        let mut c = root(home, &s.url);
        c.args(["--csv", "-c", query]);
        c
    })
    .await;
    assert_eq!(text(&csv.stdout), "id,name,score\n1,a,1.5\n2,,2.0\n");

    let json = run({
        let mut c = root(home, &s.url);
        c.args(["--format", "json", "-c", query]);
        c
    })
    .await;
    assert_eq!(
        text(&json.stdout),
        "[\n  {\"id\":\"1\",\"name\":\"a\",\"score\":1.5},\n  {\"id\":\"2\",\"name\":null,\"score\":2.0}\n]\n"
    );

    let table = run({
        let mut c = root(home, &s.url);
        c.args(["-c", query]);
        c
    })
    .await;
    assert_eq!(
        text(&table.stdout),
        "┌────┬──────┬───────┐\n\
         │ id ┆ name ┆ score │\n\
         ╞════╪══════╪═══════╡\n\
         │ 1  ┆ a    ┆ 1.5   │\n\
         │ 2  ┆ NULL ┆ 2.0   │\n\
         └────┴──────┴───────┘\n\
         (2 rows)\n"
    );

    // A file stops at its first error (exit 1) unless told to go on; stdin works the same.
    let dir = tempfile::tempdir().unwrap();
    let script = dir.path().join("script.sql");
    std::fs::write(
        &script,
        "INSERT INTO app.t VALUES (3, 'c', 3);\n\
         INSERT INTO app.t VALUES (3, 'again', 3);\n\
         INSERT INTO app.t VALUES (4, 'd', 4);\n",
    )
    .unwrap();
    let stopped = run({
        let mut c = root(home, &s.url);
        c.arg("-f").arg(&script);
        c
    })
    .await;
    assert_eq!(stopped.status.code(), Some(1));
    assert!(
        text(&stopped.stderr).starts_with("ERROR SQL_EXECUTION_ERROR: "),
        "{}",
        text(&stopped.stderr)
    );
    assert_eq!(count(&s, "app.t").await, "3");
    std::fs::write(
        &script,
        "INSERT INTO app.t VALUES (3, 'again', 3);\nINSERT INTO app.t VALUES (4, 'd', 4);\n",
    )
    .unwrap();
    let went_on = run({
        let mut c = root(home, &s.url);
        c.arg("--continue-on-error").arg("-f").arg(&script);
        c
    })
    .await;
    assert_eq!(went_on.status.code(), Some(1));
    assert_eq!(count(&s, "app.t").await, "4");
    let piped = run({
        let mut c = root(home, &s.url);
        c.arg("--csv")
            .write_stdin("SELECT name\nFROM app.t WHERE id = 4;");
        c
    })
    .await;
    assert_eq!(text(&piped.stdout), "name\nd\n");

    // Backslash commands in a script: export in every format and import each back.
    let mut script = String::new();
    for ext in ["parquet", "csv", "jsonl"] {
        let file = dir.path().join(format!("t.{ext}"));
        script.push_str(&format!(
            "CREATE SHARED TABLE app.t_{ext} (id BIGINT PRIMARY KEY, name TEXT, score DOUBLE);\n\
             \\export \"SELECT id, name, score FROM app.t\" {f}\n\
             \\import app.t_{ext} {f}\n",
            f = file.display()
        ));
    }
    let round = run({
        let mut c = root(home, &s.url);
        c.args(["-c", &script]);
        c
    })
    .await;
    assert!(round.status.success(), "{}", text(&round.stderr));
    assert!(
        text(&round.stdout).contains("Exported 4 row(s)"),
        "{}",
        text(&round.stdout)
    );
    let all = "SELECT id, name, score FROM {} ORDER BY id";
    let want = s.sql(&all.replace("{}", "app.t")).await["results"][0]["rows"].clone();
    for ext in ["parquet", "csv", "jsonl"] {
        let got = s.sql(&all.replace("{}", &format!("app.t_{ext}"))).await;
        assert_eq!(got["results"][0]["rows"], want, "{ext}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn errors_people_meet_are_one_line_with_an_exit_code() {
    let s = Server::start().await;
    let home = tempfile::tempdir().unwrap();
    let home = home.path();
    let expect = |out: std::process::Output, code: i32, starts: &str| {
        let err = text(&out.stderr);
        assert_eq!(out.status.code(), Some(code), "{err}");
        assert!(err.starts_with(starts), "{err}");
        assert_eq!(err.lines().count(), 1, "{err}");
        assert!(!err.contains("panicked"), "{err}");
    };
    let wrong = run({
        let mut c = kalam(home, &s.url);
        c.args(["--user", "root", "--password", "nope", "-c", "SELECT 1"]);
        c
    })
    .await;
    expect(wrong, 4, "ERROR login failed: wrong user or password");

    // Nothing listens on port 9 of this machine.
    let down = run({
        let mut c = root(home, "http://127.0.0.1:9");
        c.args(["-c", "SELECT 1"]);
        c
    })
    .await;
    expect(
        down,
        3,
        "ERROR cannot reach the server at http://127.0.0.1:9",
    );

    s.sql("CREATE USER alice WITH PASSWORD 'alice-pass-1' ROLE 'user'")
        .await;
    let denied = run({
        let mut c = kalam(home, &s.url);
        c.args([
            "--user",
            "alice",
            "--password",
            "alice-pass-1",
            "-c",
            "CREATE NAMESPACE x",
        ]);
        c
    })
    .await;
    expect(denied, 1, "ERROR PERMISSION_DENIED: ");

    let no_login = run({
        let mut c = kalam(home, &s.url);
        c.args(["-c", "SELECT 1"]);
        c
    })
    .await;
    expect(no_login, 4, "ERROR not logged in");

    let bad_format = run({
        let mut c = root(home, &s.url);
        c.args(["--format", "xml", "-c", "SELECT 1"]);
        c
    })
    .await;
    expect(bad_format, 2, "ERROR unknown format 'xml'");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn saved_credentials_are_private_and_refreshed() {
    let s = Server::start().await;
    let home = tempfile::tempdir().unwrap();
    let home = home.path();
    let saved = run({
        let mut c = root(home, &s.url);
        c.args(["--save-credentials", "-c", "SELECT 1 AS one"]);
        c
    })
    .await;
    assert!(saved.status.success(), "{}", text(&saved.stderr));
    let file = home.join("credentials.toml");
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&file).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
    }
    let shown = run({
        let mut c = kalam(home, &s.url);
        c.arg("--show-credentials");
        c
    })
    .await;
    let listed = text(&shown.stdout);
    let access = token_in(&std::fs::read_to_string(&file).unwrap(), "access_token");
    assert!(listed.contains("user root"), "{listed}");
    assert!(!listed.contains(&access), "a secret was shown: {listed}");

    // An expired access token is renewed with the refresh token, and saved.
    let expired = expire(&access);
    let text_before = std::fs::read_to_string(&file)
        .unwrap()
        .replace(&access, &expired);
    std::fs::write(&file, text_before).unwrap();
    let renewed = run({
        let mut c = kalam(home, &s.url);
        c.args(["--csv", "-c", "SELECT 1 AS one"]);
        c
    })
    .await;
    assert!(renewed.status.success(), "{}", text(&renewed.stderr));
    assert_eq!(text(&renewed.stdout), "one\n1\n");
    let after = token_in(&std::fs::read_to_string(&file).unwrap(), "access_token");
    assert_ne!(after, expired);

    let deleted = run({
        let mut c = kalam(home, &s.url);
        c.arg("--delete-credentials");
        c
    })
    .await;
    assert!(text(&deleted.stdout).starts_with("Deleted the saved credentials"));
    assert!(!std::fs::read_to_string(&file).unwrap().contains(&after));
}

fn token_in(toml_text: &str, key: &str) -> String {
    let value: toml::Table = toml::from_str(toml_text).unwrap();
    let instances = value["instances"].as_table().unwrap();
    let (_, c) = instances.iter().next().unwrap();
    c[key].as_str().unwrap().to_string()
}

/// `token` with its expiry an hour ago, signed again with the server's secret.
fn expire(token: &str) -> String {
    use jsonwebtoken::{DecodingKey, EncodingKey, Header, Validation};
    let key = crate::JWT_SECRET.as_bytes();
    let mut v = Validation::new(jsonwebtoken::Algorithm::HS256);
    v.validate_exp = false;
    v.set_issuer(&["kalamdb"]);
    let mut claims =
        jsonwebtoken::decode::<serde_json::Value>(token, &DecodingKey::from_secret(key), &v)
            .unwrap()
            .claims;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    claims["exp"] = serde_json::json!(now - 3600);
    claims["iat"] = serde_json::json!(now - 7200);
    jsonwebtoken::encode(&Header::default(), &claims, &EncodingKey::from_secret(key)).unwrap()
}

async fn count(s: &Server, table: &str) -> String {
    let r = s.sql(&format!("SELECT count(*) FROM {table}")).await;
    r["results"][0]["rows"][0][0].as_str().unwrap().to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transactions_span_the_statements_of_a_script() {
    let s = Server::start().await;
    s.sql("CREATE NAMESPACE app; CREATE SHARED TABLE app.t (id BIGINT PRIMARY KEY, v TEXT)")
        .await;
    let home = tempfile::tempdir().unwrap();
    let script = |sql: &str| {
        let mut c = root(home.path(), &s.url);
        c.args(["-c", sql]);
        c
    };
    let ok = run(script(
        "-- one unit\nBEGIN;\nINSERT INTO app.t VALUES (1, 'a');\nINSERT INTO app.t VALUES (2, 'b');\nCOMMIT;",
    ))
    .await;
    assert!(ok.status.success(), "{}", text(&ok.stderr));
    assert_eq!(count(&s, "app.t").await, "2");
    // A failure inside stops the script before COMMIT: nothing of it is visible.
    let failed = run(script(
        "BEGIN; INSERT INTO app.t VALUES (3, 'c'); INSERT INTO app.t VALUES (1, 'dup'); COMMIT;",
    ))
    .await;
    assert_eq!(failed.status.code(), Some(1));
    assert_eq!(count(&s, "app.t").await, "2");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn subscribe_prints_a_json_line_per_change_and_follows_updates_without_the_key() {
    use std::io::BufRead;
    let s = Server::start().await;
    s.sql("CREATE NAMESPACE app; CREATE SHARED TABLE app.t (id BIGINT PRIMARY KEY, v TEXT); INSERT INTO app.t VALUES (1, 'first')")
        .await;
    let home = tempfile::tempdir().unwrap();
    let mut child = std::process::Command::new(assert_cmd::cargo::cargo_bin("kalam"))
        .env("KALAM_HOME", home.path())
        .args([
            "-u",
            &s.url,
            "--user",
            "root",
            "--password",
            crate::ROOT_PASSWORD,
        ])
        .args(["--json", "--subscribe", "SELECT v FROM app.t"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stdout)
            .lines()
            .map_while(Result::ok)
        {
            let _ = tx.send(line);
        }
    });
    let mut next = async || {
        let line = rx.recv().await.unwrap();
        let v: serde_json::Value = serde_json::from_str(&line).unwrap();
        (
            v["change"].as_str().unwrap().to_string(),
            v["row"]["v"].clone(),
        )
    };
    assert_eq!(next().await, ("initial".into(), serde_json::json!("first")));
    s.sql("INSERT INTO app.t VALUES (2, 'second')").await;
    assert_eq!(next().await, ("insert".into(), serde_json::json!("second")));
    s.sql("UPDATE app.t SET v = 'changed' WHERE id = 2").await;
    assert_eq!(
        next().await,
        ("update".into(), serde_json::json!("changed"))
    );
    s.sql("DELETE FROM app.t WHERE id = 1").await;
    assert_eq!(next().await, ("delete".into(), serde_json::json!("first")));
    child.kill().unwrap();
    let _ = child.wait();
}
