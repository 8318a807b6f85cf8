//! System tables: `system.namespaces`, `system.tables`, `system.schemas`, `system.users`,
//! `system.storages`, `system.audit_log`, `system.jobs` (computed from the persisted catalog at
//! scan time), `system.live` (from the live-query manager) and `system.queries` (the requests
//! running now). Readable by dba/system only.

use super::identity_of;
use crate::access;
use crate::providers::deps::ProviderDeps;
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
use kalamdb_catalog::value::Value;
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

    fn rows(&self, deps: &ProviderDeps) -> Result<Vec<Vec<Value>>> {
        let catalog = &deps.catalog;
        let text = |s: &str| Value::Text(s.to_string());
        let opt_text =
            |s: Option<&str>| s.map(|v| Value::Text(v.to_string())).unwrap_or(Value::Null);
        let opt_ts = |t: Option<i64>| t.map(Value::Timestamp).unwrap_or(Value::Null);
        Ok(match self {
            Self::Live => deps
                .tables
                .change_listener()
                .map(|l| l.live_queries())
                .unwrap_or_default()
                .into_iter()
                .map(|q| {
                    vec![
                        text(&q.live_id),
                        text(&q.connection_id),
                        text(&q.subscription_id),
                        text(&q.namespace_id),
                        text(&q.table_name),
                        text(&q.user_id),
                        text(&q.query),
                        text(&q.options),
                        text(&q.status),
                        Value::Timestamp(q.created_at),
                        opt_ts(q.last_update),
                        Value::I64(q.changes),
                        text(deps.node_id.as_str()),
                    ]
                })
                .collect(),
            Self::Queries => deps
                .queries
                .list()
                .into_iter()
                .map(|q| {
                    vec![
                        Value::I64(q.id as i64),
                        text(&q.user_id),
                        q.client_ip
                            .map(|ip| Value::Text(ip.to_string()))
                            .unwrap_or(Value::Null),
                        text(&q.sql),
                        Value::Timestamp(q.started_at),
                        Value::I64(q.elapsed().as_millis() as i64),
                        text(deps.node_id.as_str()),
                    ]
                })
                .collect(),
            Self::AuditLog => deps.system_cold.audit_rows(catalog.audit_entries()?)?,
            Self::Namespaces => catalog
                .namespaces_with_table_counts()?
                .into_iter()
                .map(|(n, count)| {
                    vec![
                        text(&n.namespace_id),
                        text(&n.namespace_id),
                        Value::Timestamp(n.created_at),
                        opt_text(n.options.as_deref()),
                        Value::I32(count as i32),
                    ]
                })
                .collect(),
            Self::Tables => catalog
                .tables(None)?
                .into_iter()
                .map(|d| {
                    vec![
                        text(d.namespace.as_str()),
                        text(d.name.as_str()),
                        text(d.table_type.as_str()),
                        text(d.storage_id.as_str()),
                        Value::I32(d.version as i32),
                        opt_text(d.access_level.map(|a| a.as_str())),
                        d.ttl_seconds
                            .map(|t| Value::I64(t as i64))
                            .unwrap_or(Value::Null),
                        opt_text(d.flush_policy.as_deref()),
                        opt_text(d.comment.as_deref()),
                        Value::Timestamp(d.created_at),
                        Value::Timestamp(d.updated_at),
                    ]
                })
                .collect(),
            Self::Schemas => {
                let latest: std::collections::HashMap<String, u32> = catalog
                    .tables(None)?
                    .into_iter()
                    .map(|d| (d.table_id().to_string(), d.version))
                    .collect();
                catalog
                    .all_versions()?
                    .into_iter()
                    .map(|d| {
                        let id = d.table_id().to_string();
                        vec![
                            text(&id),
                            text(d.namespace.as_str()),
                            text(d.name.as_str()),
                            text(d.table_type.as_str()),
                            Value::I32(d.version as i32),
                            Value::Text(serde_json::to_string(&d.columns).unwrap_or_default()),
                            Value::Bool(latest.get(&id) == Some(&d.version)),
                            opt_text(d.access_level.map(|a| a.as_str())),
                            text(d.storage_id.as_str()),
                            Value::Timestamp(d.created_at),
                            Value::Timestamp(d.updated_at),
                        ]
                    })
                    .collect()
            }
            Self::Users => catalog
                .users()?
                .into_iter()
                .map(|u| {
                    vec![
                        text(&u.user_id),
                        text(&u.password_hash),
                        text(u.role.as_str()),
                        opt_text(u.email.as_deref()),
                        text(&u.auth_type),
                        Value::I32(u.failed_login_attempts as i32),
                        opt_ts(u.locked_until),
                        opt_ts(u.last_login_at),
                        Value::Timestamp(u.created_at),
                        Value::Timestamp(u.updated_at),
                        opt_ts(u.deleted_at),
                    ]
                })
                .collect(),
            Self::Jobs => catalog
                .jobs()?
                .into_iter()
                .map(|j| {
                    vec![
                        text(&j.job_id),
                        text(&j.job_type),
                        text(&j.target),
                        text(&j.status),
                        text(&j.trigger),
                        text(&j.created_by),
                        Value::Timestamp(j.created_at),
                        opt_ts(j.started_at),
                        opt_ts(j.finished_at),
                        Value::I64(j.rows as i64),
                        Value::I64(j.bytes as i64),
                        opt_text(j.message.as_deref()),
                        Value::I32(j.attempts as i32),
                    ]
                })
                .collect(),
            Self::Storages => catalog
                .storages()?
                .into_iter()
                .map(|s| {
                    vec![
                        text(&s.storage_id),
                        text(&s.storage_name),
                        opt_text(s.description.as_deref()),
                        text(&s.storage_type),
                        text(&s.base_directory),
                        // Secrets are write-only: shown as set or not, never their value.
                        opt_text(s.credentials.as_ref().map(|_| "<redacted>")),
                        opt_text(s.config_json.as_deref()),
                        text(&s.shared_tables_template),
                        text(&s.user_tables_template),
                        Value::Timestamp(s.created_at),
                        Value::Timestamp(s.updated_at),
                    ]
                })
                .collect(),
        })
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
