//! Flushing system tables to Parquet (seed FR-010).
//!
//! `system.audit_log` is the system table that grows without bound (every DDL statement, user
//! change and `EXECUTE AS` adds a row), so it flushes like an application table:
//! `STORAGE FLUSH TABLE system.audit_log` writes the entries to a Parquet segment in
//! `system/audit_log/` of the built-in `local` storage, appends it to that folder's manifest,
//! and only then deletes the flushed entries from the catalog. Entries are append-only and
//! never change, so the cold side needs no versions: reads return the flushed entries
//! (kept in memory as Arrow, loaded at start) followed by the catalog's, each `audit_id` once,
//! so a crash between the manifest commit and the catalog delete duplicates nothing. The other
//! system tables are small, current-state catalog records and are not flushed.

use crate::app_context::AppContext;
use crate::catalog::AuditEntry;
use crate::error::{KalamError, Result};
use crate::providers::system::SystemTable;
use crate::value::{Value, coerce};
use datafusion::arrow::array::{Array, RecordBatch};
use datafusion::scalar::ScalarValue;
use kalamdb_filestore::{FileStore, Manifest, SegmentInfo};
use parking_lot::RwLock;
use std::collections::HashSet;
use std::sync::Arc;

/// Folder of the flushed audit log in the `local` storage.
const AUDIT_DIR: &str = "system/audit_log";

/// The flushed part of `system.audit_log`.
#[derive(Debug, Default)]
pub struct SystemCold {
    /// Flushed entries as rows of `system.audit_log`, oldest first.
    audit: RwLock<Arc<Vec<Vec<Value>>>>,
    /// One flush at a time.
    flushing: tokio::sync::Mutex<()>,
}

fn files(app: &AppContext) -> Result<FileStore> {
    app.cold().files("local")
}

impl SystemCold {
    /// Loads the flushed audit entries listed by the manifest.
    pub async fn load(&self, files: &FileStore) -> Result<()> {
        let manifest = files.manifest(AUDIT_DIR).await?;
        let mut rows = Vec::new();
        let mut seen = HashSet::new();
        for seg in &manifest.segments {
            for batch in files.read_segment(AUDIT_DIR, seg).await? {
                rows.extend(
                    batch_rows(&batch)?
                        .into_iter()
                        .filter(|r| seen.insert(audit_id(r))),
                );
            }
        }
        *self.audit.write() = Arc::new(rows);
        Ok(())
    }

    /// `system.audit_log`'s rows: the flushed ones, then `hot` (catalog) entries not flushed.
    pub fn audit_rows(&self, hot: Vec<AuditEntry>) -> Vec<Vec<Value>> {
        let cold = Arc::clone(&self.audit.read());
        let flushed: HashSet<i64> = cold.iter().map(|r| audit_id(r)).collect();
        let mut rows = (*cold).clone();
        rows.extend(
            hot.iter()
                .filter(|e| !flushed.contains(&e.audit_id))
                .map(audit_row),
        );
        rows
    }

    /// Flushes every audit entry in the catalog; returns (entries, bytes written).
    pub async fn flush_audit(&self, app: &AppContext) -> Result<(u64, u64)> {
        let _one = self.flushing.lock().await;
        let files = files(app)?;
        let entries = app.catalog().audit_entries()?;
        let ids: Vec<i64> = entries.iter().map(|e| e.audit_id).collect();
        let flushed: HashSet<i64> = self.audit.read().iter().map(|r| audit_id(r)).collect();
        let new: Vec<Vec<Value>> = entries
            .iter()
            .filter(|e| !flushed.contains(&e.audit_id))
            .map(audit_row)
            .collect();
        let (mut count, mut bytes) = (0, 0);
        if let (Some(first), Some(last)) = (new.first(), new.last()) {
            let hex = |id: i64| format!("{:016x}", id as u64);
            let info = SegmentInfo {
                id: format!("{:019}", app.seq().next_id()),
                min_seq: audit_id(first),
                max_seq: audit_id(last),
                min_key: hex(audit_id(first)),
                max_key: hex(audit_id(last)),
                schema_version: 1,
            };
            let batch = SystemTable::AuditLog.rows_batch(&new)?;
            let segment = kalamdb_filestore::encode_segment(AUDIT_DIR, &[batch], info)?;
            let mut manifest: Manifest = files.manifest(AUDIT_DIR).await?;
            let meta = files.put_segment(AUDIT_DIR, segment).await?;
            (count, bytes) = (meta.row_count, meta.bytes);
            manifest.version = 1;
            manifest.segments.push(meta);
            files.commit(AUDIT_DIR, &manifest).await?;
            let mut all = (**self.audit.read()).clone();
            all.extend(new);
            *self.audit.write() = Arc::new(all);
        }
        // Readers now find every entry in the flushed part; drop them from the catalog.
        app.catalog().delete_audit(&ids)?;
        Ok((count, bytes))
    }
}

fn audit_id(row: &[Value]) -> i64 {
    match row.first() {
        Some(Value::I64(id)) => *id,
        _ => 0,
    }
}

/// One entry as a row of `system.audit_log`.
pub fn audit_row(a: &AuditEntry) -> Vec<Value> {
    let text = |s: &str| Value::Text(s.to_string());
    let opt_text = |s: Option<&str>| s.map(text).unwrap_or(Value::Null);
    vec![
        Value::I64(a.audit_id),
        Value::Timestamp(a.timestamp),
        text(&a.actor_user_id),
        text(&a.action),
        text(&a.target),
        opt_text(a.details.as_deref()),
        opt_text(a.subject_user_id.as_deref()),
        opt_text(a.ip_address.as_deref()),
    ]
}

/// A flushed segment's rows, converted back to cells.
fn batch_rows(batch: &RecordBatch) -> Result<Vec<Vec<Value>>> {
    let def = SystemTable::AuditLog.definition();
    (0..batch.num_rows())
        .map(|i| {
            def.columns
                .iter()
                .enumerate()
                .map(|(c, col)| {
                    let array = batch.column(c);
                    if array.is_null(i) {
                        return Ok(Value::Null);
                    }
                    let scalar = ScalarValue::try_from_array(array, i)
                        .map_err(|e| KalamError::Internal(e.to_string()))?;
                    coerce(scalar, &col.data_type, &col.name)
                })
                .collect()
        })
        .collect()
}
