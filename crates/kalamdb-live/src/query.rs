//! Subscription SQL: exactly one `SELECT <cols|*> FROM <namespace>.<table> [WHERE …]`, as
//! recognised by `kalamdb_core::sql::table_select` (shared with `SUBSCRIBE TO` over HTTP and
//! the point-lookup path). Everything else (joins, ORDER BY, LIMIT, aggregates, subqueries …)
//! is refused with `UNSUPPORTED` and a message saying what is supported.

use crate::error::LiveError;
use datafusion::sql::sqlparser::ast::Expr;
use kalamdb_catalog::KalamError;
use kalamdb_core::expr_limits::ExprLimits;
use kalamdb_core::sql::table_select::{TableSelect, parse_subscription};

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
    /// Parses and validates `sql`, whose expressions must stay within `limits`: the shape
    /// every subscription path accepts ([`TableSelect`]). (Run it where a refused, deeply
    /// nested statement can be dropped safely: on the query runtime.)
    pub(crate) fn parse(sql: &str, limits: ExprLimits) -> Result<Self, LiveError> {
        let refused = |e: KalamError| LiveError::new(e.code(), e.to_string());
        let stmt = parse_subscription(sql, limits).map_err(refused)?;
        let shape = TableSelect::of(&stmt).map_err(refused)?;
        let table = shape.qualified_table().map_err(refused)?;
        Ok(Self {
            namespace: table.namespace.unwrap_or_default(),
            table: table.table,
            columns: shape.columns(),
            filter: shape.filter.cloned(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn test_limits() -> ExprLimits {
        ExprLimits::of(&Default::default())
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
    }

    /// The shape's own cases are tested with `table_select`; here only that its codes reach
    /// the live error.
    #[test]
    fn refusals_keep_their_code() {
        for (sql, code) in [
            ("SELECT * FROM t", "INVALID_SQL"),
            ("SELECT * FROM app.t ORDER BY id", "UNSUPPORTED"),
            ("SELEKT", "INVALID_SQL"),
        ] {
            let err = LiveQuery::parse(sql, test_limits()).unwrap_err();
            assert_eq!(err.code.as_str(), code, "{sql}");
        }
    }
}
