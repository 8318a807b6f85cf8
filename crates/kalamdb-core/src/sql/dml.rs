//! INSERT, UPDATE and DELETE on application tables.
//!
//! Writes follow the MVCC rules of the hot store ([`crate::rows`]): an INSERT writes a first
//! version, an UPDATE a new full-row version, a DELETE a tombstone version; each version gets a
//! fresh `_seq` and replaces the key's latest-row entry; a statement's rows land in one atomic
//! batch. Writers of one table scope are serialized by its write-lock stripe, which makes the
//! primary-key check and the write (and UPDATE's read-modify-write) one step. UPDATE and DELETE find their rows by running a
//! SELECT through DataFusion, so their WHERE clauses accept everything a query does.

use super::ddl::resolve;
use super::executor::{ExecCtx, run_query};
use super::parse::{TableRef, fold};
use crate::access;
use crate::app_context::AppContext;
use crate::changes::{ChangeEvent, ChangeKind, ChangeListener};
use crate::error::{KalamError, Result};
use crate::rows::{Scope, StoredRow, log_key, row_key};
use crate::schema_registry::CachedTable;
use crate::value::{Value, coerce};
use datafusion::arrow::array::RecordBatch;
use datafusion::scalar::ScalarValue;
use datafusion::sql::sqlparser::ast::{
    AssignmentTarget, Delete, Expr, FromTable, FunctionArguments, Insert, SetExpr, TableFactor,
    TableObject, TableWithJoins, UnaryOperator, Update, Value as SqlValue,
};
use kalamdb_commons::schema::{DELETED_COLUMN, SEQ_COLUMN};
use kalamdb_commons::{ColumnDefault, ColumnDefinition, TableType};
use kalamdb_store::WriteBatch;
use std::collections::HashSet;
use std::sync::Arc;

/// A row's cells by column id.
type Cells = Vec<(u32, Value)>;

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

