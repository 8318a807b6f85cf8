//! Runs every `tests/slt/*.slt` file against a real server over HTTP.
//!
//! Records run as `root`, or as the user a `connection <name>` names: that user is created
//! (role `user`) and signed in on first use, so files can check per-user semantics (USER
//! table isolation, permissions). Cells print as text: NULL as `NULL`, BIGINT as its digits,
//! empty strings as `(empty)`. Column types are checked: `I` integer types, `R` FLOAT, DOUBLE
//! and DECIMAL, `B` (any) BOOLEAN, `T` everything else. A record of several statements
//! returns the rows of every statement that returns rows, in order; `statement error
//! <regex>` matches against `CODE: message`.

use crate::support::TestServer;
use serde_json::{Value, json};
use sqllogictest::{AsyncDB, Connection, DBOutput, DefaultColumnType, Record};

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

/// The sqllogictest type of a result column, from its wire `data_type`.
fn column_type(field: &Value) -> DefaultColumnType {
    let name = match &field["data_type"] {
        Value::String(s) => s.as_str(),
        Value::Object(o) => o.keys().next().map(String::as_str).unwrap_or(""),
        _ => "",
    };
    match name {
        "SmallInt" | "Int" | "BigInt" => DefaultColumnType::Integer,
        "Float" | "Double" | "Decimal" => DefaultColumnType::FloatingPoint,
        "Boolean" => DefaultColumnType::Any,
        _ => DefaultColumnType::Text,
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
        let results = body["results"].as_array().cloned().unwrap_or_default();
        let mut types: Option<Vec<DefaultColumnType>> = None;
        let mut rows = Vec::new();
        for result in results.iter().filter(|r| r.get("schema").is_some()) {
            let schema = result["schema"].as_array().cloned().unwrap_or_default();
            types.get_or_insert_with(|| schema.iter().map(column_type).collect());
            rows.extend(
                result["rows"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .map(|r| r.as_array().unwrap().iter().map(cell).collect()),
            );
        }
        match types {
            Some(types) => Ok(DBOutput::Rows { types, rows }),
            None => Ok(DBOutput::StatementComplete(
                results
                    .last()
                    .and_then(|r| r["row_count"].as_u64())
                    .unwrap_or(0),
            )),
        }
    }

    async fn shutdown(&mut self) {}

    async fn sleep(dur: std::time::Duration) {
        tokio::time::sleep(dur).await;
    }
}

/// Signs in as `user` (created with role `user` on first use); `root` for the default
/// connection.
async fn token_for(server: &TestServer, root: &str, user: &str) -> String {
    if user == "root" {
        return root.to_string();
    }
    let password = format!("{user}-slt-pass-1");
    let (_, body) = server
        .sql(
            root,
            &format!("CREATE USER {user} WITH PASSWORD '{password}' ROLE user"),
        )
        .await;
    let exists = body["error"]["message"]
        .as_str()
        .is_some_and(|m| m.contains("already exists"));
    assert!(
        body["status"] == "success" || exists,
        "creating {user}: {body}"
    );
    server.token(user, &password).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqllogictest_files() {
    let server = std::sync::Arc::new(TestServer::start().await);
    let root = server.root_token().await;
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/slt");
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "slt"))
        .collect();
    files.sort();
    assert!(!files.is_empty(), "no .slt files in {}", dir.display());
    for file in files {
        // The connection the record about to run names; read when the runner makes it.
        let current = std::sync::Arc::new(std::sync::Mutex::new(String::from("root")));
        let (server2, root2, current2) = (
            std::sync::Arc::clone(&server),
            root.clone(),
            std::sync::Arc::clone(&current),
        );
        let mut runner = sqllogictest::Runner::new(move || {
            let (server, root) = (std::sync::Arc::clone(&server2), root2.clone());
            let user = current2.lock().unwrap().clone();
            async move {
                let token = token_for(&server, &root, &user).await;
                Ok(HttpDb {
                    http: server.http.clone(),
                    base: server.base.clone(),
                    token,
                })
            }
        });
        runner.with_column_validator(sqllogictest::strict_column_validator);
        let records = sqllogictest::parse_file::<DefaultColumnType>(&file)
            .unwrap_or_else(|e| panic!("{}: {e}", file.display()));
        for record in records {
            let connection = match &record {
                Record::Statement { connection, .. } | Record::Query { connection, .. } => {
                    Some(connection)
                }
                _ => None,
            };
            if let Some(c) = connection {
                *current.lock().unwrap() = match c {
                    Connection::Default => "root".to_string(),
                    Connection::Named(name) => name.clone(),
                };
            }
            if let Err(e) = runner.run_async(record).await {
                panic!("{}: {}", file.display(), e.display(true));
            }
        }
    }
}
