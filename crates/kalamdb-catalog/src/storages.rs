//! What a `system.storages` record means: `CREATE STORAGE` options turned into a record, and a
//! record turned into the [`FileStore`] its cold files live on (a local directory or an
//! S3-compatible bucket).

use crate::catalog::StorageRecord;
use crate::error::{KalamError, Result};
use kalamdb_filestore::{FileStore, S3Config};
use serde::Deserialize;
use std::path::Path;
use std::time::Duration;

/// Per-request timeout of remote stores.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(60);
/// Connect timeout of remote stores.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// `CONFIG '{…}'` of an `s3` storage.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct S3Settings {
    region: Option<String>,
    endpoint: Option<String>,
    allow_http: Option<bool>,
}

/// `CREDENTIALS '{…}'` of an `s3` storage.
#[derive(Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct S3Credentials {
    access_key_id: Option<String>,
    secret_access_key: Option<String>,
    session_token: Option<String>,
}

/// The record `CREATE STORAGE id TYPE t <options>` describes (not yet checked against the
/// store itself). Options: NAME, DESCRIPTION, PATH/BASE_DIRECTORY, SHARED_TABLES_TEMPLATE,
/// USER_TABLES_TEMPLATE; for `s3` also BUCKET, REGION, ENDPOINT, CREDENTIALS, CONFIG.
pub fn record_from_options(
    id: &str,
    storage_type: &str,
    options: Vec<(String, String)>,
    now_micros: i64,
) -> Result<StorageRecord> {
    let s3 = match storage_type {
        "filesystem" => false,
        "s3" => true,
        other => {
            return Err(KalamError::InvalidInput(format!(
                "Storage type '{other}' is not supported: use 'filesystem' or 's3'"
            )));
        }
    };
    let mut record = StorageRecord::local(now_micros);
    record.storage_id = id.to_string();
    record.storage_name = id.to_string();
    record.storage_type = storage_type.to_string();
    record.description = None;
    record.base_directory = String::new();
    let mut bucket = None;
    let mut settings = S3Settings::default();
    for (key, value) in options {
        match (key.as_str(), s3) {
            ("NAME", _) => record.storage_name = value,
            ("DESCRIPTION", _) => record.description = Some(value),
            ("PATH" | "BASE_DIRECTORY", _) => record.base_directory = value,
            ("SHARED_TABLES_TEMPLATE", _) => record.shared_tables_template = value,
            ("USER_TABLES_TEMPLATE", _) => record.user_tables_template = value,
            ("BUCKET", true) => bucket = Some(value),
            ("REGION", true) => settings.region = Some(value),
            ("ENDPOINT", true) => settings.endpoint = Some(value),
            ("CREDENTIALS", true) => {
                parse_json::<S3Credentials>("CREDENTIALS", &value)?;
                record.credentials = Some(value);
            }
            ("CONFIG", true) => {
                let c: S3Settings = parse_json("CONFIG", &value)?;
                settings.region = c.region.or(settings.region);
                settings.endpoint = c.endpoint.or(settings.endpoint);
                settings.allow_http = c.allow_http.or(settings.allow_http);
            }
            (other, _) => {
                return Err(KalamError::InvalidSql(format!(
                    "Unknown storage option {other} for a {storage_type} storage ({})",
                    if s3 {
                        "NAME, DESCRIPTION, BUCKET, PATH, REGION, ENDPOINT, CREDENTIALS, CONFIG, \
                         SHARED_TABLES_TEMPLATE, USER_TABLES_TEMPLATE"
                    } else {
                        "NAME, DESCRIPTION, PATH, SHARED_TABLES_TEMPLATE, USER_TABLES_TEMPLATE"
                    }
                )));
            }
        }
    }
    if s3 {
        record.base_directory = s3_base(bucket.as_deref(), &record.base_directory)?;
        record.config_json = Some(
            serde_json::json!({
                "region": settings.region,
                "endpoint": settings.endpoint,
                "allow_http": settings.allow_http,
            })
            .to_string(),
        );
    } else if record.base_directory.trim().is_empty() {
        return Err(KalamError::InvalidSql(
            "A filesystem storage needs PATH '<directory>'".into(),
        ));
    }
    validate_templates(&record.shared_tables_template, &record.user_tables_template)?;
    Ok(record)
}

