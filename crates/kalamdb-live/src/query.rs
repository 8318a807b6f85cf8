//! Subscription SQL: exactly one `SELECT <cols|*> FROM <namespace>.<table> [WHERE …]`.
//! Everything else (joins, ORDER BY, LIMIT, aggregates, subqueries …) is refused with
//! `UNSUPPORTED` and a message saying what is supported.

use crate::error::LiveError;
use datafusion::sql::sqlparser::ast::{
    Expr, GroupByExpr, SelectItem, SetExpr, Statement, TableFactor,
};
use datafusion::sql::sqlparser::dialect::GenericDialect;
use datafusion::sql::sqlparser::parser::Parser;
use kalamdb_core::expr_limits::{self, ExprLimits};
use kalamdb_core::sql::parse::{fold, normalize_current_user};

const SUPPORTED: &str =
    "live queries support SELECT <columns|*> FROM <namespace>.<table> [WHERE …]";

/// A parsed subscription query.
#[derive(Debug, Clone)]
pub(crate) struct LiveQuery {
    /// Namespace, folded.
    pub(crate) namespace: String,
    /// Table, folded.
    pub(crate) table: String,
    /// Projected column names (folded); `None` for `*`.
    pub(crate) columns: Option<Vec<String>>,
    /// The WHERE clause.
    pub(crate) filter: Option<Expr>,
}

impl LiveQuery {
    /// Parses and validates `sql`, whose expressions must stay within `limits`. (Run it where
    /// a refused, deeply nested statement can be dropped safely: on the query runtime.)
    pub(crate) fn parse(sql: &str, limits: ExprLimits) -> Result<Self, LiveError> {
        let sql = normalize_current_user(sql).map_err(|e| LiveError::invalid(e.to_string()))?;
        let mut statements = Parser::parse_sql(&GenericDialect {}, &sql)
            .map_err(|e| LiveError::invalid(format!("cannot parse live query: {e}")))?;
        for statement in &statements {
            expr_limits::check(statement, limits).map_err(|e| LiveError::invalid(e.to_string()))?;
        }
        if statements.len() != 1 {
            return Err(LiveError::unsupported(format!(
                "exactly one statement expected; {SUPPORTED}"
            )));
        }
        let Statement::Query(query) = statements.remove(0) else {
            return Err(LiveError::unsupported(format!("not a SELECT; {SUPPORTED}")));
        };
        let unsupported = |what: &str| LiveError::unsupported(format!("{what}: {SUPPORTED}"));
        if query.with.is_some() {
            return Err(unsupported("WITH is not supported"));
        }
        if query.order_by.is_some() {
            return Err(unsupported("ORDER BY is not supported"));
        }
        if query.limit_clause.is_some() || query.fetch.is_some() {
            return Err(unsupported("LIMIT/OFFSET is not supported"));
        }
        let SetExpr::Select(select) = *query.body else {
            return Err(unsupported("UNION and nested queries are not supported"));
        };
        if select.distinct.is_some() {
            return Err(unsupported("DISTINCT is not supported"));
        }
        let grouped = match &select.group_by {
            GroupByExpr::All(_) => true,
            GroupByExpr::Expressions(exprs, _) => !exprs.is_empty(),
        };
        if grouped || select.having.is_some() {
            return Err(unsupported("GROUP BY/HAVING is not supported"));
        }
        let [from] = select.from.as_slice() else {
            return Err(unsupported("exactly one table is supported"));
        };
        if !from.joins.is_empty() {
            return Err(unsupported("JOIN is not supported"));
        }
        let TableFactor::Table {
            name, args: None, ..
        } = &from.relation
        else {
            return Err(unsupported("only plain tables are supported"));
        };
        let parts: Vec<String> = name
            .0
            .iter()
            .filter_map(|p| p.as_ident())
            .map(|i| fold(&i.value, i.quote_style.is_some()))
            .collect();
        let [namespace, table] = parts.as_slice() else {
            return Err(LiveError::invalid(format!(
                "the table must be namespace-qualified (namespace.table), got {name}"
            )));
        };
        let mut columns = Some(Vec::new());
        for item in &select.projection {
            match item {
                SelectItem::Wildcard(_) => columns = None,
                SelectItem::UnnamedExpr(Expr::Identifier(i)) => {
                    if let Some(c) = columns.as_mut() {
                        c.push(fold(&i.value, i.quote_style.is_some()));
                    }
                }
                SelectItem::UnnamedExpr(Expr::CompoundIdentifier(parts)) => {
                    if let (Some(c), Some(i)) = (columns.as_mut(), parts.last()) {
                        c.push(fold(&i.value, i.quote_style.is_some()));
                    }
                }
                other => {
                    return Err(unsupported(&format!(
                        "only plain column names can be selected, not {other}"
                    )));
                }
            }
        }
        if let Some(filter) = &select.selection {
            reject_subqueries(filter)?;
        }
        Ok(Self {
            namespace: namespace.clone(),
            table: table.clone(),
            columns,
            filter: select.selection.clone(),
        })
    }
}

fn reject_subqueries(e: &Expr) -> Result<(), LiveError> {
    let text = e.to_string().to_ascii_uppercase();
    if text.contains("SELECT ") {
        return Err(LiveError::unsupported(format!(
            "subqueries are not supported in live queries: {SUPPORTED}"
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn test_limits() -> ExprLimits {
        ExprLimits::of(&Default::default())
    }

    #[test]
    fn deep_filters_are_refused() {
        let deep = vec!["a = 1"; 2000].join(" OR ");
        let err = LiveQuery::parse(&format!("SELECT * FROM app.t WHERE {deep}"), test_limits())
            .unwrap_err();
        assert_eq!(err.code.as_str(), "INVALID_SQL");
    }

    #[test]
    fn accepts_the_supported_shape() {
        let q = LiveQuery::parse(
            "SELECT id, Title FROM App.Todos WHERE done = false",
            test_limits(),
        )
        .unwrap();
        assert_eq!((q.namespace.as_str(), q.table.as_str()), ("app", "todos"));
        assert_eq!(q.columns, Some(vec!["id".to_string(), "title".to_string()]));
        assert!(q.filter.is_some());
        assert!(
            LiveQuery::parse("SELECT * FROM app.t", test_limits())
                .unwrap()
                .columns
                .is_none()
        );
    }

    #[test]
    fn refuses_everything_else_with_a_code() {
        for (sql, code) in [
            ("SELECT * FROM t", "INVALID_SQL"),
            ("SELECT * FROM app.t ORDER BY id", "UNSUPPORTED"),
            ("SELECT * FROM app.t LIMIT 5", "UNSUPPORTED"),
            ("SELECT count(*) FROM app.t", "UNSUPPORTED"),
            ("SELECT a FROM app.t GROUP BY a", "UNSUPPORTED"),
            (
                "SELECT * FROM app.t JOIN app.u ON t.id = u.id",
                "UNSUPPORTED",
            ),
            (
                "SELECT * FROM app.t WHERE id IN (SELECT id FROM app.u)",
                "UNSUPPORTED",
            ),
            ("INSERT INTO app.t VALUES (1)", "UNSUPPORTED"),
            ("SELEKT", "INVALID_SQL"),
        ] {
            assert_eq!(
                LiveQuery::parse(sql, test_limits())
                    .unwrap_err()
                    .code
                    .as_str(),
                code,
                "{sql}"
            );
        }
    }
}
