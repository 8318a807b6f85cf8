//! The current rows of each system table, one function per table, each row's cells in the
//! order of the table's columns ([`crate::providers::system_schema`]).

use crate::providers::deps::ProviderDeps;
use kalamdb_catalog::error::Result;
use kalamdb_catalog::value::Value;
use std::collections::HashMap;

/// Rows of a system table.
pub(crate) type Rows = Vec<Vec<Value>>;

fn text(s: &str) -> Value {
    Value::Text(s.to_string())
}

fn opt_text(s: Option<&str>) -> Value {
    s.map(text).unwrap_or(Value::Null)
}

fn opt_ts(t: Option<i64>) -> Value {
    t.map(Value::Timestamp).unwrap_or(Value::Null)
}

/// `system.live`: the live queries of this node.
pub(crate) fn live_rows(deps: &ProviderDeps) -> Rows {
    deps.tables
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
        .collect()
}

/// `system.queries`: the requests running now.
pub(crate) fn queries_rows(deps: &ProviderDeps) -> Rows {
    deps.queries
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
        .collect()
}

/// `system.audit_log`: the flushed entries, then those in the catalog not flushed yet.
pub(crate) fn audit_log_rows(deps: &ProviderDeps) -> Result<Rows> {
    deps.system_cold.audit_rows(deps.catalog.audit_entries()?)
}

/// `system.namespaces`, with each namespace's table count.
pub(crate) fn namespaces_rows(deps: &ProviderDeps) -> Result<Rows> {
    Ok(deps
        .catalog
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
        .collect())
}

/// `system.tables`: the current version of every table.
pub(crate) fn tables_rows(deps: &ProviderDeps) -> Result<Rows> {
    Ok(deps
        .catalog
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
        .collect())
}

/// `system.schemas`: every version of every table, the current one marked.
pub(crate) fn schemas_rows(deps: &ProviderDeps) -> Result<Rows> {
    let catalog = &deps.catalog;
    let latest: HashMap<String, u32> = catalog
        .tables(None)?
        .into_iter()
        .map(|d| (d.table_id().to_string(), d.version))
        .collect();
    Ok(catalog
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
                Value::Text(table_options(&d)),
            ]
        })
        .collect())
}

/// A table's options as upstream's `system.schemas.options` shows them (JSON).
fn table_options(d: &kalamdb_commons::TableDefinition) -> String {
    serde_json::json!({
        "table_type": d.table_type.as_str(),
        "storage_id": d.storage_id.as_str(),
        "access_level": d.access_level.map(|a| a.as_str()),
        "ttl_seconds": d.ttl_seconds,
        "flush_policy": d.flush_policy,
        "comment": d.comment,
    })
    .to_string()
}

/// `system.users`.
pub(crate) fn users_rows(deps: &ProviderDeps) -> Result<Rows> {
    Ok(deps
        .catalog
        .users()?
        .into_iter()
        .map(|u| {
            vec![
                text(&u.user_id),
                text(&u.password_hash),
                text(u.role.as_str()),
                opt_text(u.email.as_deref()),
                text(&u.auth_type),
                match &u.oauth {
                    Some(o) => Value::Text(
                        serde_json::json!({"provider": o.provider, "subject": o.subject})
                            .to_string(),
                    ),
                    None => Value::Null,
                },
                Value::I32(u.failed_login_attempts as i32),
                opt_ts(u.locked_until),
                opt_ts(u.last_login_at),
                Value::Timestamp(u.created_at),
                Value::Timestamp(u.updated_at),
                opt_ts(u.deleted_at),
            ]
        })
        .collect())
}

/// `system.jobs`.
pub(crate) fn jobs_rows(deps: &ProviderDeps) -> Result<Rows> {
    Ok(deps
        .catalog
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
        .collect())
}

/// `system.storages`, `local` first; credentials are shown as set or not, never their value.
pub(crate) fn storages_rows(deps: &ProviderDeps) -> Result<Rows> {
    let mut storages = deps.catalog.storages()?;
    storages.sort_by_key(|s| s.storage_id != "local");
    Ok(storages
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
        .collect())
}
