//! Online backup (`BACKUP DATABASE TO 'dir'`) and offline restore (`kalamdb-server restore`).
//!
//! A backup is a folder: `rocksdb/` (a RocksDB checkpoint: the hot rows, the catalog, users,
//! topics' hot logs, all as of one instant), `storages/<storage_id>/` (a copy of every
//! filesystem storage's folder: segments, manifests, FILE columns' files) and `backup.json`
//! (what was copied from where). While it is taken, flushes, compactions and removals of
//! dropped data wait (they would change segment files and manifests); writes go on, into the
//! hot tier only, so nothing written after the checkpoint is in the backup and everything
//! acknowledged before it is. S3 storages are not copied (their objects stay in the bucket).

use crate::app_context::AppContext;
use kalamdb_catalog::error::{KalamError, Result};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

/// `backup.json`.
#[derive(Debug, Serialize, Deserialize)]
struct Manifest {
    /// Format version.
    version: u32,
    /// When the checkpoint was taken, µs since the epoch.
    created_at: i64,
    /// The node that took it.
    node_id: String,
    /// Each copied storage: id and its `base_directory` as configured.
    storages: Vec<(String, String)>,
}

/// What a backup copied.
#[derive(Debug, Clone, Copy, Default)]
pub struct BackupReport {
    /// Files copied (checkpoint and storages).
    pub files: u64,
    /// Their bytes.
    pub bytes: u64,
}

fn io(what: &str, path: &Path, e: std::io::Error) -> KalamError {
    KalamError::InvalidInput(format!("{what} {}: {e}", path.display()))
}

/// Takes a backup of `app` into `dir`, which must not exist or be empty.
pub async fn backup(app: &AppContext, dir: &Path) -> Result<BackupReport> {
    require_empty(dir, "backup folder")?;
    create_private_dir(dir)?;
    let data_path = Path::new(&app.config().storage.data_path);
    let storages: Vec<(String, String, PathBuf)> = app
        .catalog()
        .storages()?
        .into_iter()
        .filter(|s| s.storage_type == "filesystem")
        .map(|s| {
            let path = storage_path(data_path, &s.base_directory);
            (s.storage_id, s.base_directory, path)
        })
        .collect();
    // Not inside what it copies (it would copy itself, into every later backup too).
    let inside = |outer: &Path| {
        let (Ok(a), Ok(b)) = (dir.canonicalize(), outer.canonicalize()) else {
            return false;
        };
        a.starts_with(b)
    };
    if inside(data_path) || storages.iter().any(|(_, _, p)| inside(p)) {
        let _ = std::fs::remove_dir(dir);
        return Err(KalamError::InvalidInput(format!(
            "backup folder {} is inside the data folder or a storage: choose one outside them",
            dir.display()
        )));
    }
    // Segment files and manifests hold still from the checkpoint until the copy is done (the
    // copy owns the guard: a cancelled request does not release it early).
    let files = app.tables().pause_file_changes().await;
    let backend = std::sync::Arc::clone(app.backend());
    let node = app.node_id().to_string();
    let dir = dir.to_path_buf();
    tokio::task::spawn_blocking(move || {
        let _files = files;
        let created_at = chrono::Utc::now().timestamp_micros();
        backend
            .checkpoint(&dir.join("rocksdb"))
            .map_err(|e| KalamError::Internal(format!("checkpoint failed: {e}")))?;
        let mut report = BackupReport::default();
        count(&dir.join("rocksdb"), &mut report);
        for (id, _, from) in &storages {
            copy_tree(from, &dir.join("storages").join(id), &mut report)?;
        }
        let manifest = Manifest {
            version: 1,
            created_at,
            node_id: node,
            storages: storages
                .iter()
                .map(|(id, b, _)| (id.clone(), b.clone()))
                .collect(),
        };
        let text = serde_json::to_string_pretty(&manifest)
            .map_err(|e| KalamError::Internal(e.to_string()))?;
        let path = dir.join("backup.json");
        std::fs::write(&path, text).map_err(|e| io("cannot write", &path, e))?;
        Ok(report)
    })
    .await
    .map_err(|e| KalamError::Internal(format!("backup task failed: {e}")))?
}

