//! Tables: `CREATE TABLE` (its options, columns, defaults and primary key), `DROP TABLE` and
//! the cleanup of a dropped table's rows and files, `DESCRIBE TABLE` and `SHOW TABLES`. The
//! column definitions and defaults are shared with `ALTER TABLE` (`sql::alter`).

use super::{now, resolve, table_output};
use crate::access;
use crate::app_context::AppContext;
use crate::sql::parse::{TableRef, fold};
use crate::sql::session::{ExecCtx, Output};
use datafusion::sql::sqlparser::ast::{
    ColumnOption, CreateTable, CreateTableOptions, Expr, SqlOption, TableConstraint, UnaryOperator,
    Value as SqlValue,
};
use kalamdb_catalog::error::{KalamError, Result};
use kalamdb_catalog::jobs::JobReport;
use kalamdb_catalog::types::parse_sql_type;
use kalamdb_catalog::value::{Value, coerce};
use kalamdb_commons::ids::{RESERVED_COLUMNS, validate_identifier};
use kalamdb_commons::{
    AccessLevel, ColumnDefault, ColumnDefinition, KalamDataType as K, NamespaceId, StorageId,
    TableDefinition, TableId, TableName, TableType,
};

/// `SHOW TABLES [IN ns]`.
pub fn show_tables(app: &AppContext, ns: Option<&str>) -> Result<Output> {
    let ns = ns.map(NamespaceId::new);
    let rows = app
        .catalog()
        .tables(ns.as_ref())?
        .into_iter()
        .map(|d| {
            vec![
                Value::Text(d.namespace.to_string()),
                Value::Text(d.name.to_string()),
                Value::Text(d.table_type.as_str().into()),
            ]
        })
        .collect();
    table_output(
        &[
            ("namespace_id", K::Text, false),
            ("table_name", K::Text, false),
            ("table_type", K::Text, false),
        ],
        rows,
    )
}

/// `DESCRIBE TABLE`.
pub fn describe(app: &AppContext, ctx: &ExecCtx, t: &TableRef) -> Result<Output> {
    let id = resolve(ctx, t);
    let table = app.schema_registry().require(&id)?;
    let def = &table.def;
    let rows = def
        .columns
        .iter()
        .map(|c| {
            vec![
                Value::Text(c.name.clone()),
                Value::I32(c.ordinal as i32),
                Value::I32(c.column_id as i32),
                Value::Text(c.data_type.sql_name()),
                Value::Bool(c.nullable),
                Value::Bool(c.primary_key),
                c.default
                    .as_ref()
                    .map(|d| Value::Text(d.sql()))
                    .unwrap_or(Value::Null),
                Value::I32(def.version as i32),
            ]
        })
        .collect();
    table_output(
        &[
            ("column_name", K::Text, false),
            ("ordinal_position", K::Int, false),
            ("column_id", K::Int, false),
            ("data_type", K::Text, false),
            ("is_nullable", K::Boolean, false),
            ("is_primary_key", K::Boolean, false),
            ("column_default", K::Text, true),
            ("schema_version", K::Int, false),
        ],
        rows,
    )
}

/// One `WITH (KEY = value)` table option as (upper-case key, value text).
fn option_text(opt: &SqlOption) -> Result<(String, String)> {
    match opt {
        SqlOption::KeyValue { key, value } => {
            let v = match value {
                Expr::Value(v) => match &v.value {
                    SqlValue::SingleQuotedString(s) | SqlValue::DoubleQuotedString(s) => s.clone(),
                    SqlValue::Number(n, _) => n.clone(),
                    SqlValue::Boolean(b) => b.to_string(),
                    other => other.to_string(),
                },
                Expr::Identifier(i) => i.value.clone(),
                other => other.to_string(),
            };
            Ok((key.value.to_ascii_uppercase(), v))
        }
        other => Err(KalamError::InvalidSql(format!(
            "Unsupported table option {other}"
        ))),
    }
}

/// Validates `rows:N`, `interval:S` or both.
fn validate_flush_policy(text: &str) -> Result<()> {
    kalamdb_tables::cold::FlushPolicy::parse(text).map(|_| ())
}

