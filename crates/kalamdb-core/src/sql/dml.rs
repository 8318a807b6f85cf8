//! INSERT, UPDATE and DELETE on application tables.
//!
//! Writes follow the MVCC rules of the hot store ([`kalamdb_tables::rows`]): an INSERT writes a first
//! version, an UPDATE a new full-row version, a DELETE a tombstone version; each version gets a
//! fresh `_seq` and replaces the key's latest-row entry; a statement's rows land in one atomic
//! batch. Writers of one table scope are serialized by its write-lock stripe, which makes the
//! primary-key check and the write (and UPDATE's read-modify-write) one step. UPDATE and DELETE find their rows by running a
//! SELECT through DataFusion, so their WHERE clauses accept everything a query does.
//!
//! Inside a transaction ([`crate::transactions`]) the same statements read through the
//! transaction's snapshot and stage their versions in it instead (`Writer::Staged`); the
//! transaction's COMMIT writes them.

use super::ddl::resolve;
use super::parse::{TableRef, fold};
use super::session::{ExecCtx, run_statement, select_statement};
use crate::access;
use crate::app_context::AppContext;
use datafusion::arrow::array::RecordBatch;
use datafusion::scalar::ScalarValue;
use datafusion::sql::sqlparser::ast::{
    AssignmentTarget, Delete, Expr, FromTable, FunctionArguments, Ident, Insert, SelectItem,
    SetExpr, Statement, TableFactor, TableObject, TableWithJoins, Update,
};
use kalamdb_catalog::defaults::{function_default, literal_scalar};
use kalamdb_catalog::error::{KalamError, Result};
use kalamdb_catalog::schema_registry::CachedTable;
use kalamdb_catalog::value::{Value, coerce};
use kalamdb_commons::schema::{DELETED_COLUMN, SEQ_COLUMN};
use kalamdb_commons::{ColumnDefault, TableType};
use kalamdb_tables::ScopeWriter;
use kalamdb_tables::rows::{Scope, StoredRow};
use kalamdb_tables::writer::Cells;
use std::collections::HashSet;
use std::sync::Arc;

/// Evaluates a column default.
fn default_value(
    app: &AppContext,
    ctx: &ExecCtx,
    table: &CachedTable,
    idx: usize,
) -> Result<Value> {
    let col = &table.def.columns[idx];
    let scalar = match col.default.as_ref() {
        None => return Ok(Value::Null),
        Some(ColumnDefault::Literal(text)) => {
            // Literal defaults are parsed once per cached table, not once per inserted row.
            return table.literal_defaults()[idx].clone().ok_or_else(|| {
                KalamError::Internal(format!(
                    "stored default {text} of column '{}' is not a valid literal",
                    col.name
                ))
            });
        }
        Some(f) => function_default(
            f,
            || app.seq().next_id(),
            ctx.identity.user_id.as_str(),
            ctx.now,
        )
        .ok_or_else(|| KalamError::Internal(format!("default of '{}'", col.name)))?,
    };
    coerce(scalar, &col.data_type, &col.name)
}

/// Evaluates one VALUES expression: `DEFAULT` (`None`), literals and KalamDB functions
/// directly, anything else through DataFusion.
async fn eval_value(app: &AppContext, ctx: &ExecCtx, expr: &Expr) -> Result<Option<ScalarValue>> {
    if let Some(s) = literal_scalar(expr) {
        return Ok(Some(s));
    }
    if let Expr::Identifier(i) = expr
        && i.quote_style.is_none()
        && i.value.eq_ignore_ascii_case("DEFAULT")
    {
        return Ok(None);
    }
    if let Expr::Function(f) = expr
        && matches!(&f.args, FunctionArguments::None)
            | matches!(&f.args, FunctionArguments::List(l) if l.args.is_empty())
    {
        let function = match f.name.to_string().to_ascii_uppercase().as_str() {
            "SNOWFLAKE_ID" => Some(ColumnDefault::SnowflakeId),
            "UUID_V7" => Some(ColumnDefault::UuidV7),
            "ULID" => Some(ColumnDefault::Ulid),
            "CURRENT_USER" => Some(ColumnDefault::CurrentUser),
            "NOW" | "CURRENT_TIMESTAMP" => Some(ColumnDefault::Now),
            _ => None,
        };
        if let Some(f) = function {
            let user = ctx.identity.user_id.as_str();
            return Ok(function_default(&f, || app.seq().next_id(), user, ctx.now));
        }
    }
    let select = select_statement(vec![SelectItem::UnnamedExpr(expr.clone())], None, None);
    let batches = run_statement(app, ctx, select).await?.1;
    let batch = batches
        .iter()
        .find(|b| b.num_rows() > 0)
        .ok_or_else(|| KalamError::InvalidInput(format!("expression {expr} produced no value")))?;
    Ok(Some(ScalarValue::try_from_array(batch.column(0), 0)?))
}

