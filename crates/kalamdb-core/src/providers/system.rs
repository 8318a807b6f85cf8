//! System tables: `system.namespaces`, `system.tables`, `system.schemas`, `system.users`,
//! `system.storages`, `system.audit_log`, `system.jobs` (computed from the persisted catalog at
//! scan time), `system.live` (from the live-query manager), `system.queries` (the requests
//! running now) and the operational tables of `system_ops` (stats, settings, server logs,
//! columns, data types, manifests, job nodes, cluster). Readable by dba/system only.

use super::identity_of;
use crate::access;
use crate::providers::deps::ProviderDeps;
use crate::providers::system_ops;
use crate::providers::system_rows::{
    Rows, audit_log_rows, jobs_rows, live_rows, namespaces_rows, queries_rows, schemas_rows,
    storages_rows, tables_rows, users_rows,
};
pub use crate::providers::system_schema::{KeyedRow, SYSTEM_TABLES, SystemTable, rows_to_batch};
use async_trait::async_trait;
use datafusion::arrow::array::RecordBatch;
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::catalog::{Session, TableProvider};
use datafusion::datasource::TableType as DfTableType;
use datafusion::error::Result as DfResult;
use datafusion::logical_expr::Expr;
use datafusion::physical_plan::ExecutionPlan;
use kalamdb_catalog::error::{KalamError, Result};
use std::sync::Arc;

impl SystemTable {
    /// The current rows, each with its key and its cells by column id (see
    /// [`SystemTable::definition`]).
    pub fn keyed_rows(&self, deps: &ProviderDeps) -> Result<Vec<KeyedRow>> {
        let key = self.key_columns();
        Ok(self
            .rows(deps)?
            .into_iter()
            .map(|row| {
                let k = key
                    .iter()
                    .map(|&i| format!("{:?}", row[i]))
                    .collect::<Vec<_>>()
                    .join("|");
                let cells = row
                    .into_iter()
                    .enumerate()
                    .map(|(i, v)| (i as u32 + 1, v))
                    .collect();
                (k, cells)
            })
            .collect())
    }

    /// The current rows of this table, each row's cells in column order.
    fn rows(&self, deps: &ProviderDeps) -> Result<Rows> {
        match self {
            Self::Live => Ok(live_rows(deps)),
            Self::Queries => Ok(queries_rows(deps)),
            Self::AuditLog => audit_log_rows(deps),
            Self::Namespaces => namespaces_rows(deps),
            Self::Tables => tables_rows(deps),
            Self::Schemas => schemas_rows(deps),
            Self::Users => users_rows(deps),
            Self::Jobs => jobs_rows(deps),
            Self::Storages => storages_rows(deps),
            Self::Stats => system_ops::stats_rows(deps),
            Self::Settings => system_ops::settings_rows(deps),
            Self::ServerLogs => Ok(system_ops::server_logs_rows()),
            Self::Columns => system_ops::columns_rows(deps),
            Self::Datatypes => Ok(system_ops::datatypes_rows()),
            Self::Manifest => Ok(system_ops::manifest_rows(deps)),
            Self::JobNodes => system_ops::job_nodes_rows(deps),
            Self::Cluster => Ok(system_ops::cluster_rows(deps)),
            Self::ClusterGroups => Ok(system_ops::cluster_groups_rows(deps)),
            Self::Transactions => Ok(system_ops::transactions_rows(deps)),
            Self::Topics => system_ops::topics_rows(deps),
            Self::TopicOffsets => system_ops::topic_offsets_rows(deps),
        }
    }

    /// The table's current contents as batches of its schema.
    pub fn batches(&self, deps: &ProviderDeps) -> Result<Vec<RecordBatch>> {
        match self {
            // Flushed entries are handed over as the batches they are kept in.
            Self::AuditLog => deps
                .system_cold
                .audit_batches(deps.catalog.audit_entries()?),
            _ => Ok(vec![self.rows_batch(&self.rows(deps)?)?]),
        }
    }
}

/// Provider of one system table.
#[derive(Debug)]
pub struct SystemTableProvider {
    kind: SystemTable,
    deps: ProviderDeps,
    schema: SchemaRef,
}

impl SystemTableProvider {
    /// A provider of `kind`.
    pub fn new(kind: SystemTable, deps: ProviderDeps) -> Self {
        Self {
            kind,
            deps,
            schema: kind.schema(),
        }
    }
}

#[async_trait]
impl TableProvider for SystemTableProvider {
    fn schema(&self) -> SchemaRef {
        Arc::clone(&self.schema)
    }

    fn table_type(&self) -> DfTableType {
        DfTableType::Base
    }

    async fn scan(
        &self,
        state: &dyn Session,
        projection: Option<&Vec<usize>>,
        _filters: &[Expr],
        _limit: Option<usize>,
    ) -> DfResult<Arc<dyn ExecutionPlan>> {
        let identity = identity_of(state)?;
        access::check_system_read(&identity).map_err(KalamError::into_datafusion)?;
        let (kind, deps) = (self.kind, self.deps.clone());
        let exec = super::deferred::deferred_exec(
            &self.schema,
            projection,
            Arc::new(move || kind.batches(&deps)),
        )?;
        Ok(exec)
    }
}