/// The default of column `col` of type `t` from its `DEFAULT` expression: a function
/// default or a literal that fits the column.
pub(crate) fn default_of(expr: &Expr, col: &str, t: &K) -> Result<ColumnDefault> {
    let function = match expr {
        Expr::Function(f) => {
            let name = f.name.to_string().to_ascii_uppercase();
            Some(match name.as_str() {
                "SNOWFLAKE_ID" => ColumnDefault::SnowflakeId,
                "UUID_V7" => ColumnDefault::UuidV7,
                "ULID" => ColumnDefault::Ulid,
                "NOW" | "CURRENT_TIMESTAMP" => ColumnDefault::Now,
                "CURRENT_USER" => ColumnDefault::CurrentUser,
                _ => {
                    return Err(KalamError::InvalidSql(format!(
                        "Unsupported DEFAULT {expr} for column '{col}': use a literal, SNOWFLAKE_ID(), UUID_V7(), ULID(), NOW() or CURRENT_USER()"
                    )));
                }
            })
        }
        Expr::Identifier(i) => match i.value.to_ascii_uppercase().as_str() {
            "CURRENT_TIMESTAMP" => Some(ColumnDefault::Now),
            "CURRENT_USER" => Some(ColumnDefault::CurrentUser),
            _ => None,
        },
        _ => None,
    };
    if let Some(f) = function {
        check_function_default(&f, col, t)?;
        return Ok(f);
    }
    let literal = match expr {
        Expr::Value(_) => true,
        Expr::UnaryOp {
            op: UnaryOperator::Minus | UnaryOperator::Plus,
            expr,
        } => matches!(**expr, Expr::Value(_)),
        _ => false,
    };
    if !literal {
        return Err(KalamError::InvalidSql(format!(
            "Unsupported DEFAULT {expr} for column '{col}'"
        )));
    }
    let text = expr.to_string();
    // Check now that the literal fits the column, rather than at every insert.
    let scalar = kalamdb_catalog::defaults::literal_scalar(expr).ok_or_else(|| {
        KalamError::InvalidSql(format!("Unsupported DEFAULT {expr} for column '{col}'"))
    })?;
    coerce(scalar, t, col)?;
    Ok(ColumnDefault::Literal(text))
}

/// UNIQUE is refused rather than accepted and not enforced: only the primary key is unique.
fn unique_unsupported(what: &str) -> KalamError {
    KalamError::InvalidSql(format!(
        "UNIQUE constraints are not supported ({what}): only the PRIMARY KEY is enforced unique"
    ))
}

/// Refuses a function default whose values do not fit the column (`INT DEFAULT NOW()`), so
/// the mistake shows at CREATE/ALTER rather than at every INSERT.
fn check_function_default(f: &ColumnDefault, col: &str, t: &K) -> Result<()> {
    let sample = kalamdb_catalog::defaults::function_default(f, || i64::MAX >> 1, "root", now());
    match sample.map(|s| coerce(s, t, col)) {
        Some(Err(_)) => Err(KalamError::InvalidSql(format!(
            "DEFAULT {} does not fit column '{col}' of type {}",
            f.sql(),
            t.sql_name()
        ))),
        _ => Ok(()),
    }
}

/// A column of `CREATE TABLE` / `ALTER TABLE ADD COLUMN`, and whether it is declared the
/// primary key.
pub(crate) fn column_definition(
    col: &datafusion::sql::sqlparser::ast::ColumnDef,
    column_id: u32,
    ordinal: u32,
) -> Result<(ColumnDefinition, bool)> {
    let name = fold(&col.name.value, col.name.quote_style.is_some());
    if RESERVED_COLUMNS.contains(&name.to_ascii_lowercase().as_str()) {
        return Err(KalamError::InvalidSql(format!(
            "Column name '{name}' is reserved for a system column"
        )));
    }
    validate_identifier("column", &name).map_err(|e| KalamError::InvalidSql(e.to_string()))?;
    let mut parsed = parse_sql_type(&col.data_type.to_string())?;
    let mut nullable = true;
    let mut primary_key = false;
    let mut default = parsed.serial.then_some(ColumnDefault::SnowflakeId);
    for opt in &col.options {
        match &opt.option {
            ColumnOption::NotNull => nullable = false,
            ColumnOption::Null => nullable = true,
            ColumnOption::Default(expr) => {
                default = Some(default_of(expr, &name, &parsed.data_type)?)
            }
            ColumnOption::PrimaryKey(_) => primary_key = true,
            ColumnOption::Unique(_) => return Err(unique_unsupported(&name)),
            other => {
                let text = other.to_string().to_ascii_uppercase();
                if text.contains("AUTO_INCREMENT")
                    || text.contains("AUTOINCREMENT")
                    || text.contains("IDENTITY")
                {
                    // SNOWFLAKE_ID() values need 64 bits: an INT/SMALLINT column widens.
                    if matches!(parsed.data_type, K::Int | K::SmallInt) {
                        parsed.data_type = K::BigInt;
                    }
                    check_function_default(&ColumnDefault::SnowflakeId, &name, &parsed.data_type)?;
                    default = Some(ColumnDefault::SnowflakeId);
                } else {
                    return Err(KalamError::InvalidSql(format!(
                        "Unsupported column option {other} on '{name}'"
                    )));
                }
            }
        }
    }
    if !nullable
        && !primary_key
        && matches!(&default, Some(ColumnDefault::Literal(t)) if t.eq_ignore_ascii_case("NULL"))
    {
        return Err(KalamError::InvalidSql(format!(
            "Column '{name}' is NOT NULL with DEFAULT NULL"
        )));
    }
    Ok((
        ColumnDefinition {
            column_id,
            name,
            ordinal,
            data_type: parsed.data_type,
            nullable,
            primary_key,
            default,
            added_at_seq: None,
            missing_value: None,
        },
        primary_key,
    ))
}

