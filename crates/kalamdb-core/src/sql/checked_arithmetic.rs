//! Operators that fail instead of misbehaving, set up by one physical optimizer rule over the
//! expressions of projections and filters:
//! - integer `+`, `-` and `*` fail on overflow instead of wrapping (DataFusion's
//!   `fail_on_overflow`), so `UPDATE t SET n = n + 1` on the largest BIGINT is an error, not a
//!   negative number (constant expressions folded while planning still wrap);
//! - text concatenation `a || b` fails with `RESOURCE_EXHAUSTED` when its operands together pass
//!   the per-call budget of [`super::value_caps::call_budget`]: a chain of `||` over capped
//!   values cannot grow without bound;
//! - a large literal selected from a table (`SELECT '<1 MB>' FROM t`) fails the same way when
//!   copying it into every row of a batch would pass that bound.

use datafusion::arrow::array::RecordBatch;
use datafusion::arrow::datatypes::{Field, FieldRef, Schema};
use datafusion::common::tree_node::{Transformed, TransformedResult, TreeNode};
use datafusion::config::ConfigOptions;
use datafusion::error::Result;
use datafusion::logical_expr::ColumnarValue;
use datafusion::logical_expr::Operator;
use datafusion::physical_expr::PhysicalExpr;
use datafusion::physical_expr::expressions::{BinaryExpr, Column, Literal};
use datafusion::physical_expr::projection::ProjectionExpr;
use datafusion::physical_optimizer::PhysicalOptimizerRule;
use datafusion::physical_plan::ExecutionPlan;
use datafusion::physical_plan::filter::{FilterExec, FilterExecBuilder};
use datafusion::physical_plan::projection::ProjectionExec;
use std::sync::Arc;

/// The rule; see the module doc.
#[derive(Debug, Default)]
pub struct CheckedArithmetic {
    /// `limits.max_value_bytes`.
    pub max_value_bytes: usize,
}

