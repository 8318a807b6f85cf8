//! `ALTER [USER|SHARED|STREAM] TABLE ns.t <one change>`: a new version of the table's
//! definition in `system.schemas`, never a rewrite of its rows.
//!
//! Rows keep their cells by stable column id, so a renamed column keeps its data, a dropped
//! one vanishes from reads (its id is never reused), and a widened type reads old cells
//! widened. A column added with a literal DEFAULT records the `_seq` of the change: rows older
//! than it read the default ([`kalamdb_catalog::schema_registry::CachedTable::backfill`]), flushed segments written
//! before it read the default too (see `cold::conform`). Writers of the table wait while the
//! definition changes. Refused, with the reason: dropping or renaming the primary key,
//! narrowing or changing a type, NOT NULL without a default on a table that has rows.

use super::ddl::{column_definition, default_of, resolve};
use super::parse::{AlterChange, TableRef};
use super::session::{ExecCtx, Output};
use crate::access;
use crate::app_context::AppContext;
use kalamdb_catalog::error::{KalamError, Result};
use kalamdb_catalog::types::parse_sql_type;
use kalamdb_commons::ids::{RESERVED_COLUMNS, validate_identifier};
use kalamdb_commons::{AccessLevel, ColumnDefault, KalamDataType as K, TableDefinition, TableType};

/// Runs one `ALTER TABLE`.
pub async fn alter_table(
    app: &AppContext,
    ctx: &ExecCtx,
    t: &TableRef,
    change: AlterChange,
) -> Result<Output> {
    let id = resolve(ctx, t);
    if id.namespace.as_str() == "system" {
        return Err(KalamError::PermissionDenied(
            "System tables cannot be altered".into(),
        ));
    }
    let locks = app.tables().table_locks(&id);
    let _writers_wait = locks.all().await;
    let old = app
        .catalog()
        .table(&id)?
        .ok_or_else(|| KalamError::NotFound {
            kind: "Table",
            name: id.to_string(),
        })?;
    access::check_alter_table(&ctx.identity)?;
    let mut def = old.clone();
    match change {
        AlterChange::AddColumn(cd) => {
            let (mut col, primary_key) =
                column_definition(&cd, def.next_column_id, def.columns.len() as u32 + 1)?;
            if primary_key {
                return Err(KalamError::InvalidSql(
                    "ALTER TABLE cannot add a primary-key column".into(),
                ));
            }
            if find(&def, &col.name).is_ok() {
                return Err(KalamError::InvalidSql(format!(
                    "Column '{}' already exists in {id}",
                    col.name
                )));
            }
            let literal = matches!(col.default, Some(ColumnDefault::Literal(_)));
            if !col.nullable && !literal && has_rows(app, &def).await? {
                return Err(KalamError::InvalidSql(format!(
                    "Column '{}' is NOT NULL without a literal DEFAULT, and {id} has rows \
                     (which would read it as NULL): give it a literal DEFAULT or make it nullable",
                    col.name
                )));
            }
            // Rows written before now read the default as it is now, for good.
            if let Some(ColumnDefault::Literal(text)) = &col.default {
                col.missing_value = Some(text.clone());
                col.added_at_seq = Some(app.seq().next_id());
            }
            def.next_column_id += 1;
            def.columns.push(col);
        }
        AlterChange::DropColumn(name) => {
            let i = find(&def, &name)?;
            not_key(&def, i, "dropped")?;
            if def.columns.len() == 1 {
                return Err(KalamError::InvalidSql(
                    "A table needs at least one column".into(),
                ));
            }
            def.columns.remove(i);
            for (n, c) in def.columns.iter_mut().enumerate() {
                c.ordinal = n as u32 + 1;
            }
        }
        AlterChange::RenameColumn(from, to) => {
            let i = find(&def, &from)?;
            not_key(&def, i, "renamed")?;
            if RESERVED_COLUMNS.contains(&to.to_ascii_lowercase().as_str()) {
                return Err(KalamError::InvalidSql(format!(
                    "Column name '{to}' is reserved for a system column"
                )));
            }
            validate_identifier("column", &to)
                .map_err(|e| KalamError::InvalidSql(e.to_string()))?;
            if !from.eq_ignore_ascii_case(&to) && find(&def, &to).is_ok() {
                return Err(KalamError::InvalidSql(format!(
                    "Column '{to}' already exists in {id}"
                )));
            }
            def.columns[i].name = to;
        }
        AlterChange::SetType(name, type_text, nullable) => {
            let i = find(&def, &name)?;
            let to = parse_sql_type(&type_text)?.data_type;
            let from = &def.columns[i].data_type;
            if *from != to {
                if def.columns[i].primary_key {
                    return Err(KalamError::InvalidSql(
                        "The primary key's type cannot change".into(),
                    ));
                }
                if !widens(from, &to) {
                    return Err(KalamError::InvalidSql(format!(
                        "Column '{name}' cannot change from {} to {}: only widening (SMALLINT -> \
                         INT -> BIGINT, FLOAT -> DOUBLE) keeps every stored value",
                        from.sql_name(),
                        to.sql_name()
                    )));
                }
                def.columns[i].data_type = to;
            }
            if let Some(n) = nullable {
                set_nullable(app, &mut def, i, n).await?;
            }
        }
        AlterChange::SetNullable(name, nullable) => {
            let i = find(&def, &name)?;
            set_nullable(app, &mut def, i, nullable).await?;
        }
        AlterChange::SetDefault(name, expr) => {
            let i = find(&def, &name)?;
            let col = &mut def.columns[i];
            // Rows older than an ADD COLUMN keep reading its `missing_value`; a definition
            // stored before those were recorded freezes it from the default now.
            if col.added_at_seq.is_some()
                && col.missing_value.is_none()
                && let Some(ColumnDefault::Literal(text)) = &col.default
            {
                col.missing_value = Some(text.clone());
            }
            col.default = match expr {
                Some(e) => Some(default_of(&e, &col.name, &col.data_type)?),
                None => None,
            };
        }
        AlterChange::SetOption(key, value) => set_option(&mut def, &key, &value)?,
    }
    if def == old {
        return Ok(Output::Message(format!(
            "Table '{id}' unchanged (schema version {})",
            def.version
        )));
    }
    def.version += 1;
    def.updated_at = chrono::Utc::now().timestamp_micros();
    app.catalog().put_table(&def)?;
    app.schema_registry().invalidate(&id);
    if let Some(listener) = app.tables().change_listener() {
        listener.table_altered(&def);
    }
    Ok(Output::Message(format!(
        "Table '{id}' altered (schema version {})",
        def.version
    )))
}