/// Resolves the target table of a DML statement and checks the caller may write it.
pub(crate) fn target(
    app: &AppContext,
    ctx: &ExecCtx,
    tref: &TableRef,
) -> Result<(Arc<CachedTable>, Scope)> {
    let id = resolve(ctx, tref);
    if id.namespace.as_str() == "system" {
        return Err(KalamError::PermissionDenied(
            "System tables are read-only".into(),
        ));
    }
    let table = app.schema_registry().require(&id)?;
    let scope = match table.def.table_type {
        TableType::Shared => {
            access::check_shared_write(&ctx.identity, &table.def)?;
            Scope::Shared
        }
        TableType::User | TableType::Stream => Scope::User(ctx.identity.user_id.clone()),
        TableType::System => {
            return Err(KalamError::PermissionDenied(
                "System tables are read-only".into(),
            ));
        }
    };
    Ok((table, scope))
}

fn column_index(table: &CachedTable, name: &str) -> Result<usize> {
    if name.eq_ignore_ascii_case(SEQ_COLUMN) || name.eq_ignore_ascii_case(DELETED_COLUMN) {
        return Err(KalamError::InvalidInput(format!(
            "System column '{name}' cannot be written"
        )));
    }
    table
        .def
        .columns
        .iter()
        .position(|c| c.name.eq_ignore_ascii_case(name))
        .ok_or_else(|| KalamError::NotFound {
            kind: "Column",
            name: format!("{name} in table {}", table.def.table_id()),
        })
}

fn check_not_null(table: &CachedTable, cells: &[(u32, Value)]) -> Result<()> {
    for (col, (_, v)) in table.def.columns.iter().zip(cells) {
        if !col.nullable && v.is_null() {
            return Err(KalamError::Constraint(format!(
                "NOT NULL constraint violated: column '{}' of {} cannot be NULL",
                col.name,
                table.def.table_id()
            )));
        }
    }
    Ok(())
}

fn pk_key_of(table: &CachedTable, cells: &[(u32, Value)]) -> Result<Vec<u8>> {
    let idx = table
        .pk_index
        .ok_or_else(|| KalamError::Internal("table without primary key".into()))?;
    cells[idx].1.pk_key().ok_or_else(|| {
        KalamError::Constraint(format!(
            "Primary key '{}' cannot be NULL",
            table.def.columns[idx].name
        ))
    })
}

/// Where a statement's versions go: into the table at its end (a [`ScopeWriter`], holding the
/// scope's writer lock), or into the caller's transaction.
enum Writer<'a> {
    Direct(ScopeWriter<'a>),
    Staged {
        app: &'a AppContext,
        tx: &'a Arc<crate::transactions::Transaction>,
        table: &'a Arc<CachedTable>,
        scope: &'a Scope,
    },
}

impl<'a> Writer<'a> {
    /// The writer of a statement of `ctx` on `scope` of `table`; `keyed` when the statement
    /// reads rows only by key, through [`Self::current`] (see `TableStore::keyed_writer`).
    async fn open(
        app: &'a AppContext,
        ctx: &'a ExecCtx,
        table: &'a Arc<CachedTable>,
        scope: &'a Scope,
        keyed: bool,
    ) -> Result<Self> {
        match &ctx.tx {
            None if keyed => Ok(Writer::Direct(
                app.tables().keyed_writer(table, scope).await?,
            )),
            None => Ok(Writer::Direct(app.tables().writer(table, scope).await?)),
            Some(tx) => {
                refuse_stream_in_transaction(ctx, table)?;
                Ok(Writer::Staged {
                    app,
                    tx,
                    table,
                    scope,
                })
            }
        }
    }

