//! Bounds on the size of a parsed statement: how deep its expressions nest and how many
//! expression nodes it has (`[limits] max_expression_depth` / `max_expression_nodes`).
//!
//! The parser turns a flat chain (`1+1+…+1`, `a OR b OR …`, `x UNION ALL y UNION ALL …`) into
//! a left-deep tree without recursing, but every later stage (planning, optimizer rules, our
//! rewrites, the live filter compiler, even dropping the tree) recurses over it. A statement
//! is therefore measured right after parsing and refused with `INVALID_SQL` when it is too
//! deep or too big. The walk itself stops as soon as a limit is passed, so it never recurses
//! deeper than the limit; set-operation chains are measured without recursion before the walk
//! enters them.

use crate::error::{KalamError, Result};
use datafusion::sql::sqlparser::ast::{Expr, Query, SetExpr, Visit, Visitor};
use std::ops::ControlFlow;

/// The limits a statement is checked against.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ExprLimits {
    /// Deepest nesting allowed.
    pub max_depth: usize,
    /// Most expression nodes allowed.
    pub max_nodes: usize,
}

impl ExprLimits {
    /// The limits of `[limits]`.
    pub fn of(config: &crate::config::LimitsConfig) -> Self {
        Self {
            max_depth: config.max_expression_depth,
            max_nodes: config.max_expression_nodes,
        }
    }
}

/// Which limit a statement passed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Exceeded {
    Depth,
    Nodes,
}

struct Meter {
    limits: ExprLimits,
    depth: usize,
    nodes: usize,
}

impl Meter {
    fn enter(&mut self, levels: usize, nodes: usize) -> ControlFlow<Exceeded> {
        self.depth += levels;
        self.nodes += nodes;
        if self.depth > self.limits.max_depth {
            ControlFlow::Break(Exceeded::Depth)
        } else if self.nodes > self.limits.max_nodes {
            ControlFlow::Break(Exceeded::Nodes)
        } else {
            ControlFlow::Continue(())
        }
    }
}

/// How deep the set operations of a query body nest, and how many there are (no recursion).
fn set_operations(body: &SetExpr) -> (usize, usize) {
    let (mut deepest, mut count) = (0, 0);
    let mut todo = vec![(body, 0usize)];
    while let Some((node, depth)) = todo.pop() {
        deepest = deepest.max(depth);
        if let SetExpr::SetOperation { left, right, .. } = node {
            count += 1;
            todo.push((left, depth + 1));
            todo.push((right, depth + 1));
        }
    }
    (deepest, count)
}

impl Visitor for Meter {
    type Break = Exceeded;

    fn pre_visit_query(&mut self, query: &Query) -> ControlFlow<Exceeded> {
        let (depth, count) = set_operations(&query.body);
        self.enter(depth, count)
    }

    fn post_visit_query(&mut self, query: &Query) -> ControlFlow<Exceeded> {
        self.depth -= set_operations(&query.body).0;
        ControlFlow::Continue(())
    }

    fn pre_visit_expr(&mut self, _: &Expr) -> ControlFlow<Exceeded> {
        self.enter(1, 1)
    }

    fn post_visit_expr(&mut self, _: &Expr) -> ControlFlow<Exceeded> {
        self.depth -= 1;
        ControlFlow::Continue(())
    }
}

/// Checks a parsed statement (or any part of one) against `limits`.
pub fn check<T: Visit>(node: &T, limits: ExprLimits) -> Result<()> {
    let mut meter = Meter {
        limits,
        depth: 0,
        nodes: 0,
    };
    match node.visit(&mut meter) {
        ControlFlow::Continue(()) => Ok(()),
        ControlFlow::Break(Exceeded::Depth) => Err(KalamError::InvalidSql(format!(
            "Statement nests expressions more than {} levels deep (for example a chain of \
             that many + / OR / || terms or UNION ALLs); limits.max_expression_depth",
            limits.max_depth
        ))),
        ControlFlow::Break(Exceeded::Nodes) => Err(KalamError::InvalidSql(format!(
            "Statement has more than {} expressions; limits.max_expression_nodes",
            limits.max_nodes
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::sql::sqlparser::dialect::GenericDialect;
    use datafusion::sql::sqlparser::parser::Parser;

    const LIMITS: ExprLimits = ExprLimits {
        max_depth: 100,
        max_nodes: 20_000,
    };

    fn verdict(sql: &str) -> Result<()> {
        let stmts = Parser::parse_sql(&GenericDialect {}, sql).unwrap();
        check(&stmts[0], LIMITS)
    }

    fn chain(term: &str, op: &str, n: usize) -> String {
        vec![term; n].join(op)
    }

    #[test]
    fn flat_chains_are_measured_by_their_length() {
        verdict(&format!("SELECT {}", chain("1", "+", 90))).unwrap();
        for (sql, what) in [
            (format!("SELECT {}", chain("1", "+", 200)), "levels"),
            (
                format!("SELECT 1 WHERE {}", chain("a", " OR ", 200)),
                "levels",
            ),
            (format!("SELECT {}", chain("'a'", " || ", 200)), "levels"),
            (
                format!("UPDATE t SET x = {}", chain("x", " - ", 200)),
                "levels",
            ),
            (chain("SELECT 1", " UNION ALL ", 200), "levels"),
            (
                format!("SELECT * FROM t WHERE a IN ({})", chain("1", ",", 30_000)),
                "expressions",
            ),
        ] {
            let err = verdict(&sql).unwrap_err().to_string();
            assert!(err.contains(what), "{err}");
        }
    }

    #[test]
    fn wide_but_shallow_statements_pass() {
        verdict(&format!(
            "SELECT * FROM t WHERE a IN ({})",
            chain("1", ",", 10_000)
        ))
        .unwrap();
        let branches: String = (0..1000)
            .map(|i| format!(" WHEN a = {i} THEN {i}"))
            .collect();
        verdict(&format!("SELECT CASE{branches} ELSE 0 END FROM t")).unwrap();
        verdict(&chain("SELECT 1", " UNION ALL ", 50)).unwrap();
    }

    #[test]
    fn subqueries_add_their_depth() {
        let inner = format!("SELECT {}", chain("1", "+", 60));
        // The subquery is the innermost (leftmost) term of the outer chain.
        verdict(&format!("SELECT ({inner}) + {}", chain("1", "+", 30))).unwrap();
        assert!(verdict(&format!("SELECT ({inner}) + {}", chain("1", "+", 50))).is_err());
    }
}