/// `CREATE TABLE`.
pub fn create_table(
    app: &AppContext,
    ctx: &ExecCtx,
    prefix_type: Option<TableType>,
    ct: &CreateTable,
) -> Result<Output> {
    let (ns, table_name) = new_table_name(ctx, ct)?;
    let options = table_options(ct, prefix_type)?;
    check_table_options(app, ctx, &options, &ns)?;
    let (mut columns, pk_names) = declared_columns(ct)?;
    set_primary_key(&mut columns, &pk_names, options.table_type)?;
    let id = TableId::new(ns.clone(), table_name.clone());
    if let Some(out) = check_name_free(app, &id, ct.if_not_exists)? {
        return Ok(out);
    }
    let table_type = options.table_type;
    let def = new_definition(ns, table_name, options, columns);
    store_new_table(app, &id, def)?;
    Ok(Output::Message(format!(
        "{} table '{id}' created",
        table_type.as_str()
    )))
}

/// The namespace and name of the table a `CREATE TABLE` makes (never in `system`).
fn new_table_name(ctx: &ExecCtx, ct: &CreateTable) -> Result<(NamespaceId, TableName)> {
    let tref = TableRef::from_object_name(&ct.name)?;
    let ns_name = tref
        .namespace
        .clone()
        .unwrap_or_else(|| ctx.namespace.clone());
    if ns_name == "system" {
        return Err(KalamError::PermissionDenied(
            "Tables cannot be created in namespace 'system'".into(),
        ));
    }
    let table_name =
        TableName::parse(&tref.table).map_err(|e| KalamError::InvalidSql(e.to_string()))?;
    Ok((NamespaceId::new(ns_name), table_name))
}

/// The `WITH (…)` options of a `CREATE TABLE`, with the table type and storage defaulted.
struct TableOptions {
    /// `TYPE` or the word before `TABLE`; SHARED when neither is given.
    table_type: TableType,
    /// `ACCESS_LEVEL` (SHARED tables).
    access_level: Option<AccessLevel>,
    /// `STORAGE_ID`; `local` when not given.
    storage_id: String,
    /// `FLUSH_POLICY`, validated.
    flush_policy: Option<String>,
    /// `TTL_SECONDS` (STREAM tables).
    ttl: Option<u64>,
}