    /// The version of each key the statement sees (a tombstone included).
    async fn current(&self, pks: &[Vec<u8>]) -> Result<Vec<Option<StoredRow>>> {
        match self {
            Writer::Direct(w) => w.current(pks).await,
            Writer::Staged {
                app,
                tx,
                table,
                scope,
            } => {
                let tables = app.tables();
                let view = tx.read(tables, &table.def.table_id(), scope);
                tables.get_in(&view, table, scope, pks).await
            }
        }
    }

    /// Whether the replaced versions are needed (for change events).
    fn listened(&self) -> bool {
        match self {
            Writer::Direct(w) => w.listened(),
            Writer::Staged { .. } => true,
        }
    }

    fn put(
        &mut self,
        pk: &[u8],
        deleted: bool,
        cells: Cells,
        old: Option<StoredRow>,
    ) -> Result<()> {
        match self {
            Writer::Direct(w) => {
                w.put(pk, deleted, cells, old);
                Ok(())
            }
            Writer::Staged {
                app,
                tx,
                table,
                scope,
            } => tx.stage(
                app.tables(),
                table,
                scope,
                pk,
                deleted,
                cells,
                old,
                app.transactions().max_bytes(),
            ),
        }
    }

    /// Ends the statement: a direct write commits; staged versions wait for COMMIT.
    async fn commit(self) -> Result<()> {
        match self {
            Writer::Direct(w) => w.commit().await,
            Writer::Staged { .. } => Ok(()),
        }
    }
}

/// STREAM tables keep no versions to stage: writing one inside a transaction is refused.
fn refuse_stream_in_transaction(ctx: &ExecCtx, table: &CachedTable) -> Result<()> {
    if ctx.tx.is_some() && table.def.table_type == TableType::Stream {
        return Err(KalamError::InvalidInput(format!(
            "STREAM table {} cannot be written inside a transaction (its rows are an \
             append-only log); write it outside BEGIN … COMMIT",
            table.def.table_id()
        )));
    }
    Ok(())
}

/// STREAM tables are append-only logs: each row is one log entry keyed by its `_seq`, with no
/// latest-row entry and no key check, so a stream insert costs less than a table insert.
async fn append_stream(
    app: &AppContext,
    table: &CachedTable,
    scope: &Scope,
    rows: Vec<(Vec<u8>, Cells)>,
) -> Result<usize> {
    let count = rows.len();
    let mut writer = app.tables().keyed_writer(table, scope).await?;
    for (_, cells) in rows {
        writer.append(cells);
    }
    writer.commit().await?;
    Ok(count)
}

/// `INSERT INTO t [(cols)] VALUES … | SELECT …`.
pub async fn insert(app: &AppContext, ctx: &ExecCtx, ins: &Insert) -> Result<usize> {
    kalamdb_catalog::retry_on_schema_change!(insert_once(app, ctx, ins))
}

/// `UPDATE t SET … [WHERE …]`.
pub async fn update(app: &AppContext, ctx: &ExecCtx, up: &Update) -> Result<usize> {
    kalamdb_catalog::retry_on_schema_change!(update_once(app, ctx, up))
}

/// `DELETE FROM t [WHERE …]`: writes tombstones.
pub async fn delete(app: &AppContext, ctx: &ExecCtx, del: &Delete) -> Result<usize> {
    kalamdb_catalog::retry_on_schema_change!(delete_once(app, ctx, del))
}

