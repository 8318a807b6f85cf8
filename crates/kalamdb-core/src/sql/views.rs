//! `CREATE [OR REPLACE] VIEW ns.v AS SELECT …` and `DROP VIEW [IF EXISTS] ns.v` (dba/system).
//!
//! A view is stored as its SQL text with the columns and the tables it read when it was
//! created ([`kalamdb_catalog::catalog::ViewRecord`]); each query plans it again under the caller's
//! identity ([`crate::providers::view`]). Creation plans the query once to check it, refuses
//! a view that would read itself (directly or through other views), and refuses a name a
//! table already has.

use super::ddl::resolve;
use super::parse::TableRef;
use super::session::{ExecCtx, Output};
use crate::access;
use crate::app_context::AppContext;
use datafusion::common::tree_node::TreeNodeRecursion;
use datafusion::logical_expr::LogicalPlan;
use datafusion::sql::sqlparser::ast::{CreateView, ObjectName};
use kalamdb_catalog::catalog::ViewRecord;
use kalamdb_catalog::error::{KalamError, Result};
use kalamdb_commons::ids::validate_identifier;
use kalamdb_commons::{NamespaceId, TableId, TableName};

/// `(namespace, name)` of a view name, unqualified names in the session's namespace (the
/// same resolution as table names).
fn view_name(ctx: &ExecCtx, name: &ObjectName) -> Result<(String, String)> {
    let id = resolve(ctx, &TableRef::from_object_name(name)?);
    Ok((
        id.namespace.as_str().to_string(),
        id.table.as_str().to_string(),
    ))
}

/// `CREATE [OR REPLACE] VIEW [IF NOT EXISTS]`.
pub async fn create_view(app: &AppContext, ctx: &ExecCtx, v: CreateView) -> Result<Output> {
    access::check_admin(&ctx.identity, "create views")?;
    if v.materialized || !v.columns.is_empty() {
        return Err(KalamError::InvalidSql(
            "Materialized views and view column lists are not supported; alias the columns \
             in the SELECT instead"
                .into(),
        ));
    }
    let (ns, name) = view_name(ctx, &v.name)?;
    validate_identifier("view", &name).map_err(|e| KalamError::InvalidSql(e.to_string()))?;
    if app.catalog().namespace(&NamespaceId::new(&ns))?.is_none() {
        return Err(KalamError::NotFound {
            kind: "Namespace",
            name: ns,
        });
    }
    let id = TableId::new(NamespaceId::new(&ns), TableName::new(&name));
    if app.catalog().table(&id)?.is_some() {
        return Err(KalamError::AlreadyExists {
            kind: "Table",
            name: id.to_string(),
        });
    }
    let existing = app.catalog().view(&ns, &name)?;
    if existing.is_some() && !v.or_replace {
        if v.if_not_exists {
            return Ok(Output::Message(format!("View '{id}' already exists")));
        }
        return Err(KalamError::AlreadyExists {
            kind: "View",
            name: id.to_string(),
        });
    }
    // Plan it as its creator, in its namespace: checks it, and gives its columns and inputs.
    let sql = v.query.to_string();
    let state = app.query_state(&ctx.identity, &ns);
    let plan = state
        .create_logical_plan(&sql)
        .await
        .map_err(KalamError::from_datafusion)?;
    let mut columns = Vec::new();
    for f in plan.schema().fields() {
        if columns
            .iter()
            .any(|(n, _, _): &(String, String, bool)| n == f.name())
        {
            return Err(KalamError::InvalidSql(format!(
                "View column '{}' appears twice; give the columns distinct aliases",
                f.name()
            )));
        }
        columns.push((f.name().clone(), f.data_type().to_string(), f.is_nullable()));
    }
    let depends_on = inputs(&plan, &ns);
    if reads_itself(app, &format!("{ns}.{name}"), &depends_on)? {
        return Err(KalamError::InvalidSql(format!(
            "View '{id}' would read itself (directly or through other views)"
        )));
    }
    let now = chrono::Utc::now().timestamp_micros();
    app.catalog().put_view(&ViewRecord {
        namespace_id: ns,
        view_name: name,
        sql,
        columns,
        depends_on,
        created_by: ctx.identity.user_id.as_str().to_string(),
        created_at: existing.as_ref().map_or(now, |e| e.created_at),
        updated_at: now,
    })?;
    Ok(Output::Message(format!(
        "View '{id}' {}",
        if existing.is_some() {
            "replaced"
        } else {
            "created"
        }
    )))
}

/// The tables and views `plan` scans, as `ns.name`.
fn inputs(plan: &LogicalPlan, ns: &str) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    let _ = plan.apply_with_subqueries(|node| {
        if let LogicalPlan::TableScan(scan) = node {
            let r = scan.table_name.clone().resolve("kalam", ns);
            let name = format!("{}.{}", r.schema, r.table);
            if !out.contains(&name) {
                out.push(name);
            }
        }
        Ok(TreeNodeRecursion::Continue)
    });
    out
}

/// Whether following `deps` through stored views reaches `me`.
fn reads_itself(app: &AppContext, me: &str, deps: &[String]) -> Result<bool> {
    let mut todo: Vec<String> = deps.to_vec();
    let mut seen: Vec<String> = Vec::new();
    while let Some(d) = todo.pop() {
        if d == me {
            return Ok(true);
        }
        if seen.contains(&d) {
            continue;
        }
        seen.push(d.clone());
        if let Some((ns, name)) = d.split_once('.')
            && let Some(v) = app.catalog().view(ns, name)?
        {
            todo.extend(v.depends_on);
        }
    }
    Ok(false)
}

/// `DROP VIEW [IF EXISTS] v, …`.
pub fn drop_view(
    app: &AppContext,
    ctx: &ExecCtx,
    names: &[ObjectName],
    if_exists: bool,
) -> Result<Output> {
    access::check_admin(&ctx.identity, "drop views")?;
    let mut lines = Vec::new();
    for n in names {
        let (ns, name) = view_name(ctx, n)?;
        if app.catalog().view(&ns, &name)?.is_none() {
            if if_exists {
                lines.push(format!("View '{ns}.{name}' does not exist"));
                continue;
            }
            return Err(KalamError::NotFound {
                kind: "View",
                name: format!("{ns}.{name}"),
            });
        }
        app.catalog().delete_view(&ns, &name)?;
        lines.push(format!("View '{ns}.{name}' dropped"));
    }
    Ok(Output::Message(lines.join("\n")))
}
