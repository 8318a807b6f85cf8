//! [`AppTableProvider`]: reads an application table's hot rows for the caller's scope.
//!
//! A scan reads the `rows` partition (latest version per primary key, in key order), merges
//! the scope's flushed segments under it when it has any ([`crate::cold`]), drops tombstones,
//! and builds only the projected columns. Equality and IN filters on the primary
//! key are pushed down (as inexact, DataFusion re-checks them) and become point reads instead
//! of a scan. A `LIMIT` without filters stops the scan early.

use super::identity_of;
use crate::access;
use crate::cold::{ColdTier, read_versions};
use crate::error::KalamError;
use crate::rows::{Scope, StoredRow, log_key, stream_cutoff_seq};
use crate::schema_registry::CachedTable;
use crate::value::{Value, coerce, to_array};
use async_trait::async_trait;
use datafusion::arrow::array::{ArrayRef, BooleanArray, Int64Array, RecordBatch};
use datafusion::arrow::datatypes::{Schema, SchemaRef};
use datafusion::catalog::{Session, TableProvider};
use datafusion::datasource::TableType as DfTableType;
use datafusion::datasource::memory::MemorySourceConfig;
use datafusion::error::Result as DfResult;
use datafusion::logical_expr::{BinaryExpr, Expr, Operator, TableProviderFilterPushDown};
use datafusion::physical_plan::ExecutionPlan;
use kalamdb_commons::TableType;
use kalamdb_commons::schema::{DELETED_COLUMN, SEQ_COLUMN};
use kalamdb_store::StorageBackend;
use std::sync::Arc;

/// Rows per Arrow batch produced by a scan.
const BATCH_ROWS: usize = 8192;

/// Provider of one application table.
#[derive(Debug)]
pub struct AppTableProvider {
    table: Arc<CachedTable>,
    backend: Arc<dyn StorageBackend>,
    cold: Arc<ColdTier>,
}

impl AppTableProvider {
    /// A provider over `table`.
    pub fn new(
        table: Arc<CachedTable>,
        backend: Arc<dyn StorageBackend>,
        cold: Arc<ColdTier>,
    ) -> Self {
        Self {
            table,
            backend,
            cold,
        }
    }

    /// Primary-key values named by an `pk = literal` or `pk IN (literals)` filter.
    fn pk_values(&self, filter: &Expr) -> Option<Vec<Value>> {
        if self.table.def.table_type == TableType::Stream {
            return None; // stream rows are keyed by _seq only
        }
        let pk = &self.table.def.columns[self.table.pk_index?];
        let is_pk =
            |e: &Expr| matches!(e, Expr::Column(c) if c.name.eq_ignore_ascii_case(&pk.name));
        let lit = |e: &Expr| match e {
            Expr::Literal(v, _) => coerce(v.clone(), &pk.data_type, &pk.name).ok(),
            _ => None,
        };
        match filter {
            Expr::BinaryExpr(BinaryExpr {
                left,
                op: Operator::Eq,
                right,
            }) => {
                if is_pk(left) {
                    lit(right).map(|v| vec![v])
                } else if is_pk(right) {
                    lit(left).map(|v| vec![v])
                } else {
                    None
                }
            }
            Expr::InList(list) if !list.negated && is_pk(&list.expr) => {
                list.list.iter().map(lit).collect()
            }
            _ => None,
        }
    }

    /// Reads the visible row of one primary-key value in `scope`: the hot version when there
    /// is one (a tombstone included), else the newest flushed one.
    pub async fn read_key(
        &self,
        scope: &Scope,
        key: &Value,
    ) -> crate::error::Result<Option<StoredRow>> {
        let Some(k) = key.pk_key() else {
            return Ok(None);
        };
        let row = self
            .cold
            .current_versions(&*self.backend, &self.table, scope, &[k])
            .await?
            .pop()
            .flatten();
        Ok(row.filter(|r| !r.deleted))
    }

