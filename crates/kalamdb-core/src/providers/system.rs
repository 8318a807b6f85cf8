//! System tables: `system.namespaces`, `system.tables`, `system.schemas`, `system.users`,
//! `system.storages`, `system.audit_log`, `system.jobs` (computed from the persisted catalog at
//! scan time), `system.live` (from the live-query manager) and `system.queries` (the requests
//! running now). Readable by dba/system only.

use super::identity_of;
use crate::access;
use crate::catalog::CatalogPart;
use crate::error::{KalamError, Result};
use crate::providers::catalog::ProviderDeps;
use crate::types::system_field;
use crate::value::{Value, to_array};
use async_trait::async_trait;
use datafusion::arrow::array::RecordBatch;
use datafusion::arrow::datatypes::{Schema, SchemaRef};
use datafusion::catalog::{Session, TableProvider};
use datafusion::datasource::TableType as DfTableType;
use datafusion::error::Result as DfResult;
use datafusion::logical_expr::Expr;
use datafusion::physical_plan::ExecutionPlan;
use kalamdb_commons::KalamDataType as K;
use kalamdb_commons::{
    ColumnDefinition, NamespaceId, TableDefinition, TableId, TableName, TableType,
};
use std::sync::Arc;

/// The system tables.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SystemTable {
    /// `system.namespaces`
    Namespaces,
    /// `system.tables`
    Tables,
    /// `system.schemas`
    Schemas,
    /// `system.users`
    Users,
    /// `system.storages`
    Storages,
    /// `system.audit_log`
    AuditLog,
    /// `system.live`
    Live,
    /// `system.jobs`
    Jobs,
    /// `system.queries`
    Queries,
}

/// Every system table.
pub const SYSTEM_TABLES: &[SystemTable] = &[
    SystemTable::Namespaces,
    SystemTable::Tables,
    SystemTable::Schemas,
    SystemTable::Users,
    SystemTable::Storages,
    SystemTable::AuditLog,
    SystemTable::Live,
    SystemTable::Jobs,
    SystemTable::Queries,
];

