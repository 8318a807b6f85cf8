//! The JSON operators `->` and `->>` bind as in PostgreSQL: tighter than comparisons, `LIKE`,
//! `IS`, `BETWEEN`, `IN` and `||`. The generic SQL dialect ranks them below all of those, so
//! `doc->>'n' = '5'` parses as `doc ->> ('n' = '5')` and `'5' = doc->>'n'` as
//! `('5' = doc) ->> 'n'`; [`bind_json_arrows`] rotates such trees right after parsing, so every
//! path (queries, views, live and topic filters) reads them the same way. A parenthesized
//! operand (`doc ->> ('a' || 'b')`) is left as written.

use datafusion::sql::sqlparser::ast::{
    BinaryOperator, Expr, Value as SqlValue, VisitMut, visit_expressions_mut,
};
use std::ops::ControlFlow;

/// Rotates every mis-bound JSON arrow under `node`; see the module doc.
pub fn bind_json_arrows<V: VisitMut>(node: &mut V) {
    let _ = visit_expressions_mut(node, |e| {
        fix(e);
        ControlFlow::<()>::Continue(())
    });
}

fn is_arrow(op: &BinaryOperator) -> bool {
    matches!(
        op,
        BinaryOperator::Arrow
            | BinaryOperator::LongArrow
            | BinaryOperator::HashArrow
            | BinaryOperator::HashLongArrow
    )
}

/// Whether `op` is a binary operator a JSON arrow binds tighter than (or, for `||`, as tight
/// and left-associative).
fn is_looser(op: &BinaryOperator) -> bool {
    use BinaryOperator as B;
    matches!(
        op,
        B::Eq | B::NotEq | B::Lt | B::LtEq | B::Gt | B::GtEq | B::Spaceship | B::StringConcat
    )
}

/// The first operand of `e` if `e` is an operation a JSON arrow binds tighter than.
fn looser_first(e: &mut Expr) -> Option<&mut Box<Expr>> {
    match e {
        Expr::BinaryOp { left, op, .. } if is_looser(op) => Some(left),
        Expr::Like { expr, .. }
        | Expr::ILike { expr, .. }
        | Expr::SimilarTo { expr, .. }
        | Expr::RLike { expr, .. }
        | Expr::Between { expr, .. }
        | Expr::InList { expr, .. }
        | Expr::InSubquery { expr, .. }
        | Expr::IsNull(expr)
        | Expr::IsNotNull(expr)
        | Expr::IsTrue(expr)
        | Expr::IsNotTrue(expr)
        | Expr::IsFalse(expr)
        | Expr::IsNotFalse(expr)
        | Expr::IsUnknown(expr)
        | Expr::IsNotUnknown(expr)
        | Expr::IsDistinctFrom(expr, _)
        | Expr::IsNotDistinctFrom(expr, _) => Some(expr),
        _ => None,
    }
}

/// The last operand of `e` if `e` is an operation a JSON arrow binds tighter than.
fn looser_last(e: &mut Expr) -> Option<&mut Box<Expr>> {
    match e {
        Expr::BinaryOp { right, op, .. } if is_looser(op) => Some(right),
        Expr::Like { pattern, .. }
        | Expr::ILike { pattern, .. }
        | Expr::SimilarTo { pattern, .. }
        | Expr::RLike { pattern, .. } => Some(pattern),
        Expr::Between { high, .. } => Some(high),
        Expr::IsDistinctFrom(_, b) | Expr::IsNotDistinctFrom(_, b) => Some(b),
        _ => None,
    }
}

/// Finds one operand of an operation.
type OperandSlot = fn(&mut Expr) -> Option<&mut Box<Expr>>;

