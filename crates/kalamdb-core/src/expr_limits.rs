//! Bounds on the size of a statement: how deep its expressions nest and how many expression
//! nodes and table references it has (`[limits] max_expression_depth` / `max_expression_nodes`
//! / `max_table_references`), checked right after parsing, and how large its logical plan is
//! once views and `WITH` queries are expanded (`max_plan_nodes`), checked before optimizing.
//!
//! The parser turns a flat chain (`1+1+…+1`, `a OR b OR …`, `x UNION ALL y UNION ALL …`) into
//! a left-deep tree without recursing, but every later stage (planning, optimizer rules, our
//! rewrites, the live filter compiler, even dropping the tree) recurses over it. A statement
//! is therefore measured right after parsing and refused with `INVALID_SQL` when it is too
//! deep or too big. The walk itself stops as soon as a limit is passed, so it never recurses
//! deeper than the limit; set-operation chains are measured without recursion before the walk
//! enters them.

use datafusion::common::tree_node::TreeNodeRecursion;
use datafusion::logical_expr::LogicalPlan;
use datafusion::sql::sqlparser::ast::{
    Expr, Query, SetExpr, TableFactor, Visit, Visitor, visit_relations,
};
use kalamdb_catalog::error::{KalamError, Result};
use std::ops::ControlFlow;

/// The limits a statement is checked against.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ExprLimits {
    /// Deepest nesting allowed.
    pub max_depth: usize,
    /// Most expression nodes allowed.
    pub max_nodes: usize,
    /// Most table references (tables, views, subqueries and functions in FROM) allowed.
    pub max_tables: usize,
    /// Most logical plan nodes allowed, views and `WITH` queries expanded at every use.
    pub max_plan_nodes: usize,
}

impl ExprLimits {
    /// The limits of `[limits]`.
    pub fn of(config: &crate::config::LimitsConfig) -> Self {
        Self {
            max_depth: config.max_expression_depth,
            max_nodes: config.max_expression_nodes,
            max_tables: config.max_table_references,
            max_plan_nodes: config.max_plan_nodes,
        }
    }
}

/// Which limit a statement passed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Exceeded {
    Depth,
    Nodes,
    Tables,
    Plan,
}

struct Meter {
    limits: ExprLimits,
    depth: usize,
    nodes: usize,
    tables: usize,
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

/// How many table references a query has once each `WITH` query is expanded at every use
/// (planning copies a `WITH` query into each place that names it, so a chain of `WITH`
/// queries that each name the previous one twice doubles at every level). Every `WITH` query
/// counts, used or not: each is planned.
fn expanded_relations(query: &Query) -> u64 {
    let Some(with) = &query.with else {
        return 0;
    };
    let names: Vec<String> = with
        .cte_tables
        .iter()
        .map(|c| c.alias.name.value.to_ascii_lowercase())
        .collect();
    // Size of a part naming `refs`, given the sizes of the WITH queries defined before it.
    let expand = |refs: Vec<String>, sizes: &[u64]| {
        refs.iter()
            .map(|name| {
                names[..sizes.len()]
                    .iter()
                    .position(|c| c == name)
                    .map_or(1, |j| sizes[j])
            })
            .fold(0u64, u64::saturating_add)
            .max(1)
    };
    let mut sizes: Vec<u64> = Vec::with_capacity(names.len());
    for cte in &with.cte_tables {
        let size = expand(relations(&*cte.query), &sizes);
        sizes.push(size);
    }
    let body = expand(relations(&*query.body), &sizes);
    sizes.iter().fold(body, |total, s| total.saturating_add(*s))
}

/// The (lower-cased) table names `node` references, one per reference.
fn relations<T: Visit>(node: &T) -> Vec<String> {
    let mut out = Vec::new();
    let _ = visit_relations(node, |name| {
        out.push(name.to_string().to_ascii_lowercase());
        ControlFlow::<()>::Continue(())
    });
    out
}

impl Visitor for Meter {
    type Break = Exceeded;

    fn pre_visit_query(&mut self, query: &Query) -> ControlFlow<Exceeded> {
        if expanded_relations(query) > self.limits.max_plan_nodes as u64 {
            return ControlFlow::Break(Exceeded::Plan);
        }
        let (depth, count) = set_operations(&query.body);
        self.enter(depth, count)
    }

    fn post_visit_query(&mut self, query: &Query) -> ControlFlow<Exceeded> {
        self.depth -= set_operations(&query.body).0;
        ControlFlow::Continue(())
    }