type ColumnSpec = (&'static str, K, bool);

/// A system-table row: its key, and its cells by column id.
pub type KeyedRow = (String, Vec<(u32, Value)>);

impl SystemTable {
    /// Table name inside `system`.
    pub fn name(&self) -> &'static str {
        match self {
            Self::Namespaces => "namespaces",
            Self::Tables => "tables",
            Self::Schemas => "schemas",
            Self::Users => "users",
            Self::Storages => "storages",
            Self::AuditLog => "audit_log",
            Self::Live => "live",
            Self::Jobs => "jobs",
            Self::Queries => "queries",
        }
    }

    /// Looks a system table up by name.
    pub fn from_name(name: &str) -> Option<Self> {
        SYSTEM_TABLES
            .iter()
            .copied()
            .find(|t| t.name().eq_ignore_ascii_case(name))
    }

    fn columns(&self) -> Vec<ColumnSpec> {
        match self {
            Self::AuditLog => vec![
                ("audit_id", K::BigInt, false),
                ("timestamp", K::Timestamp, false),
                ("actor_user_id", K::Text, false),
                ("action", K::Text, false),
                ("target", K::Text, false),
                ("details", K::Text, true),
                ("subject_user_id", K::Text, true),
                ("ip_address", K::Text, true),
            ],
            Self::Namespaces => vec![
                ("namespace_id", K::Text, false),
                ("name", K::Text, false),
                ("created_at", K::Timestamp, false),
                ("options", K::Json, true),
                ("table_count", K::Int, false),
            ],
            Self::Tables => vec![
                ("namespace_id", K::Text, false),
                ("table_name", K::Text, false),
                ("table_type", K::Text, false),
                ("storage_id", K::Text, false),
                ("version", K::Int, false),
                ("access_level", K::Text, true),
                ("ttl_seconds", K::BigInt, true),
                ("flush_policy", K::Text, true),
                ("comment", K::Text, true),
                ("created_at", K::Timestamp, false),
                ("updated_at", K::Timestamp, false),
            ],
            Self::Schemas => vec![
                ("table_id", K::Text, false),
                ("namespace_id", K::Text, false),
                ("table_name", K::Text, false),
                ("table_type", K::Text, false),
                ("schema_version", K::Int, false),
                ("columns", K::Json, false),
                ("is_latest", K::Boolean, false),
                ("access_level", K::Text, true),
                ("storage_id", K::Text, false),
                ("created_at", K::Timestamp, false),
                ("updated_at", K::Timestamp, false),
            ],
            Self::Users => vec![
                ("user_id", K::Text, false),
                ("password_hash", K::Text, false),
                ("role", K::Text, false),
                ("email", K::Text, true),
                ("auth_type", K::Text, false),
                ("failed_login_attempts", K::Int, false),
                ("locked_until", K::Timestamp, true),
                ("last_login_at", K::Timestamp, true),
                ("created_at", K::Timestamp, false),
                ("updated_at", K::Timestamp, false),
                ("deleted_at", K::Timestamp, true),
            ],
            Self::Live => vec![
                ("live_id", K::Text, false),
                ("connection_id", K::Text, false),
                ("subscription_id", K::Text, false),
                ("namespace_id", K::Text, false),
                ("table_name", K::Text, false),
                ("user_id", K::Text, false),
                ("query", K::Text, false),
                ("options", K::Json, true),
                ("status", K::Text, false),
                ("created_at", K::Timestamp, false),
                ("last_update", K::Timestamp, true),
                ("changes", K::BigInt, false),
                ("node_id", K::Text, false),
            ],
            Self::Jobs => vec![
                ("job_id", K::Text, false),
                ("job_type", K::Text, false),
                ("target", K::Text, false),
                ("status", K::Text, false),
                ("trigger", K::Text, false),
                ("created_by", K::Text, false),
                ("created_at", K::Timestamp, false),
                ("started_at", K::Timestamp, true),
                ("finished_at", K::Timestamp, true),
                ("rows", K::BigInt, false),
                ("bytes", K::BigInt, false),
                ("message", K::Text, true),
                ("attempts", K::Int, false),
            ],
            Self::Queries => vec![
                ("query_id", K::BigInt, false),
                ("user_id", K::Text, false),
                ("client_ip", K::Text, true),
                ("query", K::Text, false),
                ("started_at", K::Timestamp, false),
                ("elapsed_ms", K::BigInt, false),
                ("node_id", K::Text, false),
            ],
            Self::Storages => vec![
                ("storage_id", K::Text, false),
                ("storage_name", K::Text, false),
                ("description", K::Text, true),
                ("storage_type", K::Text, false),
                ("base_directory", K::Text, false),
                ("credentials", K::Text, true),
                ("config_json", K::Text, true),
                ("shared_tables_template", K::Text, false),
                ("user_tables_template", K::Text, false),
                ("created_at", K::Timestamp, false),
                ("updated_at", K::Timestamp, false),
            ],
        }
    }

    /// The system tables a catalog write to `part` can change.
    pub fn fed_by(part: CatalogPart) -> &'static [SystemTable] {
        match part {
            CatalogPart::Namespaces => &[Self::Namespaces],
            // system.namespaces shows table counts.
            CatalogPart::Tables => &[Self::Tables, Self::Schemas, Self::Namespaces],
            CatalogPart::Users => &[Self::Users],
            CatalogPart::AuditLog => &[Self::AuditLog],
            CatalogPart::Storages => &[Self::Storages],
            CatalogPart::Jobs => &[Self::Jobs],
        }
    }

    /// Positions of the columns that identify a row.
    fn key_columns(&self) -> &'static [usize] {
        match self {
            // namespace_id, table_name
            Self::Tables => &[0, 1],
            // table_id, schema_version
            Self::Schemas => &[0, 4],
            _ => &[0],
        }
    }

    /// The table as a definition in namespace `system` (column ids from 1, in order), so live
    /// queries can compile filters and encode rows of it like any table's.
    pub fn definition(&self) -> TableDefinition {
        let key = self.key_columns();
        let columns = self
            .columns()
            .into_iter()
            .enumerate()
            .map(|(i, (name, data_type, nullable))| ColumnDefinition {
                column_id: i as u32 + 1,
                name: name.to_string(),
                ordinal: i as u32 + 1,
                data_type,
                nullable,
                primary_key: key == [i],
                default: None,
                added_at_seq: None,
                missing_value: None,
            })
            .collect();
        let id = TableId::new(NamespaceId::new("system"), TableName::new(self.name()));
        TableDefinition::new(id, TableType::Shared, columns)
    }

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

    /// The table's Arrow schema.
    pub fn schema(&self) -> SchemaRef {
        Arc::new(Schema::new(
            self.columns()
                .into_iter()
                .map(|(n, t, null)| system_field(n, t, null))
                .collect::<Vec<_>>(),
        ))
    }

    fn rows(&self, deps: &ProviderDeps) -> Result<Vec<Vec<Value>>> {
        let catalog = &deps.catalog;
        let text = |s: &str| Value::Text(s.to_string());
        let opt_text =
            |s: Option<&str>| s.map(|v| Value::Text(v.to_string())).unwrap_or(Value::Null);
        let opt_ts = |t: Option<i64>| t.map(Value::Timestamp).unwrap_or(Value::Null);
        Ok(match self {
            Self::Live => deps
                .listener
                .get()
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
            Self::AuditLog => deps.cold.system().audit_rows(catalog.audit_entries()?)?,
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
                .cold
                .system()
                .audit_batches(deps.catalog.audit_entries()?),
            _ => Ok(vec![self.rows_batch(&self.rows(deps)?)?]),
        }
    }

    /// `rows` (cells in column order) as one batch of this table's schema.
    pub fn rows_batch(&self, rows: &[Vec<Value>]) -> Result<RecordBatch> {
        rows_to_batch(
            self.schema(),
            &self.columns().iter().map(|c| c.1).collect::<Vec<_>>(),
            rows,
        )
    }
}

/// Builds a batch from row-major cells, one Kalam type per column.
pub fn rows_to_batch(schema: SchemaRef, types: &[K], rows: &[Vec<Value>]) -> Result<RecordBatch> {
    let arrays = types
        .iter()
        .enumerate()
        .map(|(i, t)| to_array(rows.iter().map(|r| &r[i]), t))
        .collect::<Result<Vec<_>>>()?;
    RecordBatch::try_new(schema, arrays).map_err(|e| KalamError::Internal(e.to_string()))
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
