//! What `GET /v1/api/schema` answers (`docs/protocol.md` §7.2): in one call, the namespaces,
//! tables and views a caller may query, with each table's kind, access level, columns (type,
//! nullability, primary key, DEFAULT) and primary key, so an agent can be handed one SQL tool
//! and the current schema. SHARED tables the caller's role may not read are left out; USER and
//! STREAM tables are listed for everyone (each caller sees their own rows in them).

use crate::access;
use crate::app_context::AppContext;
use crate::auth::Identity;
use kalamdb_catalog::error::Result;
use kalamdb_commons::TableType;
use serde_json::{Value, json};
use std::collections::BTreeMap;

/// The schema `identity` may query, as JSON:
/// `{"namespaces": [{"name", "tables": [{"name", "kind", "access_level"?, "columns": [{"name",
/// "type", "nullable", "primary_key", "default"?}], "primary_key": [...]}], "views": [{"name",
/// "columns": [{"name", "type", "nullable"}]}]}]}`, sorted by name.
pub fn describe(app: &AppContext, identity: &Identity) -> Result<Value> {
    let mut namespaces: BTreeMap<String, (Vec<Value>, Vec<Value>)> = app
        .catalog()
        .namespaces()?
        .into_iter()
        .map(|n| (n.namespace_id.to_string(), (Vec::new(), Vec::new())))
        .collect();
    let mut tables = app.catalog().tables(None)?;
    tables.sort_by(|a, b| a.name.as_str().cmp(b.name.as_str()));
    for def in tables {
        if def.table_type == TableType::Shared && access::check_shared_read(identity, &def).is_err()
        {
            continue;
        }
        let kind = match def.table_type {
            TableType::User => "user",
            TableType::Shared => "shared",
            TableType::Stream => "stream",
            _ => "system",
        };
        let columns: Vec<Value> = def
            .columns
            .iter()
            .map(|c| {
                let mut col = json!({
                    "name": c.name,
                    "type": c.data_type.sql_name(),
                    "nullable": c.nullable,
                    "primary_key": c.primary_key,
                });
                if let Some(d) = &c.default {
                    col["default"] = json!(d.sql());
                }
                col
            })
            .collect();
        let pk: Vec<&str> = def
            .columns
            .iter()
            .filter(|c| c.primary_key)
            .map(|c| c.name.as_str())
            .collect();
        let mut table =
            json!({"name": def.name.as_str(), "kind": kind, "columns": columns, "primary_key": pk});
        if let Some(level) = def
            .access_level
            .filter(|_| def.table_type == TableType::Shared)
        {
            table["access_level"] = json!(level.as_str());
        }
        if let Some(ttl) = def.ttl_seconds {
            table["ttl_seconds"] = json!(ttl);
        }
        namespaces
            .entry(def.namespace.to_string())
            .or_default()
            .0
            .push(table);
    }
    let names: Vec<String> = namespaces.keys().cloned().collect();
    for ns in names {
        let mut views = app.catalog().views(&ns)?;
        views.sort_by(|a, b| a.view_name.cmp(&b.view_name));
        let entry = namespaces.entry(ns).or_default();
        for v in views {
            let columns: Vec<Value> = v
                .columns
                .iter()
                .map(|(name, ty, nullable)| json!({"name": name, "type": ty, "nullable": nullable}))
                .collect();
            entry
                .1
                .push(json!({"name": v.view_name, "columns": columns}));
        }
    }
    let namespaces: Vec<Value> = namespaces
        .into_iter()
        .map(|(name, (tables, views))| json!({"name": name, "tables": tables, "views": views}))
        .collect();
    Ok(json!({"namespaces": namespaces}))
}
