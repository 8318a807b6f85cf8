//! UUID columns hold canonical text (lowercase, hyphenated). This analyzer rule rewrites a
//! string compared with one (`=`, `<>`, `<`, … and `IN`) to that form before the query runs,
//! so `WHERE id = 'A0EEBC99…'`, a braced or an unhyphenated literal find the row on every path,
//! as the point-lookup shortcut, DML and live filters (which parse it as a UUID) already do.

use datafusion::common::tree_node::{Transformed, TransformedResult, TreeNode};
use datafusion::common::{DFSchema, Result};
use datafusion::config::ConfigOptions;
use datafusion::logical_expr::expr::InList;
use datafusion::logical_expr::{BinaryExpr, Expr, LogicalPlan, Operator};
use datafusion::optimizer::AnalyzerRule;
use datafusion::scalar::ScalarValue;
use kalamdb_catalog::types::field_kalam_type;
use kalamdb_commons::KalamDataType;

/// The rule; see the module doc.
#[derive(Debug, Default)]
pub struct CanonicalUuidLiterals;

impl AnalyzerRule for CanonicalUuidLiterals {
    fn analyze(&self, plan: LogicalPlan, _config: &ConfigOptions) -> Result<LogicalPlan> {
        plan.transform_up_with_subqueries(|node| {
            // Most nodes compare no string literal: leave them without building a schema.
            if !node.expressions().iter().any(has_string_literal) {
                return Ok(Transformed::no(node));
            }
            let mut schema = DFSchema::empty();
            for input in node.inputs() {
                schema.merge(input.schema());
            }
            node.map_expressions(|e| e.transform_up(|e| Ok(canonical(e, &schema))))
        })
        .data()
    }

    fn name(&self) -> &str {
        "canonical_uuid_literals"
    }
}

/// `e` (and everything below it) with string literals compared against a UUID column of
/// `schema` in canonical form: the rule for a standalone expression (live and topic filters).
pub fn canonical_literals(e: Expr, schema: &DFSchema) -> Result<Expr> {
    e.transform_up(|e| Ok(canonical(e, schema))).data()
}

/// `e` with string literals compared against a UUID column in canonical form.
fn canonical(e: Expr, schema: &DFSchema) -> Transformed<Expr> {
    match e {
        Expr::BinaryExpr(b)
            if matches!(
                b.op,
                Operator::Eq
                    | Operator::NotEq
                    | Operator::Lt
                    | Operator::LtEq
                    | Operator::Gt
                    | Operator::GtEq
                    | Operator::IsDistinctFrom
                    | Operator::IsNotDistinctFrom
            ) && (is_uuid(&b.left, schema) || is_uuid(&b.right, schema)) =>
        {
            let (left, l) = literal(*b.left);
            let (right, r) = literal(*b.right);
            let rewritten =
                Expr::BinaryExpr(BinaryExpr::new(Box::new(left), b.op, Box::new(right)));
            if l || r {
                Transformed::yes(rewritten)
            } else {
                Transformed::no(rewritten)
            }
        }
        Expr::InList(i) if is_uuid(&i.expr, schema) => {
            let mut changed = false;
            let list = i
                .list
                .into_iter()
                .map(|item| {
                    let (item, c) = literal(item);
                    changed |= c;
                    item
                })
                .collect();
            let rewritten = Expr::InList(InList::new(i.expr, list, i.negated));
            if changed {
                Transformed::yes(rewritten)
            } else {
                Transformed::no(rewritten)
            }
        }
        other => Transformed::no(other),
    }
}

fn has_string_literal(e: &Expr) -> bool {
    e.exists(|e| Ok(matches!(e, Expr::Literal(ScalarValue::Utf8(Some(_)), _))))
        .unwrap_or(true)
}

fn is_uuid(e: &Expr, schema: &DFSchema) -> bool {
    let Expr::Column(c) = e else {
        return false;
    };
    schema
        .qualified_field_from_column(c)
        .is_ok_and(|(_, f)| field_kalam_type(f).0 == KalamDataType::Uuid)
}

/// A string literal that reads as a UUID, in canonical form (and whether it changed).
fn literal(e: Expr) -> (Expr, bool) {
    if let Expr::Literal(ScalarValue::Utf8(Some(text)), meta) = &e
        && let Ok(u) = uuid::Uuid::parse_str(text.trim())
    {
        let canonical = u.hyphenated().to_string();
        if canonical != *text {
            return (
                Expr::Literal(ScalarValue::Utf8(Some(canonical)), meta.clone()),
                true,
            );
        }
    }
    (e, false)
}
