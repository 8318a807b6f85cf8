//! Handlers of KalamDB's own statements, one submodule per kind of object they act on:
//!
//! - `namespace`: `CREATE|DROP NAMESPACE`, `USE`, `SHOW NAMESPACES`;
//! - `table`: `CREATE|DROP TABLE`, `DESCRIBE`, `SHOW TABLES`, column definitions and
//!   defaults (shared with `ALTER TABLE`), and the cleanup of a dropped table;
//! - `storage`: `CREATE|DROP STORAGE`, `STORAGE CHECK`, `SHOW STORAGES` and the
//!   `STORAGE FLUSH|COMPACT` jobs (also run by the background maintenance);
//! - `user`: `CREATE|ALTER|DROP USER`;
//! - `admin`: `KILL JOB`, `KILL LIVE QUERY`.
//!
//! This module keeps what they share: [`resolve`], `table_output` and the clock.

mod admin;
mod namespace;
mod storage;
mod table;
mod user;

pub use admin::{cluster, kill_job, kill_live_query};
pub use namespace::{create_namespace, drop_namespace, show_namespaces, use_namespace};
pub use storage::{STORAGE_JOB_CALL, member_storage_job};
pub(crate) use storage::{StorageJob, job_line, run_storage_job};
pub use storage::{
    backup_database, compact_all, compact_table, create_storage, drop_storage, export_user_data,
    flush_all, flush_table, show_manifest, show_storages, storage_check,
};
pub(crate) use table::{clean_dropped_table, column_definition, default_of};
pub use table::{create_table, describe, drop_table, show_tables};
pub use user::{alter_user, create_user, drop_user};

use super::parse::TableRef;
use super::session::{ExecCtx, Output};
use crate::providers::system::rows_to_batch;
use datafusion::arrow::datatypes::Schema;
use kalamdb_catalog::error::Result;
use kalamdb_catalog::types::system_field;
use kalamdb_catalog::value::Value;
use kalamdb_commons::{KalamDataType as K, NamespaceId, TableId, TableName};
use std::sync::Arc;

/// The current time in microseconds since the epoch, as catalog records keep it.
fn now() -> i64 {
    chrono::Utc::now().timestamp_micros()
}

/// Resolves a table reference against the statement's default namespace.
pub fn resolve(ctx: &ExecCtx, t: &TableRef) -> TableId {
    let ns = t.namespace.clone().unwrap_or_else(|| ctx.namespace.clone());
    TableId::new(NamespaceId::new(ns), TableName::new(t.table.clone()))
}

/// A one-batch result set of `columns` (name, type, nullable) holding `rows`.
pub(crate) fn table_output(columns: &[(&str, K, bool)], rows: Vec<Vec<Value>>) -> Result<Output> {
    let schema = Arc::new(Schema::new(
        columns
            .iter()
            .map(|(n, t, null)| system_field(n, *t, *null))
            .collect::<Vec<_>>(),
    ));
    let types: Vec<K> = columns.iter().map(|c| c.1).collect();
    let batch = rows_to_batch(Arc::clone(&schema), &types, &rows)?;
    Ok(Output::Rows {
        schema,
        batches: vec![batch],
        memory: None,
    })
}