/// `s3://bucket/prefix` from BUCKET and PATH, or from a PATH that already is such a URL.
fn s3_base(bucket: Option<&str>, path: &str) -> Result<String> {
    let path = path.trim();
    let (bucket, prefix) = match (bucket, path.strip_prefix("s3://")) {
        (Some(b), None) => (b.to_string(), path.trim_matches('/').to_string()),
        (None, Some(url)) => {
            let (b, p) = url.split_once('/').unwrap_or((url, ""));
            (b.to_string(), p.trim_matches('/').to_string())
        }
        (Some(_), Some(_)) => {
            return Err(KalamError::InvalidSql(
                "Give the bucket either as BUCKET 'name' or in PATH 's3://name/…', not both".into(),
            ));
        }
        (None, None) => {
            return Err(KalamError::InvalidSql(
                "An s3 storage needs BUCKET 'name' (or PATH 's3://bucket/prefix')".into(),
            ));
        }
    };
    let valid = |c: char| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '.';
    if bucket.len() < 3 || bucket.len() > 63 || !bucket.chars().all(valid) {
        return Err(KalamError::InvalidSql(format!(
            "'{bucket}' is not a valid S3 bucket name (3-63 of a-z, 0-9, '-', '.')"
        )));
    }
    Ok(if prefix.is_empty() {
        format!("s3://{bucket}")
    } else {
        format!("s3://{bucket}/{prefix}")
    })
}

fn parse_json<T: serde::de::DeserializeOwned>(option: &str, text: &str) -> Result<T> {
    serde_json::from_str(text)
        .map_err(|e| KalamError::InvalidSql(format!("{option} must be a JSON object: {e}")))
}

/// Placeholders a folder template may hold.
const PLACEHOLDERS: [&str; 3] = ["{namespace}", "{tableName}", "{userId}"];

/// Folder templates: each placeholder at most once, anywhere within a path segment
/// (`ns_{namespace}/tbl_{tableName}/usr_{userId}`). SHARED tables' name `{namespace}` and
/// `{tableName}` and not `{userId}`; USER tables' name all three, `{userId}` in the last
/// segment and the others before it, so a table's users are the folders of one parent and two
/// users never share one. Templates under which two tables could land in one folder
/// (`{namespace}_{tableName}`: `a_b.c` and `a.b_c`) are accepted as upstream accepts them; the
/// second such table is refused when it is created (`CREATE TABLE` checks its folder).
fn validate_templates(shared: &str, user: &str) -> Result<()> {
    let refuse = |option: &str, template: &str, why: &str| {
        Err(KalamError::InvalidSql(format!(
            "{option} '{template}' {why}"
        )))
    };
    for (option, template, with_user) in [
        ("SHARED_TABLES_TEMPLATE", shared, false),
        ("USER_TABLES_TEMPLATE", user, true),
    ] {
        if let Some(why) = template_problem(template, with_user) {
            return refuse(option, template, &why);
        }
    }
    Ok(())
}

/// What is wrong with one template, if anything.
fn template_problem(template: &str, with_user: bool) -> Option<String> {
    let mut found: Vec<(usize, &str)> = Vec::new();
    for p in PLACEHOLDERS {
        match template.matches(p).count() {
            0 => {}
            1 => found.push((template.find(p)?, p)),
            _ => return Some(format!("names {p} more than once")),
        }
    }
    let has = |p: &str| found.iter().any(|(_, q)| *q == p);
    if !has("{namespace}") || !has("{tableName}") {
        return Some("must contain {namespace} and {tableName}".into());
    }
    if has("{userId}") != with_user {
        return Some(if with_user {
            "must contain {userId}".into()
        } else {
            "must not contain {userId}".into()
        });
    }
    let rest = PLACEHOLDERS
        .iter()
        .fold(template.to_string(), |t, p| t.replace(p, "/"));
    if rest.contains('{') || rest.contains('}') {
        return Some("has an unknown {placeholder}: use {namespace}, {tableName}, {userId}".into());
    }
    if with_user {
        let last = template.rsplit('/').next().unwrap_or(template);
        if !last.contains("{userId}")
            || last.contains("{namespace}")
            || last.contains("{tableName}")
        {
            return Some(
                "must have {userId} in its last folder, and {namespace} and {tableName} before it"
                    .into(),
            );
        }
    }
    None
}