/// Index of column `name` (case-insensitive).
fn find(def: &TableDefinition, name: &str) -> Result<usize> {
    def.columns
        .iter()
        .position(|c| c.name.eq_ignore_ascii_case(name))
        .ok_or_else(|| {
            if RESERVED_COLUMNS.contains(&name.to_ascii_lowercase().as_str()) {
                KalamError::InvalidSql(format!("'{name}' is a system column and cannot change"))
            } else {
                KalamError::InvalidSql(format!(
                    "Column '{name}' does not exist in {}",
                    def.table_id()
                ))
            }
        })
}

fn not_key(def: &TableDefinition, i: usize, what: &str) -> Result<()> {
    if def.columns[i].primary_key {
        return Err(KalamError::InvalidSql(format!(
            "The primary key '{}' cannot be {what}",
            def.columns[i].name
        )));
    }
    Ok(())
}

/// Whether every value of type `from` is a value of type `to`.
fn widens(from: &K, to: &K) -> bool {
    matches!(
        (from, to),
        (K::SmallInt, K::Int | K::BigInt) | (K::Int, K::BigInt) | (K::Float, K::Double)
    )
}

async fn set_nullable(
    app: &AppContext,
    def: &mut TableDefinition,
    i: usize,
    nullable: bool,
) -> Result<()> {
    let col = &def.columns[i];
    if nullable && col.primary_key {
        return Err(KalamError::InvalidSql(
            "The primary key cannot be nullable".into(),
        ));
    }
    if !nullable && col.nullable && has_rows(app, def).await? {
        return Err(KalamError::InvalidSql(format!(
            "Column '{}' cannot become NOT NULL: {} has rows, which may hold NULLs",
            col.name,
            def.table_id()
        )));
    }
    def.columns[i].nullable = nullable;
    Ok(())
}

/// Whether the table holds any row, hot or flushed, of any user.
async fn has_rows(app: &AppContext, def: &TableDefinition) -> Result<bool> {
    let partitions = kalamdb_tables::rows::TablePartitions::of(def);
    if app
        .backend()
        .scan(partitions.used(), b"", None)?
        .next()
        .is_some()
    {
        return Ok(true);
    }
    let table = app.schema_registry().require(&def.table_id())?;
    app.tables().cold().may_have_segments(&table).await
}

fn set_option(def: &mut TableDefinition, key: &str, value: &str) -> Result<()> {
    match key {
        "ACCESS_LEVEL" => {
            if def.table_type != TableType::Shared {
                return Err(KalamError::InvalidSql(
                    "ACCESS_LEVEL applies to SHARED tables only".into(),
                ));
            }
            def.access_level = Some(AccessLevel::parse(value).ok_or_else(|| {
                KalamError::InvalidSql(format!(
                    "Invalid ACCESS_LEVEL '{value}': use PUBLIC, PRIVATE, RESTRICTED or DBA"
                ))
            })?);
        }
        "TTL_SECONDS" => {
            if def.table_type != TableType::Stream {
                return Err(KalamError::InvalidSql(
                    "TTL_SECONDS applies to STREAM tables only".into(),
                ));
            }
            let ttl: u64 = value.parse().ok().filter(|t| *t > 0).ok_or_else(|| {
                KalamError::InvalidSql(format!("Invalid TTL_SECONDS '{value}': a positive number"))
            })?;
            def.ttl_seconds = Some(ttl);
        }
        "FLUSH_POLICY" => {
            if def.table_type == TableType::Stream {
                return Err(KalamError::InvalidSql(
                    "STREAM tables are not flushed; FLUSH_POLICY does not apply".into(),
                ));
            }
            kalamdb_tables::cold::FlushPolicy::parse(value)?;
            def.flush_policy = Some(value.to_string());
        }
        other => {
            return Err(KalamError::InvalidSql(format!(
                "ALTER TABLE … SET {other} is not supported (ACCESS_LEVEL, TTL_SECONDS, FLUSH_POLICY)"
            )));
        }
    }
    Ok(())
}
