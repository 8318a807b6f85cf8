//! `CREATE NAMESPACE`, `DROP NAMESPACE [CASCADE]` (which drops the namespace's views and
//! tables with it), `USE`/`SET NAMESPACE` and `SHOW NAMESPACES`.

use super::table::drop_table_by_id;
use super::{now, table_output};
use crate::access;
use crate::app_context::AppContext;
use crate::sql::session::{ExecCtx, Output};
use kalamdb_catalog::catalog::{DEFAULT_NAMESPACE, NamespaceRecord};
use kalamdb_catalog::error::{KalamError, Result};
use kalamdb_catalog::value::Value;
use kalamdb_commons::{KalamDataType as K, NamespaceId};

/// `CREATE NAMESPACE`.
pub fn create_namespace(
    app: &AppContext,
    ctx: &ExecCtx,
    name: &str,
    if_not_exists: bool,
) -> Result<Output> {
    access::check_admin(&ctx.identity, "create namespaces")?;
    let id = NamespaceId::parse(name).map_err(|e| KalamError::InvalidSql(e.to_string()))?;
    if app.catalog().namespace(&id)?.is_some() {
        return if if_not_exists {
            Ok(Output::Message(format!("Namespace '{id}' already exists")))
        } else {
            Err(KalamError::AlreadyExists {
                kind: "Namespace",
                name: id.to_string(),
            })
        };
    }
    app.catalog().put_namespace(&NamespaceRecord {
        namespace_id: id.to_string(),
        created_at: now(),
        options: None,
    })?;
    Ok(Output::Message(format!("Namespace '{id}' created")))
}

/// `DROP NAMESPACE`.
pub async fn drop_namespace(
    app: &AppContext,
    ctx: &ExecCtx,
    name: &str,
    if_exists: bool,
    cascade: bool,
) -> Result<Output> {
    access::check_admin(&ctx.identity, "drop namespaces")?;
    let id = NamespaceId::new(name);
    if name == DEFAULT_NAMESPACE || name == "system" {
        return Err(KalamError::PermissionDenied(format!(
            "Namespace '{name}' is built in and cannot be dropped"
        )));
    }
    if app.catalog().namespace(&id)?.is_none() {
        return if if_exists {
            Ok(Output::Message(format!("Namespace '{id}' does not exist")))
        } else {
            Err(KalamError::NotFound {
                kind: "Namespace",
                name: id.to_string(),
            })
        };
    }
    let tables = app.catalog().tables(Some(&id))?;
    let views = app.catalog().views(id.as_str())?;
    if (!tables.is_empty() || !views.is_empty()) && !cascade {
        return Err(KalamError::Constraint(format!(
            "Namespace '{id}' is not empty ({} table(s), {} view(s)); use DROP NAMESPACE {id} \
             CASCADE to drop it with them",
            tables.len(),
            views.len()
        )));
    }
    // Views first: none is left reading a table that is gone.
    for v in &views {
        app.catalog().delete_view(id.as_str(), &v.view_name)?;
    }
    for t in &tables {
        drop_table_by_id(app, ctx, &t.table_id()).await?;
    }
    app.catalog().delete_namespace(&id)?;
    Ok(Output::Message(format!(
        "Namespace '{id}' dropped ({} table(s), {} view(s))",
        tables.len(),
        views.len()
    )))
}

/// `USE ns`: checks the namespace exists.
pub fn use_namespace(app: &AppContext, name: &str) -> Result<Output> {
    if app.catalog().namespace(&NamespaceId::new(name))?.is_none() {
        return Err(KalamError::NotFound {
            kind: "Namespace",
            name: name.to_string(),
        });
    }
    Ok(Output::Message(format!("Using namespace '{name}'")))
}

/// `SHOW NAMESPACES`.
pub fn show_namespaces(app: &AppContext) -> Result<Output> {
    let rows = app
        .catalog()
        .namespaces_with_table_counts()?
        .into_iter()
        .map(|(n, count)| {
            vec![
                Value::Text(n.namespace_id),
                Value::I32(count as i32),
                Value::Timestamp(n.created_at),
            ]
        })
        .collect();
    table_output(
        &[
            ("namespace_id", K::Text, false),
            ("table_count", K::Int, false),
            ("created_at", K::Timestamp, false),
        ],
        rows,
    )
}