impl PhysicalOptimizerRule for CheckedArithmetic {
    fn optimize(
        &self,
        plan: Arc<dyn ExecutionPlan>,
        _config: &ConfigOptions,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        plan.transform_up(|node| {
            if let Some(p) = node.downcast_ref::<ProjectionExec>() {
                // Rebuilt only when it does arithmetic (most projections just pick columns).
                if !p
                    .expr()
                    .iter()
                    .any(|pe| has_wrapping(&pe.expr) || large_literal(&pe.expr))
                {
                    return Ok(Transformed::no(node));
                }
                let exprs = p
                    .expr()
                    .iter()
                    .map(|pe| {
                        Ok(ProjectionExpr {
                            expr: if large_literal(&pe.expr) {
                                Arc::new(SizeChecked {
                                    inner: Arc::clone(&pe.expr),
                                    check: SizeCheck::Broadcast,
                                    max_bytes: self.max_value_bytes,
                                })
                            } else {
                                checked(Arc::clone(&pe.expr), self.max_value_bytes)?
                            },
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
                    .with_predicate(checked(Arc::clone(f.predicate()), self.max_value_bytes)?)
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

/// What a [`SizeChecked`] expression checks before it builds its value.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum SizeCheck {
    /// `a || b` (the wrapped [`BinaryExpr`]): its operands together.
    Concat,
    /// A projected literal: copied into every row of the batch.
    Broadcast,
}

/// An expression refused when the value it builds for a batch would pass the call budget of
/// `max_bytes` ([`super::value_caps::call_budget`]).
#[derive(Debug)]
struct SizeChecked {
    inner: Arc<dyn PhysicalExpr>,
    check: SizeCheck,
    max_bytes: usize,
}

impl PartialEq for SizeChecked {
    fn eq(&self, other: &Self) -> bool {
        (self.check, self.max_bytes) == (other.check, other.max_bytes)
            && self.inner.as_ref() == other.inner.as_ref()
    }
}

impl Eq for SizeChecked {}

impl std::hash::Hash for SizeChecked {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.inner.as_ref().hash(state);
        self.check.hash(state);
        self.max_bytes.hash(state);
    }
}

impl std::fmt::Display for SizeChecked {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.inner.fmt(f)
    }
}

/// Bytes a value takes once it is an array of `rows` rows.
fn built_size(v: &ColumnarValue, rows: usize) -> usize {
    match v {
        ColumnarValue::Array(a) => a.to_data().get_slice_memory_size().unwrap_or(0),
        ColumnarValue::Scalar(s) => s.size().saturating_mul(rows),
    }
}

impl SizeChecked {
    fn refuse(&self, what: String) -> Result<()> {
        Err(datafusion::error::DataFusionError::ResourcesExhausted(
            format!(
                "{what}; the limit is {} bytes per value (limits.max_value_bytes)",
                self.max_bytes
            ),
        ))
    }

    fn concat(&self, batch: &RecordBatch) -> Result<ColumnarValue> {
        let b = self.inner.downcast_ref::<BinaryExpr>().ok_or_else(|| {
            datafusion::error::DataFusionError::Internal("checked || wraps a BinaryExpr".into())
        })?;
        let rows = batch.num_rows();
        let (left, right) = (b.left().evaluate(batch)?, b.right().evaluate(batch)?);
        let total = built_size(&left, rows).saturating_add(built_size(&right, rows));
        if total > super::value_caps::call_budget(self.max_bytes) {
            self.refuse(format!("|| would build {total} bytes of text"))?;
        }
        // The operator itself, over the operands already computed.
        let (l, r) = (left.into_array(rows)?, right.into_array(rows)?);
        let schema = Arc::new(Schema::new(vec![
            Field::new("l", l.data_type().clone(), true),
            Field::new("r", r.data_type().clone(), true),
        ]));
        let operands = RecordBatch::try_new(schema, vec![l, r])?;
        let concat = BinaryExpr::new(
            Arc::new(Column::new("l", 0)),
            Operator::StringConcat,
            Arc::new(Column::new("r", 1)),
        );
        concat.evaluate(&operands)
    }

    fn broadcast(&self, batch: &RecordBatch) -> Result<ColumnarValue> {
        let value = self.inner.evaluate(batch)?;
        let total = built_size(&value, batch.num_rows());
        if matches!(value, ColumnarValue::Scalar(_))
            && total > super::value_caps::call_budget(self.max_bytes)
        {
            self.refuse(format!(
                "a literal copied into {} rows would build {total} bytes",
                batch.num_rows()
            ))?;
        }
        Ok(value)
    }
}

impl PhysicalExpr for SizeChecked {
    fn return_field(&self, input_schema: &Schema) -> Result<FieldRef> {
        self.inner.return_field(input_schema)
    }

    fn evaluate(&self, batch: &RecordBatch) -> Result<ColumnarValue> {
        match self.check {
            SizeCheck::Concat => self.concat(batch),
            SizeCheck::Broadcast => self.broadcast(batch),
        }
    }

    fn children(&self) -> Vec<&Arc<dyn PhysicalExpr>> {
        self.inner.children()
    }

    fn with_new_children(
        self: Arc<Self>,
        children: Vec<Arc<dyn PhysicalExpr>>,
    ) -> Result<Arc<dyn PhysicalExpr>> {
        Ok(Arc::new(Self {
            inner: Arc::clone(&self.inner).with_new_children(children)?,
            check: self.check,
            max_bytes: self.max_bytes,
        }))
    }

    fn fmt_sql(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.inner.fmt_sql(f)
    }
}

/// Literals below this size are never checked (8,192 copies stay small).
const SMALL_LITERAL: usize = 1024;

fn large_literal(expr: &Arc<dyn PhysicalExpr>) -> bool {
    expr.downcast_ref::<Literal>()
        .is_some_and(|l| l.value().size() > SMALL_LITERAL)
}

/// Whether `expr` holds a `+`, `-` or `*` (any of which could wrap) or a `||`.
fn has_wrapping(expr: &Arc<dyn PhysicalExpr>) -> bool {
    expr.exists(|e| {
        Ok(e.downcast_ref::<BinaryExpr>().is_some_and(|b| {
            matches!(
                b.op(),
                Operator::Plus | Operator::Minus | Operator::Multiply | Operator::StringConcat
            )
        }))
    })
    .unwrap_or(true)
}

/// `expr` with every `+`, `-` and `*` failing on overflow and every `||` size-checked.
fn checked(expr: Arc<dyn PhysicalExpr>, max_value_bytes: usize) -> Result<Arc<dyn PhysicalExpr>> {
    expr.transform_up(|e| match e.downcast_ref::<BinaryExpr>() {
        Some(b) if *b.op() == Operator::StringConcat => {
            let checked = SizeChecked {
                inner: Arc::clone(&e),
                check: SizeCheck::Concat,
                max_bytes: max_value_bytes,
            };
            Ok(Transformed::yes(Arc::new(checked) as Arc<dyn PhysicalExpr>))
        }
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

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::execution::SessionStateBuilder;
    use datafusion::prelude::SessionContext;

    fn session() -> SessionContext {
        let state = SessionStateBuilder::new()
            .with_default_features()
            .with_physical_optimizer_rule(Arc::new(CheckedArithmetic {
                max_value_bytes: 1 << 20,
            }))
            .build();
        let ctx = SessionContext::new_with_state(state);
        super::super::value_caps::register(&ctx, 1 << 20);
        ctx
    }

    #[tokio::test]
    async fn long_concatenations_fail_and_short_ones_work() {
        let ctx = session();
        let terms: Vec<String> = (0..30).map(|i| format!("repeat('{i}', 700000)")).collect();
        let sql = format!("SELECT length({})", terms.join(" || "));
        let err = ctx.sql(&sql).await.unwrap().collect().await.unwrap_err();
        assert!(
            matches!(
                err.find_root(),
                datafusion::error::DataFusionError::ResourcesExhausted(_)
            ),
            "{err}"
        );
        let ok = ctx
            .sql("SELECT 'a' || x || NULL, 'a' || x FROM (VALUES ('b'), ('c')) t(x)")
            .await
            .unwrap()
            .collect()
            .await
            .unwrap();
        let text = datafusion::arrow::util::pretty::pretty_format_batches(&ok)
            .unwrap()
            .to_string();
        assert!(text.contains("| ab ") && text.contains("| ac "), "{text}");
        // A large literal copied into many rows fails; into one row it is fine.
        let big = "x".repeat(100_000);
        let many = format!("SELECT '{big}' FROM generate_series(1, 5000)");
        let err = ctx.sql(&many).await.unwrap().collect().await.unwrap_err();
        assert!(err.to_string().contains("literal"), "{err}");
        let one = format!("SELECT '{big}' AS v FROM generate_series(1, 2)");
        ctx.sql(&one).await.unwrap().collect().await.unwrap();
    }
}