/// The value of a function default (`SNOWFLAKE_ID()`, `NOW()` …) for one row: `next_id`
/// gives the Snowflake id, `user` is `CURRENT_USER()`, `now` is `NOW()` (the request's, see
/// [`ExecCtx::now`]). `None` for a literal default.
pub(crate) fn function_default(
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
pub(crate) fn literal_default(col: &ColumnDefinition) -> Option<Value> {
    let Some(ColumnDefault::Literal(text)) = &col.default else {
        return None;
    };
    literal_value(text, col)
}

/// The value rows older than an `ALTER TABLE … ADD COLUMN` read in that column, if any.
pub(crate) fn missing_value(col: &ColumnDefinition) -> Option<Value> {
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
    let batches = run_query(app, ctx, &format!("SELECT {expr}")).await?.1;
    let batch = batches
        .iter()
        .find(|b| b.num_rows() > 0)
        .ok_or_else(|| KalamError::InvalidInput(format!("expression {expr} produced no value")))?;
    Ok(Some(ScalarValue::try_from_array(batch.column(0), 0)?))
}

/// Resolves the target table of a DML statement and checks the caller may write it.
fn target(app: &AppContext, ctx: &ExecCtx, tref: &TableRef) -> Result<(Arc<CachedTable>, Scope)> {
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

fn put_version(
    batch: &mut WriteBatch,
    table: &CachedTable,
    prefix: &[u8],
    pk: &[u8],
    row: &StoredRow,
) {
    batch.put(&table.partitions.rows, row_key(prefix, pk), row.encode());
}

/// STREAM tables are append-only logs: each row is one log entry keyed by its `_seq`, with no
/// latest-row entry and no key check, so a stream insert costs less than a table insert.
async fn append_stream(
    app: &AppContext,
    table: &CachedTable,
    scope: &Scope,
    rows: Vec<(Vec<u8>, Cells)>,
) -> Result<usize> {
    let prefix = scope.prefix();
    let mut batch = WriteBatch::new();
    let count = rows.len();
    // Held so a live subscription's snapshot sees all of a write or none of it; whether anyone
    // listens is asked under it, for the same reason.
    let locks = app.table_locks(&table.def.table_id());
    let _guard = locks.scope(scope).await;
    ensure_current(app, table)?;
    let listener = listener_for(app, table, scope);
    let mut events = Vec::new();
    for (_, cells) in rows {
        let row = StoredRow {
            seq: app.seq().next_id(),
            deleted: false,
            cells,
        };
        batch.put(
            &table.partitions.log,
            log_key(&prefix, row.seq),
            row.encode(),
        );
        if listener.is_some() {
            events.push(inserted(row));
        }
    }
    commit(app, table, scope, batch, listener, events).await?;
    Ok(count)
}

/// Fails with [`KalamError::SchemaChanged`] when `table` is no longer the current definition
/// (an ALTER ran while the statement was planned); checked under the write lock, before
/// anything is written.
fn ensure_current(app: &AppContext, table: &CachedTable) -> Result<()> {
    let id = table.def.table_id();
    let current = app.schema_registry().require(&id)?;
    if current.def.version != table.def.version || current.def.created_at != table.def.created_at {
        return Err(KalamError::SchemaChanged(id.to_string()));
    }
    Ok(())
}

/// `INSERT INTO t [(cols)] VALUES … | SELECT …`.
pub async fn insert(app: &AppContext, ctx: &ExecCtx, ins: &Insert) -> Result<usize> {
    crate::error::retry_on_schema_change!(insert_once(app, ctx, ins))
}

/// `UPDATE t SET … [WHERE …]`.
pub async fn update(app: &AppContext, ctx: &ExecCtx, up: &Update) -> Result<usize> {
    crate::error::retry_on_schema_change!(update_once(app, ctx, up))
}

/// `DELETE FROM t [WHERE …]`: writes tombstones.
pub async fn delete(app: &AppContext, ctx: &ExecCtx, del: &Delete) -> Result<usize> {
    crate::error::retry_on_schema_change!(delete_once(app, ctx, del))
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
            let (_, batches) = run_query(app, ctx, &source.to_string()).await?;
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
        return append_stream(app, &table, &scope, rows).await;
    }

    let locks = app.table_locks(&table.def.table_id());
    let _guard = locks.scope(&scope).await;
    ensure_current(app, &table)?;
    let prefix = scope.prefix();
    let mut batch = WriteBatch::new();
    let pks: Vec<Vec<u8>> = rows.iter().map(|(pk, _)| pk.clone()).collect();
    let existing = current_versions(app, &table, &scope, &pks).await?;
    for ((_, cells), found) in rows.iter().zip(existing) {
        if found.is_some_and(|r| !r.deleted) {
            return Err(pk_violation(&table, cells));
        }
    }
    let count = rows.len();
    let listener = listener_for(app, &table, &scope);
    let mut events = Vec::new();
    for (pk, cells) in rows {
        let row = StoredRow {
            seq: app.seq().next_id(),
            deleted: false,
            cells,
        };
        put_version(&mut batch, &table, &prefix, &pk, &row);
        if listener.is_some() {
            events.push(inserted(row));
        }
    }
    commit(app, &table, &scope, batch, listener, events).await?;
    Ok(count)
}

/// Writes `batch` atomically, then hands `events` to `listener` (the caller still holds the
/// scope's write lock, so a live subscription sees the write in its snapshot or as changes).
async fn commit(
    app: &AppContext,
    table: &CachedTable,
    scope: &Scope,
    batch: WriteBatch,
    listener: Option<&Arc<dyn ChangeListener>>,
    events: Vec<ChangeEvent>,
) -> Result<()> {
    let written = batch.len() as u64;
    {
        let _gate = app.commit_gate().await;
        app.backend()
            .write(batch)
            .map_err(|e| table_gone(e, table))?;
        // Counted under the gate: concurrent writers of a USER table would otherwise contend
        // on the counter map's lock (measured: ~6 µs per row, in parked threads).
        if table.def.table_type != TableType::Stream {
            app.flushes().wrote(&table.def.table_id(), written);
        }
    }
    if let Some(l) = listener {
        l.publish(table, scope.user(), events);
    }
    Ok(())
}

/// The change listener, when it wants changes of `scope` of `table`.
fn listener_for<'a>(
    app: &'a AppContext,
    table: &CachedTable,
    scope: &Scope,
) -> Option<&'a Arc<dyn ChangeListener>> {
    let listener = app.change_listener()?;
    listener
        .wants(&table.def.table_id(), scope.user())
        .then_some(listener)
}