/// Reads the `WITH (…)` options of a `CREATE TABLE`, each checked on its own.
fn table_options(ct: &CreateTable, prefix_type: Option<TableType>) -> Result<TableOptions> {
    let options = match &ct.table_options {
        CreateTableOptions::None => vec![],
        CreateTableOptions::With(opts) => {
            opts.iter().map(option_text).collect::<Result<Vec<_>>>()?
        }
        other => {
            return Err(KalamError::InvalidSql(format!(
                "Unsupported table options {other}"
            )));
        }
    };
    let mut table_type = prefix_type;
    let (mut access_level, mut storage_id, mut flush_policy, mut ttl) = (None, None, None, None);
    let mut use_user_storage = None;
    for (key, value) in &options {
        match key.as_str() {
            "TYPE" => table_type = Some(type_option(value, prefix_type)?),
            "ACCESS_LEVEL" => access_level = Some(access_level_option(value)?),
            "STORAGE_ID" => storage_id = Some(value.clone()),
            "FLUSH_POLICY" => {
                validate_flush_policy(value)?;
                flush_policy = Some(value.clone());
            }
            "TTL_SECONDS" => ttl = Some(ttl_option(value)?),
            // Upstream accepts these and does not act on them: one storage per table, and one
            // tombstone retention for the server (`[storage] tombstone_retention_secs`).
            "USE_USER_STORAGE" => use_user_storage = Some(bool_option(key, value)?),
            "DELETED_RETENTION_HOURS" => {
                value.trim().parse::<u32>().map_err(|_| {
                    KalamError::InvalidSql(format!(
                        "DELETED_RETENTION_HOURS must be a whole number of hours, got '{value}'"
                    ))
                })?;
            }
            other => {
                return Err(KalamError::InvalidSql(format!(
                    "Unknown table option '{other}'"
                )));
            }
        }
    }
    let table_type = table_type.unwrap_or(TableType::Shared);
    if use_user_storage.is_some() && table_type != TableType::User {
        return Err(KalamError::InvalidSql(
            "USE_USER_STORAGE applies to USER tables only".into(),
        ));
    }
    Ok(TableOptions {
        table_type,
        access_level,
        storage_id: storage_id.unwrap_or_else(|| "local".into()),
        flush_policy,
        ttl,
    })
}

/// A boolean option: `true`/`false` (quoted or not).
fn bool_option(key: &str, value: &str) -> Result<bool> {
    match value.trim().to_ascii_lowercase().as_str() {
        "true" => Ok(true),
        "false" => Ok(false),
        _ => Err(KalamError::InvalidSql(format!(
            "{key} must be true or false, got '{value}'"
        ))),
    }
}

/// `TYPE = 'USER'|'SHARED'|'STREAM'`, which must agree with a `CREATE <type> TABLE` prefix.
fn type_option(value: &str, prefix_type: Option<TableType>) -> Result<TableType> {
    let t = match value.to_ascii_uppercase().as_str() {
        "USER" => TableType::User,
        "SHARED" => TableType::Shared,
        "STREAM" => TableType::Stream,
        _ => {
            return Err(KalamError::InvalidSql(format!(
                "Invalid TYPE '{value}': use USER, SHARED or STREAM"
            )));
        }
    };
    if let Some(prefix) = prefix_type.filter(|p| *p != t) {
        return Err(KalamError::InvalidSql(format!(
            "Table type conflict: CREATE {} TABLE with TYPE='{value}'",
            prefix.as_str()
        )));
    }
    Ok(t)
}

/// `ACCESS_LEVEL = 'PUBLIC'|'PRIVATE'|'RESTRICTED'|'DBA'`.
fn access_level_option(value: &str) -> Result<AccessLevel> {
    AccessLevel::parse(value).ok_or_else(|| {
        KalamError::InvalidSql(format!(
            "Invalid ACCESS_LEVEL '{value}': use PUBLIC, PRIVATE, RESTRICTED or DBA"
        ))
    })
}

/// `TTL_SECONDS = n`, a positive integer.
fn ttl_option(value: &str) -> Result<u64> {
    value.parse::<u64>().ok().filter(|v| *v > 0).ok_or_else(|| {
        KalamError::InvalidSql(format!(
            "Invalid TTL_SECONDS '{value}': use a positive integer"
        ))
    })
}

/// Checks the caller may create a table of this type, that the options fit it and each
/// other, and that the storage and namespace exist.
fn check_table_options(
    app: &AppContext,
    ctx: &ExecCtx,
    options: &TableOptions,
    ns: &NamespaceId,
) -> Result<()> {
    let table_type = options.table_type;
    access::check_create_table(&ctx.identity, table_type)?;
    if table_type == TableType::Stream && options.ttl.is_none() {
        return Err(KalamError::InvalidSql(
            "STREAM tables need WITH (TTL_SECONDS = n): their rows expire after n seconds".into(),
        ));
    }
    if options.access_level.is_some() && table_type != TableType::Shared {
        return Err(KalamError::InvalidSql(
            "ACCESS_LEVEL applies to SHARED tables only".into(),
        ));
    }
    if options.ttl.is_some() && table_type != TableType::Stream {
        return Err(KalamError::InvalidSql(
            "TTL_SECONDS applies to STREAM tables only".into(),
        ));
    }
    if app.catalog().storage(&options.storage_id)?.is_none() {
        return Err(KalamError::NotFound {
            kind: "Storage",
            name: options.storage_id.clone(),
        });
    }
    if app.catalog().namespace(ns)?.is_none() {
        return Err(KalamError::NotFound {
            kind: "Namespace",
            name: ns.to_string(),
        });
    }
    Ok(())
}