async fn insert_once(app: &AppContext, ctx: &ExecCtx, ins: &Insert) -> Result<usize> {
    let TableObject::TableName(name) = &ins.table else {
        return Err(KalamError::InvalidSql(
            "INSERT into a table function is not supported".into(),
        ));
    };
    if ins.on.is_some() || ins.returning.is_some() || !ins.assignments.is_empty() {
        return Err(KalamError::InvalidSql(
            "INSERT … ON CONFLICT / RETURNING / SET are not supported".into(),
        ));
    }
    let tref = TableRef::from_object_name(name)?;
    // Resolve the table first so a missing table is reported before any value is evaluated.
    target(app, ctx, &tref)?;
    let columns = ins
        .columns
        .iter()
        .map(|c| {
            let ident =
                c.0.last()
                    .and_then(|p| p.as_ident())
                    .ok_or_else(|| KalamError::InvalidSql(format!("invalid column name {c}")))?;
            Ok(fold(&ident.value, ident.quote_style.is_some()))
        })
        .collect::<Result<Vec<_>>>()?;

    // Source rows as scalars, in column-list order.
    let source = ins
        .source
        .as_ref()
        .ok_or_else(|| KalamError::InvalidSql("INSERT needs VALUES or a query".into()))?;
    let mut input: Vec<Vec<Option<ScalarValue>>> = Vec::new();
    match source.body.as_ref() {
        SetExpr::Values(values) if source.order_by.is_none() && source.limit_clause.is_none() => {
            for row in &values.rows {
                let mut out = Vec::with_capacity(row.content.len());
                for e in &row.content {
                    out.push(eval_value(app, ctx, e).await?);
                }
                input.push(out);
            }
        }
        _ => {
            let (_, batches) = run_statement(app, ctx, Statement::Query(source.clone())).await?;
            for b in &batches {
                input.extend(
                    batch_rows(b)?
                        .into_iter()
                        .map(|r| r.into_iter().map(Some).collect()),
                );
            }
        }
    }
    insert_rows(app, ctx, &tref, &columns, input).await
}

/// Inserts rows of scalars into `tref`: `columns` names the target columns (empty = all, in
/// table order); missing columns take their default, else NULL.
pub(crate) async fn insert_rows(
    app: &AppContext,
    ctx: &ExecCtx,
    tref: &TableRef,
    columns: &[String],
    input: Vec<Vec<Option<ScalarValue>>>,
) -> Result<usize> {
    let (table, scope) = target(app, ctx, tref)?;
    let ncols = table.def.columns.len();
    let targets: Vec<usize> = if columns.is_empty() {
        (0..ncols).collect()
    } else {
        let mut seen = HashSet::new();
        columns
            .iter()
            .map(|c| {
                let idx = column_index(&table, c)?;
                if !seen.insert(idx) {
                    return Err(KalamError::InvalidSql(format!(
                        "Column '{c}' is listed twice"
                    )));
                }
                Ok(idx)
            })
            .collect::<Result<_>>()?
    };
    if let Some(bad) = input.iter().find(|r| r.len() != targets.len()) {
        return Err(KalamError::InvalidSql(format!(
            "INSERT has {} target column(s) but a row has {} value(s)",
            targets.len(),
            bad.len()
        )));
    }

    // Build full rows: given values, else (omitted or DEFAULT) defaults, else NULL.
    let mut rows: Vec<(Vec<u8>, Cells)> = Vec::with_capacity(input.len());
    let mut keys = HashSet::with_capacity(input.len());
    for values in input {
        let mut cells: Vec<Option<Value>> = vec![None; ncols];
        for (idx, scalar) in targets.iter().zip(values) {
            let col = &table.def.columns[*idx];
            if let Some(scalar) = scalar {
                cells[*idx] = Some(coerce(scalar, &col.data_type, &col.name)?);
            }
        }
        let cells = table
            .def
            .columns
            .iter()
            .zip(cells)
            .enumerate()
            .map(|(idx, (col, v))| {
                Ok((
                    col.column_id,
                    match v {
                        Some(v) => v,
                        None => default_value(app, ctx, &table, idx)?,
                    },
                ))
            })
            .collect::<Result<Vec<_>>>()?;
        check_not_null(&table, &cells)?;
        if table.def.table_type == TableType::Stream {
            rows.push((Vec::new(), cells));
            continue;
        }
        let pk = pk_key_of(&table, &cells)?;
        if !keys.insert(pk.clone()) {
            return Err(pk_violation(&table, &cells));
        }
        rows.push((pk, cells));
    }
    if table.def.table_type == TableType::Stream {
        refuse_stream_in_transaction(ctx, &table)?;
        return append_stream(app, &table, &scope, rows).await;
    }

    let mut writer = Writer::open(app, ctx, &table, &scope, true).await?;
    let pks: Vec<Vec<u8>> = rows.iter().map(|(pk, _)| pk.clone()).collect();
    let existing = writer.current(&pks).await?;
    for ((_, cells), found) in rows.iter().zip(existing) {
        if found.is_some_and(|r| !r.deleted) {
            return Err(pk_violation(&table, cells));
        }
    }
    let count = rows.len();
    for (pk, cells) in rows {
        writer.put(&pk, false, cells, None)?;
    }
    writer.commit().await?;
    Ok(count)
}