/// `(X looser A) arrow B` becomes `X looser (A arrow B)`, and `L arrow (A looser …)` becomes
/// `(L arrow A) looser …`, repeatedly.
fn fix(e: &mut Expr) {
    let Expr::BinaryOp { left, op, right } = e else {
        return;
    };
    if !is_arrow(op) {
        return;
    }
    let from_left = looser_last(left).is_some();
    if !from_left && looser_first(right).is_none() {
        return;
    }
    let placeholder = || Expr::value(SqlValue::Null);
    let Expr::BinaryOp { left, op, right } = std::mem::replace(e, placeholder()) else {
        return;
    };
    // The looser operation becomes the root; the arrow moves down onto its operand.
    let (mut outer, kept, slot_of): (Expr, Box<Expr>, OperandSlot) = if from_left {
        (*left, right, looser_last)
    } else {
        (*right, left, looser_first)
    };
    let Some(slot) = slot_of(&mut outer) else {
        return;
    };
    let operand = Box::new(std::mem::replace(slot.as_mut(), placeholder()));
    let (l, r) = if from_left {
        (operand, kept)
    } else {
        (kept, operand)
    };
    let mut inner = Expr::BinaryOp {
        left: l,
        op,
        right: r,
    };
    fix(&mut inner);
    **slot = inner;
    *e = outer;
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::sql::sqlparser::dialect::GenericDialect;
    use datafusion::sql::sqlparser::parser::Parser;

    fn bound(text: &str) -> String {
        let mut e = Parser::new(&GenericDialect {})
            .try_with_sql(text)
            .unwrap()
            .parse_expr()
            .unwrap();
        bind_json_arrows(&mut e);
        e.to_string()
    }

    /// `a`, bound, has the tree of `b`, where parentheses say how it binds (parentheses
    /// themselves not compared).
    fn same(a: &str, b: &str) {
        let tree = |t: &str| {
            let mut e = Parser::new(&GenericDialect {})
                .try_with_sql(t)
                .unwrap()
                .parse_expr()
                .unwrap();
            bind_json_arrows(&mut e);
            let _ = visit_expressions_mut(&mut e, |e| {
                if let Expr::Nested(inner) = e {
                    *e = std::mem::replace(inner.as_mut(), Expr::value(SqlValue::Null));
                }
                ControlFlow::<()>::Continue(())
            });
            // Positions differ with the parentheses: leave them out.
            let debug = format!("{e:?}");
            let (mut out, mut rest) = (String::new(), debug.as_str());
            while let Some(i) = rest.find("Span(Location(") {
                out.push_str(&rest[..i]);
                let end = rest[i..].find("))").unwrap();
                rest = &rest[i + end + 2..];
            }
            out + rest
        };
        assert_eq!(tree(a), tree(b), "{a} vs {b} ({})", bound(a));
    }

    #[test]
    fn arrows_bind_tighter_than_comparisons_and_predicates() {
        same("doc->>'n' = '5'", "(doc->>'n') = '5'");
        same("'5' = doc->>'n'", "'5' = (doc->>'n')");
        same("doc->>'a' = doc->>'b'", "(doc->>'a') = (doc->>'b')");
        same("x LIKE doc->>'p'", "x LIKE (doc->>'p')");
        same("x BETWEEN 1 AND doc->>'hi'", "x BETWEEN 1 AND (doc->>'hi')");
        same("doc->'a'->>'b' = 'x'", "((doc->'a')->>'b') = 'x'");
        same("doc->>'n' LIKE 'b%'", "(doc->>'n') LIKE 'b%'");
        same("doc->>'n' IS NULL", "(doc->>'n') IS NULL");
        same("doc->>'n' IN ('a', 'b')", "(doc->>'n') IN ('a', 'b')");
        same(
            "doc->>'n' BETWEEN 'a' AND 'c'",
            "(doc->>'n') BETWEEN 'a' AND 'c'",
        );
        same("doc->>'n' || 'x' = 'nx'", "((doc->>'n') || 'x') = 'nx'");
        same(
            "doc->>'a' = 'x' AND doc->>'b' <> 'y'",
            "((doc->>'a') = 'x') AND ((doc->>'b') <> 'y')",
        );
    }

    #[test]
    fn parenthesized_operands_stay() {
        let text = "doc ->> ('a' || 'b')";
        assert_eq!(bound(text), "doc ->> ('a' || 'b')");
    }
}