fn inserted(row: StoredRow) -> ChangeEvent {
    ChangeEvent {
        kind: ChangeKind::Insert,
        seq: row.seq,
        new: Some(row),
        old: None,
    }
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

fn table_gone(e: kalamdb_store::StoreError, table: &CachedTable) -> KalamError {
    match e {
        kalamdb_store::StoreError::PartitionNotFound(_) => KalamError::NotFound {
            kind: "Table",
            name: table.def.table_id().to_string(),
        },
        other => other.into(),
    }
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

/// The latest version of each primary key in `scope` (see [`crate::cold::ColdTier::current_versions`]), a
/// missing partition reported as the table being gone.
async fn current_versions(
    app: &AppContext,
    table: &CachedTable,
    scope: &Scope,
    pks: &[Vec<u8>],
) -> Result<Vec<Option<StoredRow>>> {
    app.cold()
        .current_versions(&**app.backend(), table, scope, pks)
        .await
        .map_err(|e| match e {
            KalamError::Store(e) => table_gone(e, table),
            other => other,
        })
}

/// Reads the latest stored version of each primary key returned by `select`.
async fn matching_rows(
    app: &AppContext,
    ctx: &ExecCtx,
    table: &CachedTable,
    scope: &Scope,
    select: &str,
) -> Result<Vec<(Vec<u8>, StoredRow, Vec<ScalarValue>)>> {
    let (_, batches) = run_query(app, ctx, select).await?;
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
    let versions = current_versions(app, table, scope, &keys).await?;
    Ok(found
        .into_iter()
        .zip(versions)
        .filter_map(|((key, values), row)| row.filter(|r| !r.deleted).map(|r| (key, r, values)))
        .collect())
}

fn quoted(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
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
    let mut select = format!("SELECT {}", quoted(pk_name));
    for (i, (_, e)) in sets.iter().enumerate() {
        select.push_str(&format!(", ({e}) AS __kalam_set_{i}"));
    }
    select.push_str(&format!(" FROM {}", up.table));
    if let Some(w) = &up.selection {
        select.push_str(&format!(" WHERE {w}"));
    }

    rewrite_matching(app, ctx, &table, &scope, &select, |old, values| {
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
        return delete_stream(app, ctx, &table, &scope, twj, del.selection.as_ref()).await;
    }
    let pk_name = &table.def.columns[table.pk_index.unwrap_or(0)].name;
    let mut select = format!("SELECT {} FROM {twj}", quoted(pk_name));
    if let Some(w) = &del.selection {
        select.push_str(&format!(" WHERE {w}"));
    }
    rewrite_matching(app, ctx, &table, &scope, &select, |old, _| {
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
    let mut select = format!("SELECT {SEQ_COLUMN} FROM {from}");
    if let Some(w) = selection {
        select.push_str(&format!(" WHERE {w}"));
    }
    let locks = app.table_locks(&table.def.table_id());
    let _guard = locks.scope(scope).await;
    ensure_current(app, table)?;
    let (_, batches) = run_query(app, ctx, &select).await?;
    let prefix = scope.prefix();
    let mut batch = WriteBatch::new();
    let mut keys = Vec::new();
    for b in &batches {
        for values in batch_rows(b)? {
            if let ScalarValue::Int64(Some(seq)) = values[0] {
                keys.push(log_key(&prefix, seq));
            }
        }
    }
    let listener = listener_for(app, table, scope);
    let mut events = Vec::new();
    if listener.is_some() {
        let found = app.backend().multi_get(&table.partitions.log, &keys)?;
        for bytes in found.into_iter().flatten() {
            events.push(ChangeEvent {
                kind: ChangeKind::Delete,
                seq: app.seq().next_id(),
                new: None,
                old: Some({
                    let mut row = StoredRow::decode(&bytes)?;
                    table.backfill(&mut row);
                    row
                }),
            });
        }
    }
    for key in keys {
        batch.delete(&table.partitions.log, key);
    }
    let count = batch.len();
    commit(app, table, scope, batch, listener, events).await?;
    Ok(count)
}

/// Under the table's write lock, runs `select` (primary key first) and writes the new version
/// `next` derives from each matching row: `(deleted, cells)`, or `None` to leave it alone.
/// Returns how many versions were written, all in one atomic batch.
async fn rewrite_matching(
    app: &AppContext,
    ctx: &ExecCtx,
    table: &CachedTable,
    scope: &Scope,
    select: &str,
    mut next: impl FnMut(StoredRow, Vec<ScalarValue>) -> Result<Option<(bool, Cells)>>,
) -> Result<usize> {
    let locks = app.table_locks(&table.def.table_id());
    let _guard = locks.scope(scope).await;
    ensure_current(app, table)?;
    let prefix = scope.prefix();
    let mut batch = WriteBatch::new();
    let mut count = 0;
    let listener = listener_for(app, table, scope);
    let mut events = Vec::new();
    for (key, old, values) in matching_rows(app, ctx, table, scope, select).await? {
        let previous = listener.is_some().then(|| old.clone());
        if let Some((deleted, cells)) = next(old, values)? {
            let row = StoredRow {
                seq: app.seq().next_id(),
                deleted,
                cells,
            };
            put_version(&mut batch, table, &prefix, &key, &row);
            count += 1;
            if listener.is_some() {
                events.push(ChangeEvent {
                    kind: if deleted {
                        ChangeKind::Delete
                    } else {
                        ChangeKind::Update
                    },
                    seq: row.seq,
                    new: (!deleted).then_some(row),
                    old: previous,
                });
            }
        }
    }
    commit(app, table, scope, batch, listener, events).await?;
    Ok(count)
}
