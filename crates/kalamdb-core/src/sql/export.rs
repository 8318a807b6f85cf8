//! `EXPORT USER DATA [FOR USER 'u']`: one user's rows of every USER table, as an archive the
//! user (or an admin) downloads from `GET /v1/api/exports/{id}` until it expires.
//!
//! The archive is a tar file under `<data_path>/exports/`: `manifest.json` (user, time, and
//! per table its file and row count) and one JSON Lines file per table (`<ns>.<table>.jsonl`,
//! one object per row, keyed by column name, values encoded as the SQL API encodes them). Rows
//! are read as the user reads them (their own partition only), through the SQL engine.

use crate::app_context::AppContext;
use crate::auth::Identity;
use crate::sql::session::{ExecCtx, query_stream};
use futures::StreamExt;
use kalamdb_catalog::error::{KalamError, Result};
use kalamdb_commons::{TableType, UserId};
use serde::{Deserialize, Serialize};
use std::path::PathBuf;

/// How long an export can be downloaded, in seconds (then it is removed).
pub const EXPORT_TTL_SECS: u64 = 24 * 3600;

/// What an export holds, beside its archive as `<id>.json`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ExportInfo {
    /// The export's id.
    pub export_id: String,
    /// Whose rows.
    pub user_id: String,
    /// When it was made, µs since the epoch.
    pub created_at: i64,
    /// Tables and their row counts.
    pub tables: Vec<(String, u64)>,
}

/// The folder of exports.
fn folder(app: &AppContext) -> PathBuf {
    PathBuf::from(&app.config().storage.data_path).join("exports")
}

/// The archive of export `id` (ids are digits: nothing else names a file).
pub fn archive_path(app: &AppContext, id: &str) -> Option<PathBuf> {
    (!id.is_empty() && id.bytes().all(|b| b.is_ascii_digit()))
        .then(|| folder(app).join(format!("{id}.tar")))
}

/// The description of export `id`, if it exists.
pub fn info(app: &AppContext, id: &str) -> Option<ExportInfo> {
    let path = archive_path(app, id)?.with_extension("json");
    serde_json::from_slice(&std::fs::read(path).ok()?).ok()
}

/// Writes the export of `user`'s rows; returns its description.
pub async fn export_user(app: &AppContext, user: &UserId) -> Result<ExportInfo> {
    let record = app
        .catalog()
        .user(user)?
        .filter(|u| u.deleted_at.is_none())
        .ok_or_else(|| KalamError::NotFound {
            kind: "User",
            name: user.to_string(),
        })?;
    let identity = Identity {
        user_id: user.clone(),
        role: record.role,
    };
    let export_id = app.seq().next_id().to_string();
    let created_at = chrono::Utc::now().timestamp_micros();
    let mut files: Vec<(String, Vec<u8>)> = Vec::new();
    let mut tables = Vec::new();
    for def in app.catalog().tables(None)? {
        if def.table_type != TableType::User {
            continue;
        }
        let name = format!("{}.{}", def.namespace, def.name);
        let ctx = ExecCtx {
            identity: identity.clone(),
            namespace: def.namespace.to_string(),
            params: Vec::new(),
            client_ip: None,
            now: created_at,
            tx: None,
        };
        let crate::sql::parse::Command::Sql(stmt) =
            crate::sql::parse::parse_statement(&format!("SELECT * FROM {name}"))?
        else {
            return Err(KalamError::Internal("export query did not parse".into()));
        };
        let (schema, mut stream) = query_stream(app, &ctx, *stmt).await?;
        let names: Vec<String> = schema.fields().iter().map(|f| f.name().clone()).collect();
        let mut lines = Vec::new();
        let mut count = 0u64;
        while let Some(batch) = stream.next().await {
            let batch = batch.map_err(KalamError::from_datafusion)?;
            for row in crate::encode::rows(std::slice::from_ref(&batch)) {
                let object: serde_json::Map<String, serde_json::Value> =
                    names.iter().cloned().zip(row).collect();
                serde_json::to_writer(&mut lines, &object)
                    .map_err(|e| KalamError::Internal(e.to_string()))?;
                lines.push(b'\n');
                count += 1;
            }
        }
        files.push((format!("{name}.jsonl"), lines));
        tables.push((name, count));
    }
    let info = ExportInfo {
        export_id: export_id.clone(),
        user_id: user.to_string(),
        created_at,
        tables,
    };
    let manifest =
        serde_json::to_vec_pretty(&info).map_err(|e| KalamError::Internal(e.to_string()))?;
    files.insert(0, ("manifest.json".into(), manifest.clone()));
    let dir = folder(app);
    let path = dir.join(format!("{export_id}.tar"));
    tokio::task::spawn_blocking(move || write_archive(&dir, &path, &files, &manifest))
        .await
        .map_err(|e| KalamError::Internal(e.to_string()))??;
    Ok(info)
}

/// Writes the tar (then its description, which makes it visible).
fn write_archive(
    dir: &std::path::Path,
    path: &std::path::Path,
    files: &[(String, Vec<u8>)],
    manifest: &[u8],
) -> Result<()> {
    let io = |e: std::io::Error| KalamError::Internal(format!("cannot write the export: {e}"));
    std::fs::create_dir_all(dir).map_err(io)?;
    let mut archive = tar::Builder::new(std::fs::File::create(path).map_err(io)?);
    for (name, bytes) in files {
        let mut header = tar::Header::new_gnu();
        header.set_size(bytes.len() as u64);
        header.set_mode(0o600);
        header.set_mtime(chrono::Utc::now().timestamp().max(0) as u64);
        header.set_cksum();
        archive
            .append_data(&mut header, name, bytes.as_slice())
            .map_err(io)?;
    }
    archive.into_inner().map_err(io)?.sync_all().map_err(io)?;
    std::fs::write(path.with_extension("json"), manifest).map_err(io)
}

/// Removes exports older than `ttl_secs`; returns how many.
pub fn remove_expired(app: &AppContext, ttl_secs: u64) -> usize {
    let Ok(entries) = std::fs::read_dir(folder(app)) else {
        return 0;
    };
    let cutoff =
        chrono::Utc::now().timestamp_micros() - (ttl_secs as i64).saturating_mul(1_000_000);
    let mut removed = 0;
    for e in entries.flatten() {
        let path = e.path();
        if path.extension().is_some_and(|x| x == "json")
            && let Some(id) = path.file_stem().and_then(|s| s.to_str())
            && info(app, id).is_some_and(|i| i.created_at < cutoff)
        {
            let _ = std::fs::remove_file(path.with_extension("tar"));
            let _ = std::fs::remove_file(&path);
            removed += 1;
        }
    }
    removed
}
