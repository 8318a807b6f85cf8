//! Cold storage on S3: the server flushes to, reads from and compacts in a bucket of a real
//! S3-compatible server process (moto's server mode, installed by `scripts/setup.sh`) on
//! loopback, over HTTP through `object_store`'s S3 client.

use crate::support::{TestServer, id_values, rows};
use datafusion::parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use datafusion::parquet::file::reader::ChunkReader;
use futures::TryStreamExt;
use object_store::aws::AmazonS3Builder;
use object_store::{ObjectStore, ObjectStoreExt};
use serde_json::json;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

pub(crate) const BUCKET: &str = "kalam-test";

/// A moto S3 server on a free loopback port; killed on drop.
pub(crate) struct S3Server {
    child: Child,
    pub(crate) endpoint: String,
    http: reqwest::Client,
}

impl S3Server {
    pub(crate) async fn start() -> Self {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let child = Command::new("python3")
            .args([
                "-m",
                "moto.server",
                "-H",
                "127.0.0.1",
                "-p",
                &port.to_string(),
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("python3 runs (scripts/setup.sh installs moto[server])");
        let server = Self {
            child,
            endpoint: format!("http://127.0.0.1:{port}"),
            http: reqwest::Client::new(),
        };
        for _ in 0..300 {
            if server.http.get(&server.endpoint).send().await.is_ok() {
                return server;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("moto's S3 server did not start: is moto[server] installed? (scripts/setup.sh)");
    }

    pub(crate) async fn create_bucket(&self, name: &str) {
        let r = self
            .http
            .put(format!("{}/{name}", self.endpoint))
            .send()
            .await
            .unwrap();
        assert!(r.status().is_success(), "{}", r.status());
    }

    /// `CREATE STORAGE lake`: the test bucket under `kalam/`.
    pub(crate) fn create_lake(&self) -> String {
        format!(
            "CREATE STORAGE lake TYPE 's3' NAME 'Lake' BUCKET '{BUCKET}' PATH 'kalam' \
             REGION 'us-east-1' ENDPOINT '{}' \
             CREDENTIALS '{{\"access_key_id\":\"test\",\"secret_access_key\":\"test\"}}'",
            self.endpoint
        )
    }

    /// A client of the test bucket (the same S3 protocol, from the test's side).
    fn bucket(&self) -> impl ObjectStore + use<> {
        AmazonS3Builder::new()
            .with_bucket_name(BUCKET)
            .with_region("us-east-1")
            .with_endpoint(&self.endpoint)
            .with_allow_http(true)
            .with_access_key_id("test")
            .with_secret_access_key("test")
            .build()
            .unwrap()
    }

    /// Keys under `prefix` in the test bucket.
    pub(crate) async fn keys(&self, prefix: &str) -> Vec<String> {
        let prefix = object_store::path::Path::from(prefix);
        let listed: Vec<_> = self
            .bucket()
            .list(Some(&prefix))
            .try_collect()
            .await
            .unwrap();
        let mut keys: Vec<String> = listed.into_iter().map(|m| m.location.to_string()).collect();
        keys.sort();
        keys
    }

    async fn get(&self, key: &str) -> impl ChunkReader + use<> {
        let path = object_store::path::Path::from(key);
        self.bucket()
            .get(&path)
            .await
            .unwrap()
            .bytes()
            .await
            .unwrap()
    }
}

impl Drop for S3Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub(crate) fn parquet_keys(keys: &[String]) -> Vec<&String> {
    keys.iter().filter(|k| k.ends_with(".parquet")).collect()
}

#[tokio::test]
async fn tables_on_an_s3_storage_flush_read_and_compact_through_the_bucket() {
    let s3 = S3Server::start().await;
    s3.create_bucket(BUCKET).await;
    // Compaction drops every tombstone (the default keeps a day's worth for live resumes).
    let s = TestServer::start_with(|c| c.engine.storage.tombstone_retention_secs = 0).await;
    let root = s.root_token().await;
    s.ok(&root, &s3.create_lake()).await;
    let check = rows(&s.ok(&root, "STORAGE CHECK lake").await);
    assert_eq!(
        &check[0][..6],
        &[
            json!("lake"),
            json!("healthy"),
            json!(true),
            json!(true),
            json!(true),
            json!(true)
        ]
    );
    let listed = rows(
        &s.ok(
            &root,
            "SELECT base_directory, credentials FROM system.storages WHERE storage_id = 'lake'",
        )
        .await,
    );
    assert_eq!(
        listed,
        vec![vec![json!("s3://kalam-test/kalam"), json!("<redacted>")]],
        "secrets are never shown"
    );

    s.ok(
        &root,
        "CREATE NAMESPACE app; \
         CREATE SHARED TABLE app.s (id BIGINT PRIMARY KEY, name TEXT) WITH (STORAGE_ID = 'lake'); \
         CREATE USER TABLE app.u (id BIGINT PRIMARY KEY, note TEXT) WITH (STORAGE_ID = 'lake')",
    )
    .await;
    let users = s.users_with_tokens(&root, &["ann", "bob"]).await;
    s.ok(
        &root,
        "INSERT INTO app.s VALUES (1, 'one'), (2, 'two'), (3, 'three')",
    )
    .await;
    s.ok(
        &users[0],
        "INSERT INTO app.u VALUES (1, 'ann-1'), (2, 'ann-2')",
    )
    .await;
    s.ok(&users[1], "INSERT INTO app.u VALUES (1, 'bob-1')")
        .await;
    s.ok(&root, "STORAGE FLUSH ALL IN app").await;

    let keys = s3.keys("kalam").await;
    assert!(
        keys.contains(&"kalam/app/s/manifest.json".to_string()),
        "{keys:?}"
    );
    assert_eq!(parquet_keys(&s3.keys("kalam/app/s").await).len(), 1);
    assert_eq!(parquet_keys(&s3.keys("kalam/app/u/ann").await).len(), 1);
    assert_eq!(parquet_keys(&s3.keys("kalam/app/u/bob").await).len(), 1);
    assert!(
        !keys.iter().any(|k| k.starts_with("kalam/_kalamdb_check")),
        "the check cleans up: {keys:?}"
    );

    // Change rows that now live only in the bucket, flush those changes too, restart.
    s.ok(&root, "UPDATE app.s SET name = 'TWO' WHERE id = 2")
        .await;
    s.ok(&root, "DELETE FROM app.s WHERE id = 3").await;
    s.ok(&users[0], "DELETE FROM app.u WHERE id = 1").await;
    let (_, _, msg) = s.err(&root, "INSERT INTO app.s VALUES (1, 'again')").await;
    assert!(msg.contains("Primary key violation"), "{msg}");
    s.ok(&root, "STORAGE FLUSH ALL IN app").await;
    assert_eq!(parquet_keys(&s3.keys("kalam/app/s").await).len(), 2);

    let s = s.restart().await;
    let root = s.root_token().await;
    let ann = s.token("ann", "ann-pass-123").await;
    let all = rows(&s.ok(&root, "SELECT id, name FROM app.s ORDER BY id").await);
    assert_eq!(
        all,
        vec![
            vec![json!("1"), json!("one")],
            vec![json!("2"), json!("TWO")]
        ]
    );
    let mine = rows(&s.ok(&ann, "SELECT id, note FROM app.u").await);
    assert_eq!(mine, vec![vec![json!("2"), json!("ann-2")]]);

    // Compaction merges the two segments into one and drops the superseded versions.
    s.ok(&root, "STORAGE COMPACT TABLE app.s").await;
    let segs = s3.keys("kalam/app/s").await;
    let segs = parquet_keys(&segs);
    assert_eq!(segs.len(), 1, "{segs:?}");
    let all = rows(&s.ok(&root, "SELECT id, name FROM app.s ORDER BY id").await);
    assert_eq!(all.len(), 2);

    // The segment is plain Parquet any reader can open.
    let bytes = s3.get(segs[0]).await;
    let reader = ParquetRecordBatchReaderBuilder::try_new(bytes)
        .unwrap()
        .build()
        .unwrap();
    let n: usize = reader.map(|b| b.unwrap().num_rows()).sum();
    assert_eq!(n, 2, "compacted: one version per live key, no tombstones");

    // Dropping a table removes its objects.
    s.ok(&root, "DROP TABLE app.s").await;
    assert!(s3.keys("kalam/app/s").await.is_empty());
}

#[tokio::test]
async fn s3_storages_that_cannot_be_reached_or_are_misdescribed_are_refused() {
    let s3 = S3Server::start().await;
    s3.create_bucket(BUCKET).await;
    let s = TestServer::start().await;
    let root = s.root_token().await;
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    for (sql, needle) in [
        (
            format!(
                "CREATE STORAGE a1 TYPE 's3' BUCKET 'no-such-bucket' ENDPOINT '{}'",
                s3.endpoint
            ),
            "failed its check",
        ),
        (
            format!(
                "CREATE STORAGE a2 TYPE 's3' BUCKET '{BUCKET}' ENDPOINT 'http://127.0.0.1:{closed}'"
            ),
            "failed its check",
        ),
        (
            "CREATE STORAGE a3 TYPE 's3' PATH 'just/a/prefix'".to_string(),
            "needs BUCKET",
        ),
        (
            format!("CREATE STORAGE a4 TYPE 's3' BUCKET '{BUCKET}' CREDENTIALS 'key=secret'"),
            "JSON object",
        ),
        (
            "CREATE STORAGE a5 TYPE 'gcs' BUCKET 'x'".to_string(),
            "not supported",
        ),
    ] {
        let (_, _, msg) = s.err(&root, &sql).await;
        assert!(msg.contains(needle), "{sql}: {msg}");
    }
    assert_eq!(
        rows(&s.ok(&root, "SHOW STORAGES").await).len(),
        1,
        "failed creations leave nothing"
    );
}

/// `BACKUP DATABASE TO STORAGE` an S3 storage, of a database whose table lives on another S3
/// storage (flushed and hot rows), then `kalamdb-server restore --from s3://…`: the restored
/// server has the rows of the backup's instant, not the writes and flushes made after it.
#[tokio::test]
async fn a_backup_into_s3_of_s3_tables_restores_the_backup_instant() {
    let s3 = S3Server::start().await;
    s3.create_bucket(BUCKET).await;
    let s = TestServer::start().await;
    let root = s.root_token().await;
    let storage = |id: &str, path: &str| {
        format!(
            "CREATE STORAGE {id} TYPE 's3' BUCKET '{BUCKET}' PATH '{path}' REGION 'us-east-1' \
             ENDPOINT '{}' \
             CREDENTIALS '{{\"access_key_id\":\"test\",\"secret_access_key\":\"test\"}}'",
            s3.endpoint
        )
    };
    s.ok(&root, &storage("lake", "kalam")).await;
    s.ok(&root, &storage("vault", "backups")).await;
    s.ok(
        &root,
        "CREATE NAMESPACE app; \
         CREATE SHARED TABLE app.s (id BIGINT PRIMARY KEY, v TEXT) WITH (STORAGE_ID = 'lake')",
    )
    .await;
    s.ok(
        &root,
        &format!("INSERT INTO app.s VALUES {}", id_values(1..=100)),
    )
    .await;
    s.ok(&root, "STORAGE FLUSH TABLE app.s").await; // cold, in the bucket
    s.ok(
        &root,
        &format!("INSERT INTO app.s VALUES {}", id_values(101..=150)),
    )
    .await; // hot

    // A storage that holds tables is not a backup destination; a used path is refused.
    let (_, _, msg) = s
        .err(&root, "BACKUP DATABASE TO STORAGE lake PATH 'b1'")
        .await;
    assert!(msg.contains("holds app.s"), "{msg}");
    // Nor one whose place overlaps a storage it copies (it would copy itself), nor odd paths.
    s.ok(&root, &storage("inner", "kalam/backups")).await;
    let (_, _, msg) = s
        .err(&root, "BACKUP DATABASE TO STORAGE inner PATH 'b1'")
        .await;
    assert!(msg.contains("overlaps storage lake"), "{msg}");
    s.ok(&root, "DROP STORAGE inner").await;
    for path in ["a//b", "db~1", "../up", "/abs"] {
        let (_, _, msg) = s
            .err(
                &root,
                &format!("BACKUP DATABASE TO STORAGE vault PATH '{path}'"),
            )
            .await;
        assert!(msg.contains("must be a relative folder"), "{path}: {msg}");
    }
    let done = s
        .ok(&root, "BACKUP DATABASE TO STORAGE vault PATH 'nightly/1'")
        .await;
    assert!(
        done["message"].as_str().unwrap().contains("Backup written"),
        "{done}"
    );
    let (_, _, msg) = s
        .err(&root, "BACKUP DATABASE TO STORAGE vault PATH 'nightly/1'")
        .await;
    assert!(msg.contains("not empty"), "{msg}");
    let keys = s3.keys("backups/nightly/1").await;
    assert!(keys.contains(&"backups/nightly/1/backup.json".to_string()));
    assert!(
        keys.iter()
            .any(|k| k.starts_with("backups/nightly/1/rocksdb/"))
    );
    assert!(keys.contains(&"backups/nightly/1/storages/lake/app/s/manifest.json".to_string()));

    // After the backup: new rows, a delete, and a flush that rewrites the bucket's manifest.
    s.ok(
        &root,
        &format!("INSERT INTO app.s VALUES {}", id_values(151..=160)),
    )
    .await;
    s.ok(&root, "DELETE FROM app.s WHERE id = 5").await;
    s.ok(&root, "STORAGE FLUSH TABLE app.s").await;
    drop(s);

    let restored = tempfile::tempdir().unwrap();
    let data = restored.path().join("data");
    let restore = || {
        std::process::Command::new(env!("CARGO_BIN_EXE_kalamdb-server"))
            .args([
                "restore",
                "--from",
                &format!("s3://{BUCKET}/backups/nightly/1"),
            ])
            .arg("--data-dir")
            .arg(&data)
            .env("AWS_ENDPOINT_URL", &s3.endpoint)
            .env("AWS_ACCESS_KEY_ID", "test")
            .env("AWS_SECRET_ACCESS_KEY", "test")
            .env("AWS_REGION", "us-east-1")
            .output()
            .unwrap()
    };
    // The lake still holds the newer segments: restoring over them is refused, and nothing
    // is written.
    let out = restore();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && err.contains("is not empty"),
        "{err}"
    );
    assert!(!data.join("rocksdb").exists());
    // As after losing the bucket: it is empty, and the restore writes the backup's objects.
    let bucket = s3.bucket();
    for key in s3.keys("kalam").await {
        bucket
            .delete(&object_store::path::Path::from(key))
            .await
            .unwrap();
    }
    let out = restore();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    let dir = tempfile::TempDir::new_in(restored.path()).unwrap();
    std::fs::remove_dir(dir.path()).unwrap();
    std::fs::rename(&data, dir.path()).unwrap();
    let s = TestServer::start_in(dir).await;
    let root = s.root_token().await;
    let ids: Vec<i64> = rows(&s.ok(&root, "SELECT id FROM app.s ORDER BY id").await)
        .iter()
        .map(|r| r[0].as_str().unwrap().parse().unwrap())
        .collect();
    assert_eq!(ids, (1..=150).collect::<Vec<i64>>());
    let cold = s.ok(&root, "SELECT v FROM app.s WHERE id = 5").await;
    assert_eq!(rows(&cold), vec![vec![json!("v5")]]);
}