/// Where `record`'s objects are, as path segments comparable across storages: a filesystem
/// storage's absolute folder (`fs`, then its components; symlinks resolved when it exists), an
/// S3 storage's endpoint, bucket and prefix (`s3`, endpoint or `aws`, bucket, prefix parts).
/// One storage's objects lie inside another's when its segments start with the other's.
pub fn location(record: &StorageRecord, root: &Path) -> Vec<String> {
    if record.storage_type == "s3" {
        let url = record
            .base_directory
            .strip_prefix("s3://")
            .unwrap_or(&record.base_directory);
        let endpoint = record
            .config_json
            .as_deref()
            .and_then(|c| serde_json::from_str::<S3Settings>(c).ok())
            .and_then(|c| c.endpoint)
            .map(|e| e.trim_end_matches('/').to_string())
            .unwrap_or_else(|| "aws".into());
        let mut out = vec!["s3".to_string(), endpoint];
        out.extend(url.split('/').filter(|p| !p.is_empty()).map(str::to_string));
        return out;
    }
    let base = Path::new(&record.base_directory);
    folder_location(&if base.is_absolute() {
        base.to_path_buf()
    } else {
        root.join(base)
    })
}

/// [`location`] of a local folder.
pub fn folder_location(dir: &Path) -> Vec<String> {
    let dir = dir.canonicalize().unwrap_or_else(|_| {
        let absolute = std::env::current_dir()
            .map(|c| c.join(dir))
            .unwrap_or_else(|_| dir.to_path_buf());
        let mut clean = std::path::PathBuf::new();
        for c in absolute.components() {
            match c {
                std::path::Component::ParentDir => {
                    clean.pop();
                }
                std::path::Component::CurDir => {}
                other => clean.push(other),
            }
        }
        clean
    });
    let mut out = vec!["fs".to_string()];
    out.extend(
        dir.components()
            .filter(|c| matches!(c, std::path::Component::Normal(_)))
            .map(|c| c.as_os_str().to_string_lossy().into_owned()),
    );
    out
}

