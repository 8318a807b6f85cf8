//! Hot-store layout of application tables: partition names, keys and the row encoding.
//!
//! Every table owns one partition, chosen by its type. Partition names carry the table's
//! creation time, so a table dropped and created again under the same name never shares
//! storage with its predecessor, even while a writer of the old table is still in flight:
//!
//! - USER and SHARED tables: `tbl/<ns>/<table>/<created>/rows`, the **latest version** of each
//!   primary key, keyed by `scope ‖ pk_key`. Scans return one row per key in primary-key order;
//!   point lookups and uniqueness checks are single reads. A deleted key keeps its tombstone
//!   here, so a later lookup cannot fall through to an older tier. Superseded versions are not
//!   kept: nothing reads them (a flush writes the latest version of each key with its `_seq`,
//!   live-query resume sends the current state of keys changed after a `_seq`), and writing
//!   them cost a second, randomly placed memtable insert per row.
//! - STREAM tables: `tbl/<ns>/<table>/<created>/log`, **every appended row**, keyed by
//!   `scope ‖ _seq` (big-endian), so the TTL cutoff is a key-range bound.
//!
//! `scope` is empty for SHARED tables and
//! `user_id ‖ 0x00` for USER/STREAM tables (user ids never contain NUL), so each user's rows are
//! one contiguous key range. Rows are postcard-encoded [`StoredRow`]s whose cells are keyed by
//! stable column id.

use datafusion::arrow::array::{ArrayRef, BooleanArray, Int64Array, RecordBatch};
use datafusion::arrow::datatypes::{Schema, SchemaRef};
use kalamdb_catalog::error::{KalamError, Result};
pub use kalamdb_catalog::partitions::{
    TABLE_PARTITION_PREFIX, TablePartitions, table_of_partition,
};
use kalamdb_catalog::schema_registry::CachedTable;
use kalamdb_catalog::value::{Value, to_array};
use kalamdb_commons::schema::{DELETED_COLUMN, SEQ_COLUMN};
use kalamdb_commons::{TableDefinition, UserId};
use serde::{Deserialize, Serialize};
use std::sync::Arc;

/// One stored row version.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StoredRow {
    /// Version id (`_seq`).
    pub seq: i64,
    /// Tombstone flag (`_deleted`).
    pub deleted: bool,
    /// Cells by column id; absent ids read as NULL.
    pub cells: Vec<(u32, Value)>,
}

impl StoredRow {
    /// Encodes for storage.
    pub fn encode(&self) -> Vec<u8> {
        postcard::to_stdvec(self).expect("rows always encode")
    }

    /// Decodes a stored row.
    pub fn decode(bytes: &[u8]) -> Result<Self> {
        postcard::from_bytes(bytes)
            .map_err(|e| KalamError::Internal(format!("corrupt row in hot store: {e}")))
    }

    /// Only the `_seq` and `_deleted` of an encoded row (they come first), without decoding
    /// its cells.
    pub fn decode_header(bytes: &[u8]) -> Result<(i64, bool)> {
        postcard::take_from_bytes::<(i64, bool)>(bytes)
            .map(|(header, _)| header)
            .map_err(|e| KalamError::Internal(format!("corrupt row in hot store: {e}")))
    }

    /// The cell of column `column_id`, NULL when absent.
    pub fn cell(&self, column_id: u32) -> &Value {
        self.cells
            .iter()
            .find(|(id, _)| *id == column_id)
            .map(|(_, v)| v)
            .unwrap_or(&Value::Null)
    }
}

/// Whose rows a read or write touches.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Scope {
    /// The single partition of a SHARED table.
    Shared,
    /// One user's partition of a USER or STREAM table.
    User(UserId),
}

impl Scope {
    /// The owner of a per-user scope.
    pub fn user(&self) -> Option<&UserId> {
        match self {
            Scope::Shared => None,
            Scope::User(u) => Some(u),
        }
    }

    /// Key prefix of this scope.
    pub fn prefix(&self) -> Vec<u8> {
        match self {
            Scope::Shared => Vec::new(),
            Scope::User(u) => {
                let mut p = u.as_str().as_bytes().to_vec();
                p.push(0);
                p
            }
        }
    }
}

/// Key of the latest-version entry of `pk_key` in `scope`.
pub fn row_key(scope_prefix: &[u8], pk_key: &[u8]) -> Vec<u8> {
    let mut k = Vec::with_capacity(scope_prefix.len() + pk_key.len());
    k.extend_from_slice(scope_prefix);
    k.extend_from_slice(pk_key);
    k
}

/// Key of an appended STREAM row.
pub fn log_key(scope_prefix: &[u8], seq: i64) -> Vec<u8> {
    let mut k = Vec::with_capacity(scope_prefix.len() + 8);
    k.extend_from_slice(scope_prefix);
    k.extend_from_slice(&(seq as u64).to_be_bytes());
    k
}

/// Decodes the `_seq` at the end of a log key.
pub fn seq_of_log_key(key: &[u8]) -> Option<i64> {
    let tail: [u8; 8] = key.get(key.len().checked_sub(8)?..)?.try_into().ok()?;
    Some(u64::from_be_bytes(tail) as i64)
}