/// Restores the backup in `from` into `data_dir` (a server's `storage.data_path`), which must
/// not exist or be empty; the server must not be running on it.
pub fn restore(from: &Path, data_dir: &Path) -> Result<BackupReport> {
    let path = from.join("backup.json");
    let text = std::fs::read_to_string(&path).map_err(|e| io("cannot read", &path, e))?;
    let manifest: Manifest = serde_json::from_str(&text).map_err(|e| {
        KalamError::InvalidInput(format!("{} is not a backup: {e}", path.display()))
    })?;
    require_empty(data_dir, "data folder (restore into a new one)")?;
    // Every target is checked before anything is copied.
    let mut targets = Vec::new();
    for (id, base) in &manifest.storages {
        if Path::new(base)
            .components()
            .any(|c| matches!(c, std::path::Component::ParentDir))
        {
            return Err(KalamError::InvalidInput(format!(
                "storage {id}'s folder '{base}' climbs out with '..'"
            )));
        }
        let to = storage_path(data_dir, base);
        require_empty(&to, &format!("storage {id}'s folder"))?;
        targets.push((id, to));
    }
    let mut report = BackupReport::default();
    copy_tree(
        &from.join("rocksdb"),
        &data_dir.join("rocksdb"),
        &mut report,
    )?;
    for (id, to) in targets {
        copy_tree(&from.join("storages").join(id), &to, &mut report)?;
    }
    Ok(report)
}

/// Creates `dir` readable by this user only (a backup holds password hashes).
fn create_private_dir(dir: &Path) -> Result<()> {
    std::fs::create_dir_all(dir).map_err(|e| io("cannot create", dir, e))?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
            .map_err(|e| io("cannot restrict", dir, e))?;
    }
    Ok(())
}

/// Refuses a folder that exists and holds anything.
fn require_empty(dir: &Path, what: &str) -> Result<()> {
    if !dir.exists() {
        return Ok(());
    }
    let mut entries = std::fs::read_dir(dir).map_err(|e| io("cannot read", dir, e))?;
    if entries.next().is_some() {
        return Err(KalamError::InvalidInput(format!(
            "{what} {} is not empty",
            dir.display()
        )));
    }
    Ok(())
}

/// Where a filesystem storage's files are: relative base directories are under the data path.
fn storage_path(data_path: &Path, base_directory: &str) -> PathBuf {
    let base = Path::new(base_directory);
    if base.is_absolute() {
        base.to_path_buf()
    } else {
        data_path.join(base)
    }
}

fn count(dir: &Path, report: &mut BackupReport) {
    for entry in walk(dir) {
        report.files += 1;
        report.bytes += entry.1;
    }
}

/// Files under `dir` (recursively) with their sizes.
fn walk(dir: &Path) -> Vec<(PathBuf, u64)> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in entries.flatten() {
            let path = e.path();
            match e.file_type() {
                Ok(t) if t.is_dir() => stack.push(path),
                Ok(t) if t.is_file() => {
                    out.push((path, e.metadata().map(|m| m.len()).unwrap_or(0)));
                }
                _ => {}
            }
        }
    }
    out
}

/// Copies the files under `from` to the same places under `to`. A file that vanishes while
/// copying (a compacted-away segment past its grace period) is skipped.
fn copy_tree(from: &Path, to: &Path, report: &mut BackupReport) -> Result<()> {
    std::fs::create_dir_all(to).map_err(|e| io("cannot create", to, e))?;
    for (file, _) in walk(from) {
        let rel = file.strip_prefix(from).unwrap_or(&file);
        let target = to.join(rel);
        if let Some(parent) = target.parent() {
            std::fs::create_dir_all(parent).map_err(|e| io("cannot create", parent, e))?;
        }
        match std::fs::copy(&file, &target) {
            Ok(bytes) => {
                report.files += 1;
                report.bytes += bytes;
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(io("cannot copy", &file, e)),
        }
    }
    Ok(())
}