    /// The visible rows of `scope` as batches projected by `projection`, in primary-key order
    /// (STREAM: `_seq` order). The pushed-down filters only pick the read path (primary-key
    /// values become point reads); `limit` applies only when there are none.
    pub async fn scan_scope(
        &self,
        scope: &Scope,
        filters: &[Expr],
        projection: Option<&Vec<usize>>,
        limit: Option<usize>,
    ) -> crate::error::Result<(SchemaRef, Vec<RecordBatch>)> {
        let prefix = scope.prefix();
        let limit = if filters.is_empty() { limit } else { None };
        if self.table.def.table_type == TableType::Stream {
            let rows = self.read_stream(&prefix, limit)?;
            return self.build_batches(&rows, projection);
        }
        if let Some(values) = filters.iter().find_map(|f| self.pk_values(f)) {
            let mut rows = Vec::new();
            let mut seen = std::collections::HashSet::new();
            for v in values {
                if v.pk_key().is_some_and(|k| seen.insert(k))
                    && let Some(row) = self.read_key(scope, &v).await?
                {
                    rows.push(row);
                }
            }
            return self.build_batches(&rows, projection);
        }
        // Hot first, then the manifest (see crate::cold).
        let hot = read_versions(&*self.backend, &self.table, &prefix)?;
        if self.cold.has_segments(&self.table, scope).await? {
            let batches = self
                .cold
                .scan_batches(&self.table, scope, &hot, projection, filters)
                .await?;
            let schema = match projection {
                Some(p) => Arc::new(
                    self.table
                        .schema
                        .project(p)
                        .map_err(|e| KalamError::Internal(e.to_string()))?,
                ),
                None => Arc::clone(&self.table.schema),
            };
            return Ok((schema, batches));
        }
        let visible = hot.into_iter().map(|(_, r)| r).filter(|r| !r.deleted);
        let rows: Vec<StoredRow> = match limit {
            Some(l) => visible.take(l).collect(),
            None => visible.collect(),
        };
        self.build_batches(&rows, projection)
    }

    /// Reads a STREAM scope: the log from the TTL cutoff on (older rows are invisible at once,
    /// whether or not eviction has removed them yet).
    fn read_stream(
        &self,
        prefix: &[u8],
        limit: Option<usize>,
    ) -> crate::error::Result<Vec<StoredRow>> {
        let start = log_key(prefix, stream_cutoff_seq(&self.table.def));
        let mut rows = Vec::new();
        for item in self
            .backend
            .scan(&self.table.partitions.log, prefix, Some(&start))?
        {
            let (_, bytes) = item?;
            let mut row = StoredRow::decode(&bytes)?;
            self.table.backfill(&mut row);
            rows.push(row);
            if limit.is_some_and(|l| rows.len() >= l) {
                break;
            }
        }
        Ok(rows)
    }

    /// Builds projected batches from rows.
    pub fn build_batches(
        &self,
        rows: &[StoredRow],
        projection: Option<&Vec<usize>>,
    ) -> crate::error::Result<(SchemaRef, Vec<RecordBatch>)> {
        build_batches(&self.table, rows, projection)
    }
}

/// Builds batches of `table`'s schema (projected) from rows.
pub fn build_batches(
    table: &CachedTable,
    rows: &[StoredRow],
    projection: Option<&Vec<usize>>,
) -> crate::error::Result<(SchemaRef, Vec<RecordBatch>)> {
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

#[async_trait]
impl TableProvider for AppTableProvider {
    fn schema(&self) -> SchemaRef {
        Arc::clone(&self.table.schema)
    }

    fn table_type(&self) -> DfTableType {
        DfTableType::Base
    }

    fn supports_filters_pushdown(
        &self,
        filters: &[&Expr],
    ) -> DfResult<Vec<TableProviderFilterPushDown>> {
        // Every filter is offered to the scan (primary-key lookups, segment pruning by
        // statistics) and applied again above it.
        Ok(vec![TableProviderFilterPushDown::Inexact; filters.len()])
    }

    async fn scan(
        &self,
        state: &dyn Session,
        projection: Option<&Vec<usize>>,
        filters: &[Expr],
        limit: Option<usize>,
    ) -> DfResult<Arc<dyn ExecutionPlan>> {
        let identity = identity_of(state)?;
        let def = &self.table.def;
        let scope = match def.table_type {
            TableType::Shared => {
                access::check_shared_read(&identity, def).map_err(KalamError::into_datafusion)?;
                Scope::Shared
            }
            _ => Scope::User(identity.user_id.clone()),
        };
        let (schema, batches) = self
            .scan_scope(&scope, filters, projection, limit)
            .await
            .map_err(KalamError::into_datafusion)?;
        let exec: Arc<dyn ExecutionPlan> =
            MemorySourceConfig::try_new_exec(&[batches], schema, None)?;
        Ok(exec)
    }
}
