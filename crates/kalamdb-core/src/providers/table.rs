//! [`AppTableProvider`]: an application table as DataFusion sees it.
//!
//! Planning a read resolves the caller's scope (a USER/STREAM table: the caller's partition;
//! a SHARED table: after its access check) and turns primary-key filters into key ranges;
//! the rows are read by the streaming [`kalamdb_tables::scan::TableScanExec`] when the plan runs. Primary-key
//! filters the ranges express exactly are reported `Exact` (DataFusion does not re-check
//! them); every other filter is `Inexact`: offered for pruning segments, applied above.

use super::identity_of;
use crate::access;
use async_trait::async_trait;
use datafusion::arrow::array::RecordBatch;
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::catalog::{Session, TableProvider};
use datafusion::datasource::TableType as DfTableType;
use datafusion::error::Result as DfResult;
use datafusion::logical_expr::{Expr, TableProviderFilterPushDown};
use datafusion::physical_plan::ExecutionPlan;
use kalamdb_catalog::error::KalamError;
use kalamdb_catalog::schema_registry::CachedTable;
use kalamdb_catalog::value::Value;
use kalamdb_commons::TableType;
use kalamdb_commons::schema::DELETED_COLUMN;
use kalamdb_tables::TableStore;
use kalamdb_tables::rows::{Scope, StoredRow};
use kalamdb_tables::scan::ScanRequest;
use kalamdb_tables::scan::key_range::{KeyRanges, Pushdown, pushdown_of};
use std::sync::Arc;

/// Provider of one application table.
#[derive(Debug)]
pub struct AppTableProvider {
    table: Arc<CachedTable>,
    tables: Arc<TableStore>,
}

impl AppTableProvider {
    /// A provider over `table`.
    pub fn new(table: Arc<CachedTable>, tables: Arc<TableStore>) -> Self {
        Self { table, tables }
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
    ) -> kalamdb_catalog::error::Result<Option<StoredRow>> {
        let Some(k) = key.pk_key() else {
            return Ok(None);
        };
        let row = self
            .tables
            .get(&self.table, scope, &[k])
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
    ) -> kalamdb_catalog::error::Result<(SchemaRef, Vec<RecordBatch>)> {
        kalamdb_tables::rows::build_batches(&self.table, rows, projection)
    }
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

    /// Reads soft-deleted rows too when a filter asks for them (`asks_for_deleted`).
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
        let view = state
            .config()
            .get_extension::<super::SessionTx>()
            .map(|tx| tx.0.read(&self.tables, &def.table_id(), &scope));
        let request = ScanRequest {
            table: Arc::clone(&self.table),
            scope,
            ranges,
            filters: filters.to_vec(),
            projection: projection.cloned(),
            limit,
            keep_tombstones: filters.iter().any(asks_for_deleted),
            after_seq: None,
            view,
        };
        let exec = self
            .tables
            .scan(request)
            .await
            .map_err(KalamError::into_datafusion)?;
        Ok(Arc::new(exec))
    }
}

/// Whether a filter (one conjunct of the WHERE clause) asks for soft-deleted rows: `_deleted`,
/// `_deleted = true` or `_deleted IS TRUE`. Their latest version is a tombstone holding the
/// row's last values; scans return those only then, and as long as the tombstone is retained
/// (`[storage] tombstone_retention_secs` after a compaction). The filter itself still runs on
/// the rows, so the other queries never see them.
fn asks_for_deleted(filter: &Expr) -> bool {
    let is_deleted = |e: &Expr| matches!(e, Expr::Column(c) if c.name == DELETED_COLUMN);
    let is_true = |e: &Expr| {
        matches!(
            e,
            Expr::Literal(datafusion::scalar::ScalarValue::Boolean(Some(true)), _)
        )
    };
    match filter {
        Expr::BinaryExpr(b) if b.op == datafusion::logical_expr::Operator::Eq => {
            (is_deleted(&b.left) && is_true(&b.right)) || (is_true(&b.left) && is_deleted(&b.right))
        }
        Expr::IsTrue(e) => is_deleted(e),
        e => is_deleted(e),
    }
}