fn pk_violation(table: &CachedTable, cells: &[(u32, Value)]) -> KalamError {
    let idx = table.pk_index.unwrap_or(0);
    let shown = cells[idx].1.to_scalar(&table.def.columns[idx].data_type);
    KalamError::Constraint(format!(
        "Primary key violation: a row with {} = {shown} already exists in {}",
        table.def.columns[idx].name,
        table.def.table_id()
    ))
}

fn batch_rows(b: &RecordBatch) -> Result<Vec<Vec<ScalarValue>>> {
    (0..b.num_rows())
        .map(|r| {
            b.columns()
                .iter()
                .map(|c| Ok(ScalarValue::try_from_array(c, r)?))
                .collect()
        })
        .collect()
}

fn single_table(twj: &TableWithJoins) -> Result<TableRef> {
    if !twj.joins.is_empty() {
        return Err(KalamError::InvalidSql(
            "UPDATE/DELETE with JOIN is not supported".into(),
        ));
    }
    match &twj.relation {
        TableFactor::Table { name, .. } => TableRef::from_object_name(name),
        other => Err(KalamError::InvalidSql(format!("cannot modify {other}"))),
    }
}

/// Reads the latest stored version of each primary key returned by `select`.
async fn matching_rows(
    app: &AppContext,
    ctx: &ExecCtx,
    table: &CachedTable,
    writer: &Writer<'_>,
    select: Statement,
) -> Result<Vec<(Vec<u8>, StoredRow, Vec<ScalarValue>)>> {
    let (_, batches) = run_statement(app, ctx, select).await?;
    let pk = &table.def.columns[table
        .pk_index
        .ok_or_else(|| KalamError::Internal("no primary key".into()))?];
    let mut found = Vec::new();
    for b in &batches {
        for values in batch_rows(b)? {
            let key = coerce(values[0].clone(), &pk.data_type, &pk.name)?
                .pk_key()
                .ok_or_else(|| KalamError::Internal("NULL primary key in table".into()))?;
            found.push((key, values));
        }
    }
    let keys: Vec<Vec<u8>> = found.iter().map(|(k, _)| k.clone()).collect();
    let versions = writer.current(&keys).await?;
    Ok(found
        .into_iter()
        .zip(versions)
        .filter_map(|((key, values), row)| row.filter(|r| !r.deleted).map(|r| (key, r, values)))
        .collect())
}

/// A column of the target table in a SELECT list, quoted so its stored name is used as is.
fn column_item(name: &str) -> SelectItem {
    SelectItem::UnnamedExpr(Expr::Identifier(Ident::with_quote('"', name)))
}

async fn update_once(app: &AppContext, ctx: &ExecCtx, up: &Update) -> Result<usize> {
    if up.from.is_some() || up.returning.is_some() {
        return Err(KalamError::InvalidSql(
            "UPDATE … FROM / RETURNING are not supported".into(),
        ));
    }
    let tref = single_table(&up.table)?;
    let (table, scope) = target(app, ctx, &tref)?;
    if table.def.table_type == TableType::Stream {
        return Err(KalamError::InvalidInput(format!(
            "STREAM table {} is append-only: UPDATE is not supported (DELETE removes rows)",
            table.def.table_id()
        )));
    }
    let mut sets: Vec<(usize, &Expr)> = Vec::new();
    for a in &up.assignments {
        let AssignmentTarget::ColumnName(name) = &a.target else {
            return Err(KalamError::InvalidSql(
                "tuple assignments are not supported".into(),
            ));
        };
        let ident = name
            .0
            .last()
            .and_then(|p| p.as_ident())
            .ok_or_else(|| KalamError::InvalidSql(format!("invalid column {name}")))?;
        let idx = column_index(&table, &fold(&ident.value, ident.quote_style.is_some()))?;
        if Some(idx) == table.pk_index {
            return Err(KalamError::InvalidInput(format!(
                "The primary key column '{}' cannot be updated",
                table.def.columns[idx].name
            )));
        }
        if sets.iter().any(|(i, _)| *i == idx) {
            return Err(KalamError::InvalidSql(format!(
                "Column '{name}' is assigned twice"
            )));
        }
        sets.push((idx, &a.value));
    }
    let pk_name = &table.def.columns[table.pk_index.unwrap_or(0)].name;
    let mut projection = vec![column_item(pk_name)];
    for (i, (_, e)) in sets.iter().enumerate() {
        projection.push(SelectItem::ExprWithAlias {
            expr: Expr::Nested(Box::new((*e).clone())),
            alias: Ident::new(format!("__kalam_set_{i}")),
        });
    }
    let select = select_statement(projection, Some(up.table.clone()), up.selection.clone());

    rewrite_matching(app, ctx, &table, &scope, select, |old, values| {
        let mut cells: Cells = table
            .def
            .columns
            .iter()
            .map(|c| (c.column_id, old.cell(c.column_id).clone()))
            .collect();
        for ((idx, _), scalar) in sets.iter().zip(values.into_iter().skip(1)) {
            let col = &table.def.columns[*idx];
            cells[*idx].1 = coerce(scalar, &col.data_type, &col.name)?;
        }
        check_not_null(&table, &cells)?;
        let unchanged = cells.iter().all(|(id, v)| old.cell(*id) == v);
        Ok((!unchanged).then_some((false, cells)))
    })
    .await
}

