//! The one recogniser of the simple query shape `SELECT <columns|*> FROM <table> [WHERE …]`:
//! one plain table (no join, alias or table function), plain column names or `*`, and an
//! optional filter without subqueries; no `WITH`, `DISTINCT`, grouping, ordering, limits or
//! windows.
//!
//! Three paths accept exactly this shape and share this code so they agree: the primary-key
//! point lookup (`point_lookup.rs`, which also wants `WHERE pk = literal`), `SUBSCRIBE TO`
//! over HTTP (`subscribe.rs`) and WebSocket subscriptions (`kalamdb-live`). A refusal says
//! which part is not supported.

use super::parse::{Command, TableRef, fold, parse_statement};
use crate::expr_limits::ExprLimits;
use datafusion::sql::sqlparser::ast::{
    Expr, FunctionArguments, GroupByExpr, ObjectName, SelectItem, SetExpr, Statement, TableFactor,
    visit_expressions,
};
use kalamdb_catalog::error::{KalamError, Result};
use std::ops::ControlFlow;

/// What the shape supports, for refusals.
pub const SUPPORTED: &str = "SELECT <columns|*> FROM <namespace>.<table> [WHERE …]";

/// A statement of the simple shape, borrowed from its parsed form.
#[derive(Debug, Clone, Copy)]
pub struct TableSelect<'a> {
    /// The table as written (`t` or `ns.t`).
    pub table: &'a ObjectName,
    /// The projection: `None` for `*`, else the column names (folded) in order.
    columns: Option<&'a [SelectItem]>,
    /// The `WHERE` clause.
    pub filter: Option<&'a Expr>,
}

impl<'a> TableSelect<'a> {
    /// Recognises `stmt`; the error says what is outside the shape (`UNSUPPORTED`).
    pub fn of(stmt: &'a Statement) -> Result<Self> {
        let Statement::Query(query) = stmt else {
            return Err(unsupported("not a SELECT"));
        };
        if query.with.is_some() {
            return Err(unsupported("WITH is not supported"));
        }
        if query.order_by.is_some() {
            return Err(unsupported("ORDER BY is not supported"));
        }
        if query.limit_clause.is_some() || query.fetch.is_some() {
            return Err(unsupported("LIMIT/OFFSET is not supported"));
        }
        if !query.locks.is_empty()
            || query.for_clause.is_some()
            || query.settings.is_some()
            || query.format_clause.is_some()
            || !query.pipe_operators.is_empty()
        {
            return Err(unsupported("query clauses beyond WHERE are not supported"));
        }
        let SetExpr::Select(select) = query.body.as_ref() else {
            return Err(unsupported("UNION and nested queries are not supported"));
        };
        if select.distinct.is_some() || select.top.is_some() {
            return Err(unsupported("DISTINCT/TOP is not supported"));
        }
        let grouped = match &select.group_by {
            GroupByExpr::All(_) => true,
            GroupByExpr::Expressions(exprs, modifiers) => {
                !exprs.is_empty() || !modifiers.is_empty()
            }
        };
        if grouped || select.having.is_some() {
            return Err(unsupported("GROUP BY/HAVING is not supported"));
        }
        if !select.named_window.is_empty()
            || select.qualify.is_some()
            || select.into.is_some()
            || !select.lateral_views.is_empty()
            || select.prewhere.is_some()
            || !select.connect_by.is_empty()
            || !select.cluster_by.is_empty()
            || !select.distribute_by.is_empty()
            || !select.sort_by.is_empty()
            || select.exclude.is_some()
            || select.value_table_mode.is_some()
        {
            return Err(unsupported("select clauses beyond WHERE are not supported"));
        }
        let [from] = select.from.as_slice() else {
            return Err(unsupported("exactly one table is supported"));
        };
        if !from.joins.is_empty() {
            return Err(unsupported("JOIN is not supported"));
        }
        let TableFactor::Table {
            name,
            alias: None,
            args: None,
            with_hints,
            version: None,
            partitions,
            ..
        } = &from.relation
        else {
            return Err(unsupported(
                "only a plain table without an alias is supported",
            ));
        };
        if !with_hints.is_empty() || !partitions.is_empty() {
            return Err(unsupported(
                "only a plain table without an alias is supported",
            ));
        }
        let table_name = name.0.last().and_then(|p| p.as_ident());
        let mut wildcard = false;
        for item in &select.projection {
            match item {
                SelectItem::Wildcard(opts)
                    if opts.opt_exclude.is_none()
                        && opts.opt_except.is_none()
                        && opts.opt_rename.is_none()
                        && opts.opt_replace.is_none()
                        && opts.opt_ilike.is_none()
                        && opts.opt_alias.is_none() =>
                {
                    wildcard = true
                }
                SelectItem::UnnamedExpr(Expr::Identifier(_)) => {}
                // `t.col`, qualified by the table's own name.
                SelectItem::UnnamedExpr(Expr::CompoundIdentifier(parts))
                    if parts.len() == 2
                        && table_name.is_some_and(|t| {
                            fold(&t.value, t.quote_style.is_some())
                                == fold(&parts[0].value, parts[0].quote_style.is_some())
                        }) => {}
                other => {
                    return Err(unsupported(&format!(
                        "only plain column names or * can be selected, not {other}"
                    )));
                }
            }
        }
        if wildcard && select.projection.len() > 1 {
            return Err(unsupported("* cannot be combined with other columns"));
        }
        if let Some(filter) = &select.selection {
            reject_subqueries(filter)?;
        }
        Ok(Self {
            table: name,
            columns: (!wildcard).then_some(select.projection.as_slice()),
            filter: select.selection.as_ref(),
        })
    }

