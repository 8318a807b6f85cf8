//! Integer arithmetic that fails on overflow instead of wrapping: a physical optimizer rule
//! that turns on DataFusion's `fail_on_overflow` for `+`, `-` and `*` in projections and
//! filters, so `UPDATE t SET n = n + 1` on the largest BIGINT is an error, not a negative
//! number. (Constant expressions folded while planning still follow DataFusion's wrapping.)

use datafusion::common::tree_node::{Transformed, TransformedResult, TreeNode};
use datafusion::config::ConfigOptions;
use datafusion::error::Result;
use datafusion::logical_expr::Operator;
use datafusion::physical_expr::PhysicalExpr;
use datafusion::physical_expr::expressions::BinaryExpr;
use datafusion::physical_expr::projection::ProjectionExpr;
use datafusion::physical_optimizer::PhysicalOptimizerRule;
use datafusion::physical_plan::ExecutionPlan;
use datafusion::physical_plan::filter::{FilterExec, FilterExecBuilder};
use datafusion::physical_plan::projection::ProjectionExec;
use std::sync::Arc;

/// The rule; see the module doc.
#[derive(Debug, Default)]
pub struct CheckedArithmetic;

impl PhysicalOptimizerRule for CheckedArithmetic {
    fn optimize(
        &self,
        plan: Arc<dyn ExecutionPlan>,
        _config: &ConfigOptions,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        plan.transform_up(|node| {
            if let Some(p) = node.downcast_ref::<ProjectionExec>() {
                // Rebuilt only when it does arithmetic (most projections just pick columns).
                if !p.expr().iter().any(|pe| has_wrapping(&pe.expr)) {
                    return Ok(Transformed::no(node));
                }
                let exprs = p
                    .expr()
                    .iter()
                    .map(|pe| {
                        Ok(ProjectionExpr {
                            expr: checked(Arc::clone(&pe.expr))?,
                            alias: pe.alias.clone(),
                        })
                    })
                    .collect::<Result<Vec<_>>>()?;
                let exec = ProjectionExec::try_new_with_schema_metadata(
                    exprs,
                    Arc::clone(p.input()),
                    &p.schema(),
                )?;
                return Ok(Transformed::yes(Arc::new(exec) as Arc<dyn ExecutionPlan>));
            }
            if let Some(f) = node.downcast_ref::<FilterExec>()
                && has_wrapping(f.predicate())
            {
                let exec = FilterExecBuilder::from(f)
                    .with_predicate(checked(Arc::clone(f.predicate()))?)
                    .build()?;
                return Ok(Transformed::yes(Arc::new(exec) as Arc<dyn ExecutionPlan>));
            }
            Ok(Transformed::no(node))
        })
        .data()
    }

    fn name(&self) -> &str {
        "checked_arithmetic"
    }

    fn schema_check(&self) -> bool {
        true
    }
}

/// Whether `expr` holds a `+`, `-` or `*` (any of which could wrap).
fn has_wrapping(expr: &Arc<dyn PhysicalExpr>) -> bool {
    expr.exists(|e| {
        Ok(e.downcast_ref::<BinaryExpr>().is_some_and(|b| {
            matches!(
                b.op(),
                Operator::Plus | Operator::Minus | Operator::Multiply
            )
        }))
    })
    .unwrap_or(true)
}

/// `expr` with every `+`, `-` and `*` failing on overflow.
fn checked(expr: Arc<dyn PhysicalExpr>) -> Result<Arc<dyn PhysicalExpr>> {
    expr.transform_up(|e| match e.downcast_ref::<BinaryExpr>() {
        Some(b)
            if matches!(
                b.op(),
                Operator::Plus | Operator::Minus | Operator::Multiply
            ) =>
        {
            let strict = BinaryExpr::new(Arc::clone(b.left()), *b.op(), Arc::clone(b.right()))
                .with_fail_on_overflow(true);
            Ok(Transformed::yes(Arc::new(strict) as Arc<dyn PhysicalExpr>))
        }
        _ => Ok(Transformed::no(e)),
    })
    .data()
}