/// The columns of a `CREATE TABLE`, and the names its column options and table constraints
/// declare the primary key.
fn declared_columns(ct: &CreateTable) -> Result<(Vec<ColumnDefinition>, Vec<String>)> {
    let mut columns: Vec<ColumnDefinition> = Vec::new();
    let mut pk_names: Vec<String> = Vec::new();
    for (i, col) in ct.columns.iter().enumerate() {
        let (column, primary_key) = column_definition(col, (i + 1) as u32, (i + 1) as u32)?;
        if columns
            .iter()
            .any(|c| c.name.eq_ignore_ascii_case(&column.name))
        {
            return Err(KalamError::InvalidSql(format!(
                "Duplicate column name '{}'",
                column.name
            )));
        }
        if primary_key {
            pk_names.push(column.name.clone());
        }
        columns.push(column);
    }
    if columns.is_empty() {
        return Err(KalamError::InvalidSql(
            "A table needs at least one column".into(),
        ));
    }
    for constraint in &ct.constraints {
        pk_names.extend(constraint_key_names(constraint)?);
    }
    Ok((columns, pk_names))
}

/// The columns a table constraint declares the primary key; any other constraint is refused.
fn constraint_key_names(constraint: &TableConstraint) -> Result<Vec<String>> {
    match constraint {
        TableConstraint::PrimaryKey(pk) => pk
            .columns
            .iter()
            .map(|c| match &c.column.expr {
                Expr::Identifier(i) => Ok(fold(&i.value, i.quote_style.is_some())),
                other => Err(KalamError::InvalidSql(format!(
                    "Unsupported PRIMARY KEY column {other}"
                ))),
            })
            .collect(),
        TableConstraint::Unique(u) => Err(unique_unsupported(&u.to_string())),
        other => Err(KalamError::InvalidSql(format!(
            "Unsupported table constraint {other}"
        ))),
    }
}

/// Marks the one primary-key column (NOT NULL, of a type that can be a key); only STREAM
/// tables may have none.
fn set_primary_key(
    columns: &mut [ColumnDefinition],
    pk_names: &[String],
    table_type: TableType,
) -> Result<()> {
    match pk_names {
        [] if table_type == TableType::Stream => Ok(()),
        [] => Err(KalamError::InvalidSql(format!(
            "{} tables need a primary key: declare one column PRIMARY KEY",
            table_type.as_str()
        ))),
        [one] => {
            let col = columns
                .iter_mut()
                .find(|c| c.name.eq_ignore_ascii_case(one))
                .ok_or_else(|| {
                    KalamError::InvalidSql(format!("PRIMARY KEY names unknown column '{one}'"))
                })?;
            col.primary_key = true;
            col.nullable = false;
            if matches!(col.data_type, K::Embedding(_) | K::Json | K::File) {
                return Err(KalamError::InvalidSql(format!(
                    "Column '{}' of type {} cannot be a primary key",
                    col.name, col.data_type
                )));
            }
            Ok(())
        }
        _ => Err(KalamError::InvalidSql(
            "Only a one-column primary key is supported".into(),
        )),
    }
}

/// Refuses a name a view or table already has; `Some` is the reply to `IF NOT EXISTS` when a
/// table of that name exists.
fn check_name_free(app: &AppContext, id: &TableId, if_not_exists: bool) -> Result<Option<Output>> {
    if app
        .catalog()
        .view(id.namespace.as_str(), id.table.as_str())?
        .is_some()
    {
        return Err(KalamError::AlreadyExists {
            kind: "View",
            name: id.to_string(),
        });
    }
    if app.catalog().table(id)?.is_some() {
        return if if_not_exists {
            Ok(Some(Output::Message(format!(
                "Table '{id}' already exists"
            ))))
        } else {
            Err(KalamError::AlreadyExists {
                kind: "Table",
                name: id.to_string(),
            })
        };
    }
    Ok(None)
}

