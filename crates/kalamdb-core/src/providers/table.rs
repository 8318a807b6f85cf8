//! [`AppTableProvider`]: an application table as DataFusion sees it.
//!
//! Planning a read resolves the caller's scope (a USER/STREAM table: the caller's partition;
//! a SHARED table: after its access check) and turns primary-key filters into key ranges;
//! the rows are read by the streaming [`TableScanExec`] when the plan runs. Primary-key
//! filters the ranges express exactly are reported `Exact` (DataFusion does not re-check
//! them); every other filter is `Inexact`: offered for pruning segments, applied above.

use super::identity_of;
use crate::access;
use crate::cold::ColdTier;
use crate::error::KalamError;
use crate::rows::{Scope, StoredRow};
use crate::scan::key_range::{KeyRanges, Pushdown, pushdown_of};
use crate::scan::{ScanRequest, TableScanExec};
use crate::schema_registry::CachedTable;
use crate::value::{Value, to_array};
use async_trait::async_trait;
use datafusion::arrow::array::{ArrayRef, BooleanArray, Int64Array, RecordBatch};
use datafusion::arrow::datatypes::{Schema, SchemaRef};
use datafusion::catalog::{Session, TableProvider};
use datafusion::datasource::TableType as DfTableType;
use datafusion::error::Result as DfResult;
use datafusion::logical_expr::{Expr, TableProviderFilterPushDown};
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

    /// What `filter` says about the primary key (nothing for STREAM tables, keyed by `_seq`).
    fn pushdown(&self, filter: &Expr) -> Option<Pushdown> {
        if self.table.def.table_type == TableType::Stream {
            return None;
        }
        let pk = self.table.pk_index?;
        let arrow_type = self.table.schema.field(pk).data_type();
        Some(pushdown_of(filter, &self.table.def.columns[pk], arrow_type))
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
        Ok(filters
            .iter()
            .map(|f| match self.pushdown(f) {
                Some(p) if p.exact => TableProviderFilterPushDown::Exact,
                _ => TableProviderFilterPushDown::Inexact,
            })
            .collect())
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
        let mut ranges = KeyRanges::all();
        for f in filters {
            if let Some(Pushdown {
                ranges: Some(r), ..
            }) = self.pushdown(f)
            {
                ranges = ranges.intersect(&r);
            }
        }
        let request = ScanRequest {
            table: Arc::clone(&self.table),
            scope,
            ranges,
            filters: filters.to_vec(),
            projection: projection.cloned(),
            limit,
        };
        let exec = TableScanExec::plan(request, Arc::clone(&self.backend), Arc::clone(&self.cold))
            .await
            .map_err(KalamError::into_datafusion)?;
        Ok(Arc::new(exec))
    }
}
