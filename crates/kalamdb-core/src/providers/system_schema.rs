//! The system tables' shapes: names, columns, Arrow schemas and definitions, and turning
//! rows of cells into batches of them. What their rows are is read in `system.rs`.

use datafusion::arrow::array::RecordBatch;
use datafusion::arrow::datatypes::{Schema, SchemaRef};
use kalamdb_catalog::catalog::CatalogPart;
use kalamdb_catalog::error::{KalamError, Result};
use kalamdb_catalog::types::system_field;
use kalamdb_catalog::value::{Value, to_array};
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
    /// `system.stats`
    Stats,
    /// `system.settings`
    Settings,
    /// `system.server_logs`
    ServerLogs,
    /// `system.columns`
    Columns,
    /// `system.datatypes`
    Datatypes,
    /// `system.manifest`
    Manifest,
    /// `system.job_nodes`
    JobNodes,
    /// `system.cluster`
    Cluster,
    /// `system.cluster_groups`
    ClusterGroups,
    /// `system.transactions`
    Transactions,
    /// `system.topics`
    Topics,
    /// `system.topic_offsets`
    TopicOffsets,
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
    SystemTable::Stats,
    SystemTable::Settings,
    SystemTable::ServerLogs,
    SystemTable::Columns,
    SystemTable::Datatypes,
    SystemTable::Manifest,
    SystemTable::JobNodes,
    SystemTable::Cluster,
    SystemTable::ClusterGroups,
    SystemTable::Transactions,
    SystemTable::Topics,
    SystemTable::TopicOffsets,
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
            Self::Stats => "stats",
            Self::Settings => "settings",
            Self::ServerLogs => "server_logs",
            Self::Columns => "columns",
            Self::Datatypes => "datatypes",
            Self::Manifest => "manifest",
            Self::JobNodes => "job_nodes",
            Self::Cluster => "cluster",
            Self::ClusterGroups => "cluster_groups",
            Self::Transactions => "transactions",
            Self::Topics => "topics",
            Self::TopicOffsets => "topic_offsets",
        }
    }

    /// Looks a system table up by name.
    pub fn from_name(name: &str) -> Option<Self> {
        SYSTEM_TABLES
            .iter()
            .copied()
            .find(|t| t.name().eq_ignore_ascii_case(name))
    }

    pub(crate) fn columns(&self) -> Vec<ColumnSpec> {
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
                ("options", K::Json, false),
            ],
            Self::Users => vec![
                ("user_id", K::Text, false),
                ("password_hash", K::Text, false),
                ("role", K::Text, false),
                ("email", K::Text, true),
                ("auth_type", K::Text, false),
                ("auth_data", K::Json, true),
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
            Self::Stats => vec![
                ("metric_name", K::Text, false),
                ("metric_value", K::Text, false),
            ],
            Self::Settings => vec![
                ("name", K::Text, false),
                ("value", K::Text, false),
                ("description", K::Text, true),
                ("category", K::Text, false),
            ],
            Self::ServerLogs => vec![
                ("timestamp", K::Timestamp, false),
                ("level", K::Text, false),
                ("thread", K::Text, false),
                ("target", K::Text, false),
                ("line", K::Int, true),
                ("message", K::Text, false),
                ("request_id", K::Text, true),
            ],
            Self::Columns => vec![
                ("namespace_id", K::Text, false),
                ("table_name", K::Text, false),
                ("version", K::Int, false),
                ("column_id", K::Int, false),
                ("column_name", K::Text, false),
                ("comment", K::Text, true),
                ("data_type", K::Text, false),
                ("default_value", K::Text, true),
                ("ordinal", K::Int, false),
                ("nullable", K::Boolean, false),
                ("primary_key", K::Boolean, false),
                ("primary_key_pos", K::Int, true),
            ],
            Self::Datatypes => vec![
                ("arrow_type", K::Text, false),
                ("kalam_type", K::Text, false),
                ("sql_name", K::Text, false),
                ("description", K::Text, false),
            ],
            Self::Manifest => vec![
                ("cache_key", K::Text, false),
                ("namespace_id", K::Text, false),
                ("table_name", K::Text, false),
                ("scope", K::Text, false),
                ("etag", K::Text, true),
                ("last_refreshed", K::Timestamp, true),
                ("last_accessed", K::Timestamp, true),
                ("in_memory", K::Boolean, false),
                ("sync_state", K::Text, false),
                ("manifest_json", K::Json, false),
            ],
            Self::Topics => vec![
                ("topic_id", K::Text, false),
                ("namespace_id", K::Text, false),
                ("name", K::Text, false),
                ("alias", K::Text, true),
                ("partitions", K::Int, false),
                ("retention_seconds", K::BigInt, true),
                ("retention_max_bytes", K::BigInt, true),
                ("routes", K::Json, false),
                ("created_at", K::Timestamp, false),
                ("updated_at", K::Timestamp, false),
                ("storage_id", K::Text, false),
            ],
            Self::TopicOffsets => vec![
                ("topic_id", K::Text, false),
                ("group_id", K::Text, false),
                ("partition_id", K::Int, false),
                ("last_acked_offset", K::BigInt, false),
                ("updated_at", K::Timestamp, false),
            ],
            Self::Transactions => vec![
                ("transaction_id", K::Text, false),
                ("owner_id", K::Text, false),
                ("origin", K::Text, false),
                ("state", K::Text, false),
                ("started_at", K::Timestamp, false),
                ("age_ms", K::BigInt, false),
                ("idle_ms", K::BigInt, false),
                ("statement_count", K::BigInt, false),
                ("write_count", K::BigInt, false),
                ("write_bytes", K::BigInt, false),
                ("touched_tables_count", K::Int, false),
                ("touched_tables", K::Text, false),
                ("snapshot_commit_seq", K::BigInt, false),
            ],
            Self::JobNodes => vec![
                ("job_id", K::Text, false),
                ("node_id", K::Text, false),
                ("status", K::Text, false),
                ("error_message", K::Text, true),
                ("created_at", K::Timestamp, false),
                ("started_at", K::Timestamp, true),
                ("finished_at", K::Timestamp, true),
                ("updated_at", K::Timestamp, false),
            ],
            Self::Cluster => vec![
                ("cluster_id", K::Text, false),
                ("node_id", K::Text, false),
                ("role", K::Text, false),
                ("status", K::Text, false),
                ("rpc_addr", K::Text, true),
                ("api_addr", K::Text, true),
                ("is_self", K::Boolean, false),
                ("is_leader", K::Boolean, false),
                ("groups_leading", K::Int, false),
                ("total_groups", K::Int, false),
                ("current_term", K::BigInt, true),
                ("last_applied_log", K::BigInt, true),
                ("leader_last_log_index", K::BigInt, true),
                ("snapshot_index", K::BigInt, true),
                ("catchup_progress_pct", K::Int, true),
                ("replication_lag", K::BigInt, true),
                ("hostname", K::Text, true),
                ("version", K::Text, true),
                ("memory_mb", K::BigInt, true),
                ("os", K::Text, true),
                ("arch", K::Text, true),
                ("uptime_seconds", K::BigInt, true),
            ],
            Self::ClusterGroups => vec![
                ("group_id", K::Text, false),
                ("cluster_id", K::Text, false),
                ("node_id", K::Text, false),
                ("group_type", K::Text, false),
                ("current_term", K::BigInt, true),
                ("vote", K::Text, true),
                ("last_log_index", K::BigInt, true),
                ("last_applied", K::BigInt, true),
                ("snapshot", K::BigInt, true),
                ("purged", K::BigInt, true),
                ("committed", K::BigInt, true),
                ("state", K::Text, false),
                ("current_leader", K::Text, true),
                ("millis_since_quorum_ack", K::BigInt, true),
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
            CatalogPart::Tables => &[Self::Tables, Self::Schemas, Self::Namespaces, Self::Columns],
            CatalogPart::Users => &[Self::Users],
            CatalogPart::AuditLog => &[Self::AuditLog],
            CatalogPart::Storages => &[Self::Storages],
            CatalogPart::Jobs => &[Self::Jobs, Self::JobNodes],
            CatalogPart::Topics => &[Self::Topics, Self::TopicOffsets],
        }
    }

    /// Positions of the columns that identify a row.
    pub(crate) fn key_columns(&self) -> &'static [usize] {
        match self {
            // namespace_id, table_name
            Self::Tables => &[0, 1],
            // table_id, schema_version
            Self::Schemas => &[0, 4],
            // namespace_id, table_name, column_name
            Self::Columns => &[0, 1, 4],
            // job_id, node_id
            Self::JobNodes => &[0, 1],
            // group_id, node_id
            Self::ClusterGroups => &[0, 2],
            // topic_id, group_id, partition_id
            Self::TopicOffsets => &[0, 1, 2],
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

    /// The table's Arrow schema.
    pub fn schema(&self) -> SchemaRef {
        Arc::new(Schema::new(
            self.columns()
                .into_iter()
                .map(|(n, t, null)| system_field(n, t, null))
                .collect::<Vec<_>>(),
        ))
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