/// The store `record` names; a relative filesystem path is taken from `root` (the data path).
pub fn open(record: &StorageRecord, root: &Path) -> Result<FileStore> {
    let broken =
        |why: String| KalamError::InvalidInput(format!("storage '{}' {why}", record.storage_id));
    match record.storage_type.as_str() {
        "filesystem" => {
            let base = Path::new(&record.base_directory);
            Ok(FileStore::local(&if base.is_absolute() {
                base.to_path_buf()
            } else {
                root.join(base)
            })?)
        }
        "s3" => {
            let url = record.base_directory.strip_prefix("s3://").ok_or_else(|| {
                broken(format!("has base {} (not s3://…)", record.base_directory))
            })?;
            let (bucket, prefix) = url.split_once('/').unwrap_or((url, ""));
            let settings: S3Settings = match &record.config_json {
                Some(c) => parse_json("CONFIG", c)?,
                None => S3Settings::default(),
            };
            let creds: S3Credentials = match &record.credentials {
                Some(c) => parse_json("CREDENTIALS", c)?,
                None => S3Credentials::default(),
            };
            let allow_http = settings.allow_http.unwrap_or_else(|| {
                settings
                    .endpoint
                    .as_deref()
                    .is_some_and(|e| e.starts_with("http://"))
            });
            FileStore::s3(&S3Config {
                bucket: bucket.to_string(),
                prefix: prefix.to_string(),
                region: settings.region,
                endpoint: settings.endpoint,
                allow_http,
                access_key_id: creds.access_key_id,
                secret_access_key: creds.secret_access_key,
                session_token: creds.session_token,
                request_timeout: REQUEST_TIMEOUT,
                connect_timeout: CONNECT_TIMEOUT,
            })
            .map_err(|e| broken(format!("cannot be opened: {e}")))
        }
        other => Err(broken(format!(
            "has type {other}, which this server cannot open"
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn opts(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn templates_take_placeholders_inside_segments_and_users_never_share_folders() {
        let ok = |shared: &str, user: &str| validate_templates(shared, user).is_ok();
        assert!(ok(
            "{namespace}/{tableName}",
            "{namespace}/{tableName}/{userId}"
        ));
        assert!(ok(
            "ns_{namespace}/tbl_{tableName}",
            "ns_{namespace}/tbl_{tableName}/usr_{userId}"
        ));
        assert!(ok(
            "data/{namespace}.{tableName}",
            "u/{namespace}.{tableName}/{userId}.d"
        ));
        assert!(ok(
            "{namespace}_{tableName}",
            "u/{namespace}_{tableName}/{userId}"
        ));
        for (shared, user, why) in [
            (
                "{namespace}/{tableName}",
                "{namespace}/{tableName}-{userId}",
                "last folder",
            ),
            (
                "{namespace}/{tableName}",
                "{namespace}/{userId}/{tableName}",
                "last folder",
            ),
            (
                "{namespace}/{tableName}",
                "{namespace}/{tableName}",
                "must contain {userId}",
            ),
            (
                "{namespace}/{tableName}/{userId}",
                "{namespace}/{tableName}/{userId}",
                "must not",
            ),
            (
                "{tableName}",
                "{namespace}/{tableName}/{userId}",
                "must contain {namespace}",
            ),
            (
                "{namespace}/{table}/{tableName}",
                "{namespace}/{tableName}/{userId}",
                "unknown",
            ),
            (
                "{namespace}/{tableName}/{tableName}",
                "{namespace}/{tableName}/{userId}",
                "more than once",
            ),
        ] {
            let err = validate_templates(shared, user).unwrap_err().to_string();
            assert!(err.contains(why), "{shared} / {user}: {err}");
        }
    }

    #[test]
    fn s3_options_become_a_record() {
        let r = record_from_options(
            "lake",
            "s3",
            opts(&[
                ("BUCKET", "my-bucket"),
                ("PATH", "/kalam/data/"),
                ("REGION", "eu-west-1"),
                ("ENDPOINT", "http://127.0.0.1:9000"),
                (
                    "CREDENTIALS",
                    r#"{"access_key_id":"a","secret_access_key":"b"}"#,
                ),
            ]),
            1,
        )
        .unwrap();
        assert_eq!(r.base_directory, "s3://my-bucket/kalam/data");
        let c: serde_json::Value = serde_json::from_str(r.config_json.as_deref().unwrap()).unwrap();
        assert_eq!(c["region"], "eu-west-1");
        assert_eq!(c["endpoint"], "http://127.0.0.1:9000");
        assert!(open(&r, Path::new("/tmp")).is_ok());
    }

    #[test]
    fn bad_s3_options_are_refused() {
        let err = |o: &[(&str, &str)]| {
            record_from_options("x", "s3", opts(o), 1)
                .unwrap_err()
                .to_string()
        };
        assert!(err(&[]).contains("needs BUCKET"));
        assert!(err(&[("BUCKET", "Bad_Name")]).contains("not a valid S3 bucket"));
        assert!(err(&[("BUCKET", "b1b"), ("PATH", "s3://c/d")]).contains("not both"));
        assert!(err(&[("BUCKET", "bkt"), ("CREDENTIALS", "nope")]).contains("JSON object"));
        assert!(
            err(&[("BUCKET", "bkt"), ("CREDENTIALS", r#"{"key":"v"}"#)]).contains("unknown field")
        );
        assert!(err(&[("BUCKET", "bkt"), ("FOO", "v")]).contains("Unknown storage option FOO"));
        let e = record_from_options("x", "gcs", vec![], 1)
            .unwrap_err()
            .to_string();
        assert!(e.contains("not supported"), "{e}");
        let r = record_from_options("x", "s3", opts(&[("PATH", "s3://bkt")]), 1).unwrap();
        assert_eq!(r.base_directory, "s3://bkt");
    }
}
