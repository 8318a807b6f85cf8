//! `$1 … $n` parameters: JSON values from the request become SQL literals in the parsed
//! statement (as AST nodes, never as text, so a parameter can never change the statement's
//! shape).

use crate::auth::Identity;
use datafusion::sql::sqlparser::ast::{Expr, Statement, Value as SqlValue, visit_expressions_mut};
use kalamdb_catalog::error::{KalamError, Result};
use std::ops::ControlFlow;

/// Checks the request's parameters against the limits and converts them to SQL literals.
pub fn prepare(
    params: &[serde_json::Value],
    max_params: usize,
    max_bytes: usize,
) -> Result<Vec<SqlValue>> {
    if params.len() > max_params {
        return Err(KalamError::InvalidParameter(format!(
            "Too many parameters: {} (at most {max_params})",
            params.len()
        )));
    }
    params
        .iter()
        .enumerate()
        .map(|(i, p)| {
            let n = i + 1;
            let v = match p {
                serde_json::Value::Null => SqlValue::Null,
                serde_json::Value::Bool(b) => SqlValue::Boolean(*b),
                serde_json::Value::Number(num) => SqlValue::Number(num.to_string(), false),
                serde_json::Value::String(s) => {
                    if s.len() > max_bytes {
                        return Err(KalamError::InvalidParameter(format!(
                            "Parameter ${n} invalid: larger than {max_bytes} bytes"
                        )));
                    }
                    SqlValue::SingleQuotedString(s.clone())
                }
                _ => {
                    return Err(KalamError::InvalidParameter(format!(
                        "Parameter ${n} invalid: arrays and objects are not supported"
                    )));
                }
            };
            Ok(v)
        })
        .collect()
}

/// Replaces every `$n` placeholder in `stmt` with its literal, `CURRENT_USER` with the
/// caller's user id and `CURRENT_ROLE()` with their role (lower case).
pub fn bind(stmt: &mut Statement, values: &[SqlValue], identity: &Identity) -> Result<()> {
    let mut error = None;
    let _ = visit_expressions_mut(stmt, |expr| {
        if crate::row_filter::bind_caller_in(
            expr,
            identity.user_id.as_str(),
            identity.role.as_str(),
        ) {
            return ControlFlow::Continue(());
        }
        if let Expr::Value(v) = expr
            && let SqlValue::Placeholder(p) = &v.value
        {
            let idx = p.strip_prefix('$').and_then(|n| n.parse::<usize>().ok());
            match idx
                .and_then(|i| i.checked_sub(1))
                .and_then(|i| values.get(i))
            {
                Some(lit) => v.value = lit.clone(),
                None => {
                    error = Some(KalamError::InvalidParameter(format!(
                        "Parameter {p} has no value ({} given)",
                        values.len()
                    )));
                    return ControlFlow::Break(());
                }
            }
        }
        ControlFlow::Continue(())
    });
    error.map_or(Ok(()), Err)
}