/// The definition (version 1) of a new table.
fn new_definition(
    namespace: NamespaceId,
    name: TableName,
    options: TableOptions,
    columns: Vec<ColumnDefinition>,
) -> TableDefinition {
    let t = now();
    let table_type = options.table_type;
    TableDefinition {
        namespace,
        name,
        table_type,
        next_column_id: columns.len() as u32 + 1,
        columns,
        version: 1,
        access_level: (table_type == TableType::Shared)
            .then(|| options.access_level.unwrap_or(AccessLevel::Private)),
        ttl_seconds: options.ttl,
        flush_policy: options.flush_policy,
        storage_id: StorageId::new(options.storage_id),
        created_at: t,
        updated_at: t,
        comment: None,
    }
}

/// Saves a new table's definition, unless its files would share a folder with another
/// table's.
fn store_new_table(app: &AppContext, id: &TableId, def: TableDefinition) -> Result<()> {
    let tables = app.catalog().tables(None)?;
    if let Some((other, folder)) = app.tables().cold().folder_clash(&def, &tables)? {
        return Err(KalamError::InvalidSql(format!(
            "Table '{id}' would keep its files in '{folder}', where table '{other}' keeps \
             its own (storage '{}' folder templates): choose another name or storage",
            def.storage_id
        )));
    }
    app.catalog().put_table(&def)?;
    app.schema_registry().insert(def);
    Ok(())
}

/// Drops table `id`: its definition, caches and subscriptions, then its rows and files.
pub(super) async fn drop_table_by_id(app: &AppContext, ctx: &ExecCtx, id: &TableId) -> Result<()> {
    // Invalidate before and after removing the definition: a lookup racing the drop may have
    // re-cached the old entry in between.
    app.schema_registry().invalidate(id);
    let def = app.catalog().drop_table(id)?;
    app.schema_registry().invalidate(id);
    app.tables().forget(id);
    if let Some(listener) = app.tables().change_listener() {
        listener.table_dropped(id);
    }
    // Topics it fed stop receiving (their messages stay).
    app.topics().table_dropped(id)?;
    // Rows and files last: once the definition is gone nobody reads them.
    if let Some(def) = def {
        clean_dropped_table(app, &def, "manual", ctx.identity.user_id.as_str()).await?;
    }
    Ok(())
}

/// Removes a dropped table's hot partition and cold files as a `drop_table` job, then its
/// pending-drop record; run by DROP TABLE and, for drops a stop interrupted, at start.
pub(crate) async fn clean_dropped_table(
    app: &AppContext,
    def: &TableDefinition,
    trigger: &str,
    by: &str,
) -> Result<()> {
    let target = def.table_id().to_string();
    app.jobs()
        .run("drop_table", &target, trigger, by, 1, |_| async {
            if app.tables().faults().drop_cleanup_fails() {
                return Err(KalamError::Internal(
                    "table cleanup stopped (injected failure)".into(),
                ));
            }
            app.tables().remove_table_data(def).await?;
            app.catalog().finish_drop(def)?;
            Ok(JobReport {
                rows: 0,
                bytes: 0,
                message: format!("Dropped {target}: hot rows and cold files removed"),
            })
        })
        .await?;
    Ok(())
}

/// `DROP TABLE`.
pub async fn drop_table(
    app: &AppContext,
    ctx: &ExecCtx,
    t: &TableRef,
    table_type: Option<TableType>,
    if_exists: bool,
) -> Result<Output> {
    access::check_drop_table(&ctx.identity)?;
    let id = resolve(ctx, t);
    if id.namespace.as_str() == "system" {
        return Err(KalamError::PermissionDenied(
            "System tables cannot be dropped".into(),
        ));
    }
    let Some(def) = app.catalog().table(&id)? else {
        return if if_exists {
            Ok(Output::Message(format!("Table '{id}' does not exist")))
        } else {
            Err(KalamError::NotFound {
                kind: "Table",
                name: id.to_string(),
            })
        };
    };
    if let Some(named) = table_type.filter(|t| *t != def.table_type) {
        return Err(KalamError::InvalidSql(format!(
            "Table '{id}' is a {} table, not a {} table; nothing was dropped",
            def.table_type.as_str(),
            named.as_str()
        )));
    }
    // Wait for in-flight writers of this table before removing its data.
    let locks = app.tables().table_locks(&id);
    let _guards = locks.all().await;
    drop_table_by_id(app, ctx, &id).await?;
    Ok(Output::Message(format!("Table '{id}' dropped")))
}
