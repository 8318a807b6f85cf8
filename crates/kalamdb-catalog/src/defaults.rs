//! Column defaults and the values of literals: what a column holds when an INSERT leaves it
//! out, and what rows written before an `ALTER TABLE … ADD COLUMN` read in it.

use crate::value::{Value, coerce};
use datafusion::scalar::ScalarValue;
use datafusion::sql::sqlparser::ast::{Expr, UnaryOperator, Value as SqlValue};
use kalamdb_commons::{ColumnDefault, ColumnDefinition};

/// The scalar of a literal expression (`42`, `-1.5`, `'x'`, `TRUE`, `NULL`), if it is one.
/// Non-integer numbers stay text so DECIMAL columns get them exactly.
pub fn literal_scalar(expr: &Expr) -> Option<ScalarValue> {
    match expr {
        Expr::Value(v) => match &v.value {
            SqlValue::Number(n, _) => Some(match n.parse::<i64>() {
                Ok(i) => ScalarValue::Int64(Some(i)),
                Err(_) => ScalarValue::Utf8(Some(n.clone())),
            }),
            SqlValue::SingleQuotedString(s)
            | SqlValue::DoubleQuotedString(s)
            | SqlValue::EscapedStringLiteral(s)
            | SqlValue::NationalStringLiteral(s) => Some(ScalarValue::Utf8(Some(s.clone()))),
            SqlValue::Boolean(b) => Some(ScalarValue::Boolean(Some(*b))),
            SqlValue::Null => Some(ScalarValue::Null),
            _ => None,
        },
        Expr::UnaryOp {
            op: UnaryOperator::Plus,
            expr,
        } => literal_scalar(expr),
        Expr::UnaryOp {
            op: UnaryOperator::Minus,
            expr,
        } => match literal_scalar(expr)? {
            ScalarValue::Int64(Some(i)) => Some(ScalarValue::Int64(Some(-i))),
            ScalarValue::Utf8(Some(s)) if s.parse::<f64>().is_ok() => {
                Some(ScalarValue::Utf8(Some(format!("-{s}"))))
            }
            _ => None,
        },
        _ => None,
    }
}

/// The value of a function default (`SNOWFLAKE_ID()`, `NOW()` …) for one row: `next_id`
/// gives the Snowflake id, `user` is `CURRENT_USER()`, `now` is `NOW()` (the request's, see
/// the executor's `ExecCtx::now`). `None` for a literal default.
pub fn function_default(
    default: &ColumnDefault,
    next_id: impl FnOnce() -> i64,
    user: &str,
    now: i64,
) -> Option<ScalarValue> {
    Some(match default {
        ColumnDefault::Literal(_) => return None,
        ColumnDefault::SnowflakeId => ScalarValue::Int64(Some(next_id())),
        ColumnDefault::UuidV7 => ScalarValue::Utf8(Some(uuid::Uuid::now_v7().to_string())),
        ColumnDefault::Ulid => ScalarValue::Utf8(Some(ulid::Ulid::new().to_string())),
        ColumnDefault::Now => ScalarValue::TimestampMicrosecond(Some(now), None),
        ColumnDefault::CurrentUser => ScalarValue::Utf8(Some(user.to_string())),
    })
}

/// The value of a column's literal default, if it has one that parses and fits the column.
pub fn literal_default(col: &ColumnDefinition) -> Option<Value> {
    let Some(ColumnDefault::Literal(text)) = &col.default else {
        return None;
    };
    literal_value(text, col)
}

/// The value rows older than an `ALTER TABLE … ADD COLUMN` read in that column, if any.
pub fn missing_value(col: &ColumnDefinition) -> Option<Value> {
    col.added_at_seq?;
    match &col.missing_value {
        Some(text) => literal_value(text, col),
        // Definitions written before missing values were recorded: the default then.
        None => literal_default(col),
    }
}

/// A literal's SQL text as a value of `col`'s type.
fn literal_value(text: &str, col: &ColumnDefinition) -> Option<Value> {
    let expr = datafusion::sql::sqlparser::parser::Parser::new(
        &datafusion::sql::sqlparser::dialect::GenericDialect {},
    )
    .try_with_sql(text)
    .and_then(|mut p| p.parse_expr())
    .ok()?;
    coerce(literal_scalar(&expr)?, &col.data_type, &col.name).ok()
}