async fn delete_once(app: &AppContext, ctx: &ExecCtx, del: &Delete) -> Result<usize> {
    if del.using.is_some()
        || del.returning.is_some()
        || del.limit.is_some()
        || !del.order_by.is_empty()
    {
        return Err(KalamError::InvalidSql(
            "DELETE … USING / RETURNING / ORDER BY / LIMIT are not supported".into(),
        ));
    }
    let from = match &del.from {
        FromTable::WithFromKeyword(t) | FromTable::WithoutKeyword(t) => t,
    };
    let [twj] = from.as_slice() else {
        return Err(KalamError::InvalidSql(
            "DELETE from exactly one table".into(),
        ));
    };
    let tref = single_table(twj)?;
    let (table, scope) = target(app, ctx, &tref)?;
    if table.def.table_type == TableType::Stream {
        refuse_stream_in_transaction(ctx, &table)?;
        return delete_stream(app, ctx, &table, &scope, twj, del.selection.as_ref()).await;
    }
    let pk_name = &table.def.columns[table.pk_index.unwrap_or(0)].name;
    let select = select_statement(
        vec![column_item(pk_name)],
        Some(twj.clone()),
        del.selection.clone(),
    );
    rewrite_matching(app, ctx, &table, &scope, select, |old, _| {
        Ok(Some((true, old.cells)))
    })
    .await
}

/// DELETE on a STREAM table removes the matching log entries (a hard delete).
async fn delete_stream(
    app: &AppContext,
    ctx: &ExecCtx,
    table: &CachedTable,
    scope: &Scope,
    from: &TableWithJoins,
    selection: Option<&Expr>,
) -> Result<usize> {
    let select = select_statement(
        vec![column_item(SEQ_COLUMN)],
        Some(from.clone()),
        selection.cloned(),
    );
    let mut writer = app.tables().writer(table, scope).await?;
    let (_, batches) = run_statement(app, ctx, select).await?;
    let mut seqs = Vec::new();
    for b in &batches {
        for values in batch_rows(b)? {
            if let ScalarValue::Int64(Some(seq)) = values[0] {
                seqs.push(seq);
            }
        }
    }
    writer.remove_logged(&seqs)?;
    let count = writer.staged();
    writer.commit().await?;
    Ok(count)
}

/// Under the table's write lock, runs `select` (primary key first) and writes the new version
/// `next` derives from each matching row: `(deleted, cells)`, or `None` to leave it alone.
/// Returns how many versions were written, all in one atomic batch.
async fn rewrite_matching(
    app: &AppContext,
    ctx: &ExecCtx,
    table: &Arc<CachedTable>,
    scope: &Scope,
    select: Statement,
    mut next: impl FnMut(StoredRow, Vec<ScalarValue>) -> Result<Option<(bool, Cells)>>,
) -> Result<usize> {
    let mut writer = Writer::open(app, ctx, table, scope, false).await?;
    let mut count = 0;
    for (key, old, values) in matching_rows(app, ctx, table, &writer, select).await? {
        let previous = writer.listened().then(|| old.clone());
        if let Some((deleted, cells)) = next(old, values)? {
            writer.put(&key, deleted, cells, previous)?;
            count += 1;
        }
    }
    writer.commit().await?;
    Ok(count)
}
