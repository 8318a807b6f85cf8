//! Flushing system tables to Parquet.
//!
//! `system.audit_log` is the system table that grows without bound (every DDL statement, user
//! change and `EXECUTE AS` adds a row), so it flushes like an application table:
//! `STORAGE FLUSH TABLE system.audit_log` writes the entries to a Parquet segment in
//! `system/audit_log/` of the built-in `local` storage, appends it to that folder's manifest,
//! and only then deletes the flushed entries from the catalog. Entries are append-only and
//! never change, so the cold side needs no versions: reads return the flushed entries
//! (kept in memory as Arrow batches, loaded at start, handed to queries without copying)
//! followed by the catalog's, each `audit_id` once,
//! so a crash between the manifest commit and the catalog delete duplicates nothing. The other
//! system tables are small, current-state catalog records and are not flushed.

use crate::providers::system_schema::SystemTable;
use datafusion::arrow::array::{
    Array, ArrayRef, BooleanArray, Int64Array, RecordBatch, new_null_array,
};
use datafusion::arrow::compute::{cast, filter_record_batch};
use datafusion::scalar::ScalarValue;
use kalamdb_catalog::catalog::{AuditEntry, Catalog};
use kalamdb_catalog::error::{KalamError, Result};
use kalamdb_catalog::seq::SeqGenerator;
use kalamdb_catalog::value::{Value, coerce};
use kalamdb_filestore::{FileStore, Manifest, SegmentInfo};
use parking_lot::RwLock;
use std::collections::HashSet;
use std::sync::Arc;

/// Folder of the flushed audit log in the `local` storage.
const AUDIT_DIR: &str = "system/audit_log";

/// The flushed part of `system.audit_log`.
#[derive(Debug, Default)]
pub struct SystemCold {
    audit: RwLock<Arc<FlushedAudit>>,
    /// One flush at a time.
    flushing: tokio::sync::Mutex<()>,
}

/// Flushed audit entries: the segments' batches (in `system.audit_log`'s schema, oldest
/// first) and the ids they hold.
#[derive(Debug, Default)]
struct FlushedAudit {
    batches: Vec<RecordBatch>,
    ids: HashSet<i64>,
}

impl FlushedAudit {
    /// Adds `batch`, less any entry already held (a crash between a manifest commit and the
    /// catalog delete could have flushed an entry twice).
    fn push(&mut self, batch: &RecordBatch) -> Result<()> {
        let batch = conform(batch)?;
        let ids = batch
            .column(0)
            .as_any()
            .downcast_ref::<Int64Array>()
            .ok_or_else(|| KalamError::Internal("audit_id is not BIGINT".into()))?;
        let keep: BooleanArray = ids
            .iter()
            .map(|id| Some(self.ids.insert(id.unwrap_or(0))))
            .collect();
        let batch = filter_record_batch(&batch, &keep).map_err(internal)?;
        if batch.num_rows() > 0 {
            self.batches.push(batch);
        }
        Ok(())
    }
}

/// `batch` in `system.audit_log`'s current schema: columns matched by name (a segment written
/// before a column existed reads it as NULL).
fn conform(batch: &RecordBatch) -> Result<RecordBatch> {
    let schema = SystemTable::AuditLog.schema();
    let columns = schema
        .fields()
        .iter()
        .map(|f| match batch.column_by_name(f.name()) {
            Some(a) if a.data_type() == f.data_type() => Ok(Arc::clone(a)),
            Some(a) => cast(a, f.data_type()).map_err(internal),
            None => Ok(new_null_array(f.data_type(), batch.num_rows())),
        })
        .collect::<Result<Vec<ArrayRef>>>()?;
    RecordBatch::try_new(schema, columns).map_err(internal)
}

fn internal(e: impl std::fmt::Display) -> KalamError {
    KalamError::Internal(e.to_string())
}

impl SystemCold {
    /// Loads the flushed audit entries listed by the manifest.
    pub async fn load(&self, files: &FileStore) -> Result<()> {
        let manifest = files.manifest(AUDIT_DIR).await?;
        let mut flushed = FlushedAudit::default();
        for seg in &manifest.segments {
            for batch in files.read_segment(AUDIT_DIR, seg).await? {
                flushed.push(&batch)?;
            }
        }
        *self.audit.write() = Arc::new(flushed);
        Ok(())
    }

    /// `system.audit_log` as batches: the flushed ones as they are, then one of the `hot`
    /// (catalog) entries not flushed.
    pub fn audit_batches(&self, hot: Vec<AuditEntry>) -> Result<Vec<RecordBatch>> {
        let cold = Arc::clone(&self.audit.read());
        let rows: Vec<Vec<Value>> = hot
            .iter()
            .filter(|e| !cold.ids.contains(&e.audit_id))
            .map(audit_row)
            .collect();
        let mut batches = cold.batches.clone();
        batches.push(SystemTable::AuditLog.rows_batch(&rows)?);
        Ok(batches)
    }

    /// `system.audit_log`'s rows (cells): the flushed ones, then `hot` entries not flushed.
    pub fn audit_rows(&self, hot: Vec<AuditEntry>) -> Result<Vec<Vec<Value>>> {
        let cold = Arc::clone(&self.audit.read());
        let mut rows = Vec::new();
        for batch in &cold.batches {
            rows.extend(batch_rows(batch)?);
        }
        rows.extend(
            hot.iter()
                .filter(|e| !cold.ids.contains(&e.audit_id))
                .map(audit_row),
        );
        Ok(rows)
    }

    /// Flushes every audit entry in `catalog` to `files` (the `local` storage); returns
    /// (entries, bytes written).
    pub async fn flush_audit(
        &self,
        files: &FileStore,
        catalog: &Catalog,
        seq: &SeqGenerator,
    ) -> Result<(u64, u64)> {
        let _one = self.flushing.lock().await;
        let entries = catalog.audit_entries()?;
        let ids: Vec<i64> = entries.iter().map(|e| e.audit_id).collect();
        let new: Vec<Vec<Value>> = {
            let flushed = self.audit.read();
            entries
                .iter()
                .filter(|e| !flushed.ids.contains(&e.audit_id))
                .map(audit_row)
                .collect()
        };
        let (mut count, mut bytes) = (0, 0);
        if let (Some(first), Some(last)) = (new.first(), new.last()) {
            let hex = |id: i64| format!("{:016x}", id as u64);
            let info = SegmentInfo {
                id: format!("{:019}", seq.next_id()),
                min_seq: audit_id(first),
                max_seq: audit_id(last),
                min_key: hex(audit_id(first)),
                max_key: hex(audit_id(last)),
                schema_version: 1,
            };
            let batch = SystemTable::AuditLog.rows_batch(&new)?;
            let segment =
                kalamdb_filestore::encode_segment(AUDIT_DIR, std::slice::from_ref(&batch), info)?;
            let mut manifest: Manifest = files.manifest(AUDIT_DIR).await?;
            let meta = files.put_segment(AUDIT_DIR, segment).await?;
            (count, bytes) = (meta.row_count, meta.bytes);
            manifest.version = 1;
            manifest.segments.push(meta);
            files.commit(AUDIT_DIR, &manifest).await?;
            let mut flushed = FlushedAudit {
                batches: self.audit.read().batches.clone(),
                ids: self.audit.read().ids.clone(),
            };
            flushed.push(&batch)?;
            *self.audit.write() = Arc::new(flushed);
        }
        // Readers now find every entry in the flushed part; drop them from the catalog.
        catalog.delete_audit(&ids)?;
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