/// The smallest `_seq` still visible in a STREAM table: rows written before `now - TTL` have
/// smaller ids (the top bits of a `_seq` are its write time).
pub fn stream_cutoff_seq(def: &TableDefinition) -> i64 {
    let ttl_ms = def.ttl_seconds.unwrap_or(0).saturating_mul(1000) as i64;
    let now_ms = chrono::Utc::now().timestamp_millis();
    kalamdb_catalog::seq::min_seq_at_unix_millis(now_ms - ttl_ms)
}

/// Rows per Arrow batch built from stored rows.
pub const BATCH_ROWS: usize = 8192;

/// The rows of `batch`, a batch of `table`'s full schema (user columns, `_seq`, and `_deleted`
/// unless a STREAM table),
/// as stored rows: the inverse of [`build_batches`]. NULL cells are left out, as stored.
pub fn rows_of_batch(table: &CachedTable, batch: &RecordBatch) -> Result<Vec<StoredRow>> {
    use datafusion::arrow::array::{Array, AsArray};
    use datafusion::arrow::datatypes::Int64Type;
    let internal = |e: &dyn std::fmt::Display| KalamError::Internal(e.to_string());
    let column = |name: &str| {
        batch
            .schema()
            .index_of(name)
            .map(|i| Arc::clone(batch.column(i)))
            .map_err(|e| internal(&e))
    };
    let seqs = column(SEQ_COLUMN)?;
    let seqs = seqs.as_primitive::<Int64Type>();
    // STREAM tables have no `_deleted`: their rows are never tombstones.
    let deleted = column(DELETED_COLUMN).ok();
    let deleted = deleted.as_ref().map(|d| d.as_boolean());
    let mut rows = Vec::with_capacity(batch.num_rows());
    for i in 0..batch.num_rows() {
        let mut cells = Vec::with_capacity(table.def.columns.len());
        for (c, col) in table.def.columns.iter().enumerate() {
            let array = batch.column(c);
            if array.is_null(i) {
                continue;
            }
            let scalar = datafusion::scalar::ScalarValue::try_from_array(array, i)
                .map_err(|e| internal(&e))?;
            cells.push((
                col.column_id,
                kalamdb_catalog::value::coerce(scalar, &col.data_type, &col.name)?,
            ));
        }
        rows.push(StoredRow {
            seq: seqs.value(i),
            deleted: deleted.is_some_and(|d| d.value(i)),
            cells,
        });
    }
    Ok(rows)
}

/// Arrow batches of `table`'s schema (projected by `projection`) from stored rows, at most
/// [`BATCH_ROWS`] rows each.
pub fn build_batches(
    table: &CachedTable,
    rows: &[StoredRow],
    projection: Option<&Vec<usize>>,
) -> Result<(SchemaRef, Vec<RecordBatch>)> {
    let full = &table.schema;
    let indices: Vec<usize> = match projection {
        Some(p) => p.clone(),
        None => (0..full.fields().len()).collect(),
    };
    let schema = Arc::new(Schema::new_with_metadata(
        indices
            .iter()
            .map(|i| full.field(*i).clone())
            .collect::<Vec<_>>(),
        full.metadata().clone(),
    ));
    let columns = &table.def.columns;
    let mut batches = Vec::new();
    for chunk in rows.chunks(BATCH_ROWS) {
        let mut arrays: Vec<ArrayRef> = Vec::with_capacity(indices.len());
        for &i in &indices {
            let field = full.field(i);
            let array: ArrayRef = if i < columns.len() {
                let col = &columns[i];
                to_array(chunk.iter().map(|r| r.cell(col.column_id)), &col.data_type)?
            } else if field.name() == SEQ_COLUMN {
                Arc::new(Int64Array::from_iter_values(chunk.iter().map(|r| r.seq)))
            } else if field.name() == DELETED_COLUMN {
                Arc::new(BooleanArray::from(
                    chunk.iter().map(|r| r.deleted).collect::<Vec<_>>(),
                ))
            } else {
                return Err(KalamError::Internal(format!(
                    "unknown column {}",
                    field.name()
                )));
            };
            arrays.push(array);
        }
        let options =
            datafusion::arrow::array::RecordBatchOptions::new().with_row_count(Some(chunk.len()));
        batches.push(
            RecordBatch::try_new_with_options(Arc::clone(&schema), arrays, &options)
                .map_err(|e| KalamError::Internal(e.to_string()))?,
        );
    }
    Ok((schema, batches))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn row_roundtrip_and_keys() {
        let row = StoredRow {
            seq: 42,
            deleted: false,
            cells: vec![
                (1, Value::I64(7)),
                (2, Value::Text("x".into())),
                (3, Value::Decimal(-5)),
            ],
        };
        assert_eq!(StoredRow::decode(&row.encode()).unwrap(), row);
        assert_eq!(
            StoredRow::decode_header(&row.encode()).unwrap(),
            (42, false)
        );
        assert_eq!(row.cell(9), &Value::Null);
        let scope = Scope::User(UserId::new("alice"));
        let k = log_key(&scope.prefix(), 42);
        assert!(k.starts_with(b"alice\0"));
        assert_eq!(seq_of_log_key(&k), Some(42));
        assert_eq!(scope.prefix(), b"alice\0");
    }
}
