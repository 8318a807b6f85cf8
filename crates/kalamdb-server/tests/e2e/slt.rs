//! Runs every `tests/slt/*.slt` file against a real server over HTTP (as root).
//!
//! Cells print as text: NULL as `NULL`, BIGINT as its digits, empty strings as `(empty)`.
//! `statement error <regex>` matches against `CODE: message`.

use crate::support::TestServer;
use serde_json::{Value, json};
use sqllogictest::{AsyncDB, DBOutput, DefaultColumnType};

#[derive(Debug)]
struct HttpError(String);

impl std::fmt::Display for HttpError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for HttpError {}

struct HttpDb {
    http: reqwest::Client,
    base: String,
    token: String,
}

fn cell(v: &Value) -> String {
    match v {
        Value::Null => "NULL".into(),
        Value::String(s) if s.is_empty() => "(empty)".into(),
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

#[async_trait::async_trait]
impl AsyncDB for HttpDb {
    type Error = HttpError;
    type ColumnType = DefaultColumnType;

    async fn run(&mut self, sql: &str) -> Result<DBOutput<DefaultColumnType>, HttpError> {
        let resp = self
            .http
            .post(format!("{}/v1/api/sql", self.base))
            .bearer_auth(&self.token)
            .json(&json!({"sql": sql}))
            .send()
            .await
            .map_err(|e| HttpError(e.to_string()))?;
        let body: Value = resp.json().await.map_err(|e| HttpError(e.to_string()))?;
        if body["status"] != "success" {
            return Err(HttpError(format!(
                "{}: {}",
                body["error"]["code"].as_str().unwrap_or("?"),
                body["error"]["message"].as_str().unwrap_or("?")
            )));
        }
        let last = body["results"]
            .as_array()
            .and_then(|r| r.last())
            .cloned()
            .unwrap_or(Value::Null);
        match last.get("schema") {
            Some(schema) => {
                let n = schema.as_array().map(|s| s.len()).unwrap_or(0);
                let rows = last["rows"]
                    .as_array()
                    .map(|rows| {
                        rows.iter()
                            .map(|r| r.as_array().unwrap().iter().map(cell).collect())
                            .collect()
                    })
                    .unwrap_or_default();
                Ok(DBOutput::Rows {
                    types: vec![DefaultColumnType::Any; n],
                    rows,
                })
            }
            None => Ok(DBOutput::StatementComplete(
                last["row_count"].as_u64().unwrap_or(0),
            )),
        }
    }

    async fn shutdown(&mut self) {}

    async fn sleep(dur: std::time::Duration) {
        tokio::time::sleep(dur).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqllogictest_files() {
    let server = TestServer::start().await;
    let token = server.root_token().await;
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/slt");
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "slt"))
        .collect();
    files.sort();
    assert!(!files.is_empty(), "no .slt files in {}", dir.display());
    for file in files {
        let (http, base, token) = (server.http.clone(), server.base.clone(), token.clone());
        let mut runner = sqllogictest::Runner::new(move || {
            let db = HttpDb {
                http: http.clone(),
                base: base.clone(),
                token: token.clone(),
            };
            async move { Ok(db) }
        });
        runner.with_column_validator(|_, _| true);
        if let Err(e) = runner.run_file_async(&file).await {
            panic!("{}: {}", file.display(), e.display(true));
        }
    }
}
