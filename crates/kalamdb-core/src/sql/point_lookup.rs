//! Primary-key point lookups answered without DataFusion planning.
//!
//! `SELECT * | col, … FROM ns.t WHERE pk = <literal>` is the most common read of an
//! application, and planning it through DataFusion costs more than reading the row. This
//! module takes the simple shape of `table_select.rs` (the one subscriptions accept) with a
//! primary-key equality as its filter, and reads the row directly through the same
//! provider code a DataFusion scan uses, so results, schemas and permission checks are
//! identical. Anything else (whole-scope reads included: they stream through DataFusion)
//! returns `None` and takes the normal path.

use super::parse::{TableRef, fold};
use super::session::{ExecCtx, Output};
use super::table_select::TableSelect;
use crate::access;
use crate::app_context::AppContext;
use crate::providers::table::AppTableProvider;
use datafusion::sql::sqlparser::ast::{BinaryOperator, Expr, Statement};
use kalamdb_catalog::defaults::literal_scalar;
use kalamdb_catalog::error::Result;
use kalamdb_catalog::value::coerce;
use kalamdb_commons::TableType;
use kalamdb_tables::rows::Scope;
use std::sync::Arc;

/// Answers `stmt` if it is a primary-key point lookup; `None` means "use DataFusion".
pub(crate) async fn try_point_lookup(
    app: &AppContext,
    ctx: &ExecCtx,
    stmt: &Statement,
) -> Result<Option<Output>> {
    let Ok(shape) = TableSelect::of(stmt) else {
        return Ok(None);
    };
    let Some(Expr::BinaryOp {
        left,
        op: BinaryOperator::Eq,
        right,
    }) = shape.filter
    else {
        return Ok(None);
    };
    let tref = TableRef::from_object_name(shape.table)?;
    let id = super::ddl::resolve(ctx, &tref);
    if id.namespace.as_str() == "system" {
        return Ok(None);
    }
    let Some(table) = app.schema_registry().get(&id)? else {
        return Ok(None);
    };
    if table.def.table_type == TableType::Stream {
        return Ok(None);
    }
    let Some(pk_idx) = table.pk_index else {
        return Ok(None);
    };
    let pk = &table.def.columns[pk_idx];
    let is_pk = |e: &Expr| matches!(e, Expr::Identifier(i) if fold(&i.value, i.quote_style.is_some()) == pk.name);
    let literal = match (is_pk(left), is_pk(right)) {
        (true, false) => literal_scalar(right),
        (false, true) => literal_scalar(left),
        _ => None,
    };
    let Some(Ok(key)) = literal.map(|s| coerce(s, &pk.data_type, &pk.name)) else {
        return Ok(None);
    };

    let schema = &table.schema;
    let projection = match shape.columns() {
        None => (0..schema.fields().len()).collect(),
        Some(names) => {
            let found: std::result::Result<Vec<usize>, _> =
                names.iter().map(|n| schema.index_of(n)).collect();
            match found {
                Ok(indices) => indices,
                Err(_) => return Ok(None),
            }
        }
    };
    let scope = match table.def.table_type {
        TableType::Shared => {
            access::check_shared_read(&ctx.identity, &table.def)?;
            Scope::Shared
        }
        TableType::User | TableType::Stream => Scope::User(ctx.identity.user_id.clone()),
        TableType::System => return Ok(None),
    };
    let provider = AppTableProvider::new(Arc::clone(&table), Arc::clone(app.tables()));
    let rows: Vec<_> = provider.read_key(&scope, &key).await?.into_iter().collect();
    let (schema, batches) = provider.build_batches(&rows, Some(&projection))?;
    Ok(Some(Output::Rows {
        schema,
        batches,
        memory: None,
    }))
}