    fn pre_visit_table_factor(&mut self, _: &TableFactor) -> ControlFlow<Exceeded> {
        self.tables += 1;
        if self.tables > self.limits.max_tables {
            return ControlFlow::Break(Exceeded::Tables);
        }
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
        tables: 0,
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
        ControlFlow::Break(Exceeded::Tables) => Err(KalamError::InvalidSql(format!(
            "Statement references more than {} tables; limits.max_table_references",
            limits.max_tables
        ))),
        ControlFlow::Break(Exceeded::Plan) => Err(plan_too_large(limits)),
    }
}

/// Checks the size of a logical plan, counting a shared subplan (a view or `WITH` query used
/// several times) once per use: `WITH a1 AS (… a0 UNION ALL … a0), a2 AS (… a1 … a1) …` is
/// short text but doubles with every level. Stops counting at the limit.
pub fn check_plan(plan: &LogicalPlan, limits: ExprLimits) -> Result<()> {
    if plan_nodes(plan, limits.max_plan_nodes)? > limits.max_plan_nodes {
        return Err(plan_too_large(limits));
    }
    Ok(())
}

/// The nodes of `plan` (subqueries included), counted up to `stop_after` + 1.
fn plan_nodes(plan: &LogicalPlan, stop_after: usize) -> Result<usize> {
    let mut nodes = 0usize;
    plan.apply_with_subqueries(|_| {
        nodes += 1;
        Ok(if nodes > stop_after {
            TreeNodeRecursion::Stop
        } else {
            TreeNodeRecursion::Continue
        })
    })
    .map_err(KalamError::from_datafusion)?;
    Ok(nodes)
}

/// What one statement may still spend on planning views, in plan nodes: views are planned
/// when the plan that names them is turned into an execution plan, so the statement's own
/// plan does not show them; each view's plan is charged here as it is made (a view naming
/// another twice, which names another twice … would otherwise double at every level).
/// Travels in the statement's session config.
#[derive(Debug)]
pub struct ViewBudget {
    limits: ExprLimits,
    left: std::sync::atomic::AtomicUsize,
}

impl ViewBudget {
    /// A budget of `limits.max_plan_nodes`.
    pub fn new(limits: ExprLimits) -> Self {
        Self {
            limits,
            left: std::sync::atomic::AtomicUsize::new(limits.max_plan_nodes),
        }
    }

    /// Charges a view's plan; an error once the statement's views passed the limit.
    pub fn spend(&self, plan: &LogicalPlan) -> Result<()> {
        use std::sync::atomic::Ordering;
        let nodes = plan_nodes(plan, self.limits.max_plan_nodes)?;
        let charged = self
            .left
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |left| {
                left.checked_sub(nodes)
            });
        charged.map(|_| ()).map_err(|_| plan_too_large(self.limits))
    }
}

fn plan_too_large(limits: ExprLimits) -> KalamError {
    KalamError::InvalidSql(format!(
        "The query's plan has more than {} nodes with its views and WITH queries expanded; \
         limits.max_plan_nodes",
        limits.max_plan_nodes
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::sql::sqlparser::dialect::GenericDialect;
    use datafusion::sql::sqlparser::parser::Parser;

    const LIMITS: ExprLimits = ExprLimits {
        max_depth: 100,
        max_nodes: 20_000,
        max_tables: 50,
        max_plan_nodes: 1000,
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
            (format!("SELECT 1 FROM {}", chain("t", ", ", 60)), "tables"),
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

    #[tokio::test]
    async fn plans_are_measured_with_shared_parts_expanded() {
        let ctx = datafusion::prelude::SessionContext::new();
        let with = |levels: usize| {
            let mut sql = String::from("WITH a0 AS (SELECT 1 AS x)");
            for i in 1..=levels {
                sql.push_str(&format!(
                    ", a{i} AS (SELECT x FROM a{p} UNION ALL SELECT x FROM a{p})",
                    p = i - 1
                ));
            }
            format!("{sql} SELECT count(*) FROM a{levels}")
        };
        // Refused from the text, before planning could start doubling.
        let err = verdict(&with(40)).unwrap_err();
        assert!(err.to_string().contains("max_plan_nodes"), "{err}");
        verdict(&with(5)).unwrap();
        // And the plan itself is measured (as for views, which the text does not show).
        let unlimited = ExprLimits {
            max_plan_nodes: usize::MAX,
            ..LIMITS
        };
        let plan = |q: String| {
            let ctx = ctx.clone();
            async move { ctx.state().create_logical_plan(&q).await.unwrap() }
        };
        let small = plan(with(3)).await;
        let big = plan(with(9)).await;
        check_plan(&small, LIMITS).unwrap();
        check_plan(&big, unlimited).unwrap();
        let err = check_plan(&big, LIMITS).unwrap_err();
        assert!(err.to_string().contains("max_plan_nodes"), "{err}");
    }
}