    /// The projected column names (folded) in order; `None` for `*`.
    pub fn columns(&self) -> Option<Vec<String>> {
        let items = self.columns?;
        let names = items.iter().filter_map(|item| match item {
            SelectItem::UnnamedExpr(Expr::Identifier(i)) => Some(i),
            SelectItem::UnnamedExpr(Expr::CompoundIdentifier(parts)) => parts.last(),
            _ => None,
        });
        Some(
            names
                .map(|i| fold(&i.value, i.quote_style.is_some()))
                .collect(),
        )
    }

    /// The table, which must be namespace-qualified (subscriptions have no default
    /// namespace): `INVALID_SQL` otherwise.
    pub fn qualified_table(&self) -> Result<TableRef> {
        let table = TableRef::from_object_name(self.table)?;
        if table.namespace.is_none() || self.table.0.len() != 2 {
            return Err(KalamError::InvalidSql(format!(
                "the table must be namespace-qualified (namespace.table), got {}",
                self.table
            )));
        }
        Ok(table)
    }
}

/// Parses one subscription query (`SUBSCRIBE TO` over HTTP, a WebSocket `subscribe`) within
/// `limits`, and checks it is of the shape ([`TableSelect::of`]) with a qualified table.
/// Returns the parsed statement; [`TableSelect::of`] on it cannot fail.
pub fn parse_subscription(sql: &str, limits: ExprLimits) -> Result<Statement> {
    let command = parse_statement(sql)?;
    command.check_limits(limits)?;
    let Command::Sql(stmt) = command else {
        return Err(unsupported("not a SELECT"));
    };
    TableSelect::of(&stmt)?.qualified_table()?;
    Ok(*stmt)
}

fn unsupported(what: &str) -> KalamError {
    KalamError::Unsupported(format!("{what}; supported: {SUPPORTED}"))
}

fn reject_subqueries(filter: &Expr) -> Result<()> {
    let found = visit_expressions(filter, |e| match e {
        Expr::Subquery(_) | Expr::Exists { .. } | Expr::InSubquery { .. } => ControlFlow::Break(()),
        Expr::Function(f) if matches!(f.args, FunctionArguments::Subquery(_)) => {
            ControlFlow::Break(())
        }
        _ => ControlFlow::Continue(()),
    });
    if found.is_break() {
        return Err(unsupported("subqueries are not supported"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits() -> ExprLimits {
        ExprLimits::of(&Default::default())
    }

    fn code(sql: &str) -> &'static str {
        parse_subscription(sql, limits())
            .unwrap_err()
            .code()
            .as_str()
    }

    #[test]
    fn accepts_the_shape() {
        let stmt = parse_subscription(
            "SELECT id, Todos.Title FROM App.Todos WHERE done = false",
            limits(),
        )
        .unwrap();
        let shape = TableSelect::of(&stmt).unwrap();
        let t = shape.qualified_table().unwrap();
        assert_eq!(
            (t.namespace.as_deref(), t.table.as_str()),
            (Some("app"), "todos")
        );
        assert_eq!(shape.columns(), Some(vec!["id".into(), "title".into()]));
        assert!(shape.filter.is_some());
        let stmt = parse_subscription("SELECT * FROM app.t", limits()).unwrap();
        assert!(TableSelect::of(&stmt).unwrap().columns().is_none());
    }

    #[test]
    fn refuses_everything_else_with_a_code() {
        for (sql, expected) in [
            ("SELECT * FROM t", "INVALID_SQL"),
            ("SELEKT", "INVALID_SQL"),
            ("SELECT * FROM app.t ORDER BY id", "UNSUPPORTED"),
            ("SELECT * FROM app.t LIMIT 5", "UNSUPPORTED"),
            ("SELECT count(*) FROM app.t", "UNSUPPORTED"),
            ("SELECT a FROM app.t GROUP BY a", "UNSUPPORTED"),
            ("SELECT DISTINCT a FROM app.t", "UNSUPPORTED"),
            ("SELECT * FROM app.t AS x", "UNSUPPORTED"),
            ("SELECT other.a FROM app.t", "UNSUPPORTED"),
            ("SELECT *, a FROM app.t", "UNSUPPORTED"),
            ("WITH c AS (SELECT 1) SELECT * FROM app.t", "UNSUPPORTED"),
            (
                "SELECT * FROM app.t JOIN app.u ON t.id = u.id",
                "UNSUPPORTED",
            ),
            (
                "SELECT * FROM app.t WHERE id IN (SELECT id FROM app.u)",
                "UNSUPPORTED",
            ),
            ("SELECT * FROM app.t WHERE EXISTS (SELECT 1)", "UNSUPPORTED"),
            ("SELECT * FROM app.t WHERE a = (SELECT 1)", "UNSUPPORTED"),
            ("INSERT INTO app.t VALUES (1)", "UNSUPPORTED"),
        ] {
            assert_eq!(code(sql), expected, "{sql}");
        }
    }

    #[test]
    fn deep_filters_are_refused() {
        let deep = vec!["a = 1"; 2000].join(" OR ");
        assert_eq!(
            code(&format!("SELECT * FROM app.t WHERE {deep}")),
            "INVALID_SQL"
        );
    }
}
