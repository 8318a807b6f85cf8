//! Handlers of KalamDB's own statements: namespaces, tables, users, SHOW and DESCRIBE.

use super::parse::{TableRef, UserChange, fold};
use super::session::{ExecCtx, Output};
use crate::access;
use crate::app_context::AppContext;
use crate::auth::password;
use crate::providers::system::rows_to_batch;
use datafusion::arrow::datatypes::Schema;
use datafusion::sql::sqlparser::ast::{
    ColumnOption, CreateTable, CreateTableOptions, Expr, SqlOption, TableConstraint, UnaryOperator,
    Value as SqlValue,
};
use kalamdb_catalog::catalog::{DEFAULT_NAMESPACE, NamespaceRecord};
use kalamdb_catalog::error::{KalamError, Result};
use kalamdb_catalog::jobs::{JobOutcome, JobReport};
use kalamdb_catalog::schema_registry::CachedTable;
use kalamdb_catalog::types::{parse_sql_type, system_field};
use kalamdb_catalog::value::{Value, coerce};
use kalamdb_commons::ids::{RESERVED_COLUMNS, validate_identifier};
use kalamdb_commons::{
    AccessLevel, ColumnDefault, ColumnDefinition, KalamDataType as K, NamespaceId, Role, StorageId,
    TableDefinition, TableId, TableName, TableType, UserId,
};
use std::sync::Arc;

fn now() -> i64 {
    chrono::Utc::now().timestamp_micros()
}

/// Resolves a table reference against the statement's default namespace.
pub fn resolve(ctx: &ExecCtx, t: &TableRef) -> TableId {
    let ns = t.namespace.clone().unwrap_or_else(|| ctx.namespace.clone());
    TableId::new(NamespaceId::new(ns), TableName::new(t.table.clone()))
}

pub(crate) fn table_output(columns: &[(&str, K, bool)], rows: Vec<Vec<Value>>) -> Result<Output> {
    let schema = Arc::new(Schema::new(
        columns
            .iter()
            .map(|(n, t, null)| system_field(n, *t, *null))
            .collect::<Vec<_>>(),
    ));
    let types: Vec<K> = columns.iter().map(|c| c.1).collect();
    let batch = rows_to_batch(Arc::clone(&schema), &types, &rows)?;
    Ok(Output::Rows {
        schema,
        batches: vec![batch],
        memory: None,
    })
}

/// `CREATE NAMESPACE`.
pub fn create_namespace(
    app: &AppContext,
    ctx: &ExecCtx,
    name: &str,
    if_not_exists: bool,
) -> Result<Output> {
    access::check_admin(&ctx.identity, "create namespaces")?;
    let id = NamespaceId::parse(name).map_err(|e| KalamError::InvalidSql(e.to_string()))?;
    if app.catalog().namespace(&id)?.is_some() {
        return if if_not_exists {
            Ok(Output::Message(format!("Namespace '{id}' already exists")))
        } else {
            Err(KalamError::AlreadyExists {
                kind: "Namespace",
                name: id.to_string(),
            })
        };
    }
    app.catalog().put_namespace(&NamespaceRecord {
        namespace_id: id.to_string(),
        created_at: now(),
        options: None,
    })?;
    Ok(Output::Message(format!("Namespace '{id}' created")))
}

/// `DROP NAMESPACE`.
pub async fn drop_namespace(
    app: &AppContext,
    ctx: &ExecCtx,
    name: &str,
    if_exists: bool,
    cascade: bool,
) -> Result<Output> {
    access::check_admin(&ctx.identity, "drop namespaces")?;
    let id = NamespaceId::new(name);
    if name == DEFAULT_NAMESPACE || name == "system" {
        return Err(KalamError::PermissionDenied(format!(
            "Namespace '{name}' is built in and cannot be dropped"
        )));
    }
    if app.catalog().namespace(&id)?.is_none() {
        return if if_exists {
            Ok(Output::Message(format!("Namespace '{id}' does not exist")))
        } else {
            Err(KalamError::NotFound {
                kind: "Namespace",
                name: id.to_string(),
            })
        };
    }
    let tables = app.catalog().tables(Some(&id))?;
    let views = app.catalog().views(id.as_str())?;
    if (!tables.is_empty() || !views.is_empty()) && !cascade {
        return Err(KalamError::Constraint(format!(
            "Namespace '{id}' is not empty ({} table(s), {} view(s)); use DROP NAMESPACE {id} \
             CASCADE to drop it with them",
            tables.len(),
            views.len()
        )));
    }
    // Views first: none is left reading a table that is gone.
    for v in &views {
        app.catalog().delete_view(id.as_str(), &v.view_name)?;
    }
    for t in &tables {
        drop_table_by_id(app, ctx, &t.table_id()).await?;
    }
    app.catalog().delete_namespace(&id)?;
    Ok(Output::Message(format!(
        "Namespace '{id}' dropped ({} table(s), {} view(s))",
        tables.len(),
        views.len()
    )))
}

/// `USE ns`: checks the namespace exists.
pub fn use_namespace(app: &AppContext, name: &str) -> Result<Output> {
    if app.catalog().namespace(&NamespaceId::new(name))?.is_none() {
        return Err(KalamError::NotFound {
            kind: "Namespace",
            name: name.to_string(),
        });
    }
    Ok(Output::Message(format!("Using namespace '{name}'")))
}

/// `SHOW NAMESPACES`.
pub fn show_namespaces(app: &AppContext) -> Result<Output> {
    let rows = app
        .catalog()
        .namespaces_with_table_counts()?
        .into_iter()
        .map(|(n, count)| {
            vec![
                Value::Text(n.namespace_id),
                Value::I32(count as i32),
                Value::Timestamp(n.created_at),
            ]
        })
        .collect();
    table_output(
        &[
            ("namespace_id", K::Text, false),
            ("table_count", K::Int, false),
            ("created_at", K::Timestamp, false),
        ],
        rows,
    )
}

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

/// `SHOW STORAGES`.
pub fn show_storages(app: &AppContext) -> Result<Output> {
    let mut storages = app.catalog().storages()?;
    storages.sort_by_key(|s| s.storage_id != "local");
    let rows = storages
        .into_iter()
        .map(|s| {
            vec![
                Value::Text(s.storage_id),
                Value::Text(s.storage_name),
                Value::Text(s.storage_type),
                Value::Text(s.base_directory),
            ]
        })
        .collect();
    table_output(
        &[
            ("storage_id", K::Text, false),
            ("storage_name", K::Text, false),
            ("storage_type", K::Text, false),
            ("base_directory", K::Text, false),
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
    let ns = NamespaceId::new(ns_name);

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
    for (key, value) in &options {
        match key.as_str() {
            "TYPE" => {
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
                if prefix_type.is_some_and(|p| p != t) {
                    return Err(KalamError::InvalidSql(format!(
                        "Table type conflict: CREATE {} TABLE with TYPE='{value}'",
                        prefix_type.expect("checked").as_str()
                    )));
                }
                table_type = Some(t);
            }
            "ACCESS_LEVEL" => {
                access_level = Some(AccessLevel::parse(value).ok_or_else(|| {
                    KalamError::InvalidSql(format!(
                        "Invalid ACCESS_LEVEL '{value}': use PUBLIC, PRIVATE, RESTRICTED or DBA"
                    ))
                })?)
            }
            "STORAGE_ID" => storage_id = Some(value.clone()),
            "FLUSH_POLICY" => {
                validate_flush_policy(value)?;
                flush_policy = Some(value.clone());
            }
            "TTL_SECONDS" => {
                ttl = Some(
                    value
                        .parse::<u64>()
                        .ok()
                        .filter(|v| *v > 0)
                        .ok_or_else(|| {
                            KalamError::InvalidSql(format!(
                                "Invalid TTL_SECONDS '{value}': use a positive integer"
                            ))
                        })?,
                )
            }
            other => {
                return Err(KalamError::InvalidSql(format!(
                    "Unknown table option '{other}'"
                )));
            }
        }
    }
    let table_type = table_type.unwrap_or(TableType::Shared);
    access::check_create_table(&ctx.identity, table_type)?;
    if table_type == TableType::Stream && ttl.is_none() {
        return Err(KalamError::InvalidSql(
            "STREAM tables need WITH (TTL_SECONDS = n): their rows expire after n seconds".into(),
        ));
    }
    if access_level.is_some() && table_type != TableType::Shared {
        return Err(KalamError::InvalidSql(
            "ACCESS_LEVEL applies to SHARED tables only".into(),
        ));
    }
    if ttl.is_some() && table_type != TableType::Stream {
        return Err(KalamError::InvalidSql(
            "TTL_SECONDS applies to STREAM tables only".into(),
        ));
    }
    let storage_id = storage_id.unwrap_or_else(|| "local".into());
    if app.catalog().storage(&storage_id)?.is_none() {
        return Err(KalamError::NotFound {
            kind: "Storage",
            name: storage_id,
        });
    }
    if app.catalog().namespace(&ns)?.is_none() {
        return Err(KalamError::NotFound {
            kind: "Namespace",
            name: ns.to_string(),
        });
    }

    // Columns.
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
        match constraint {
            TableConstraint::PrimaryKey(pk) => {
                for c in &pk.columns {
                    match &c.column.expr {
                        Expr::Identifier(i) => {
                            pk_names.push(fold(&i.value, i.quote_style.is_some()))
                        }
                        other => {
                            return Err(KalamError::InvalidSql(format!(
                                "Unsupported PRIMARY KEY column {other}"
                            )));
                        }
                    }
                }
            }
            TableConstraint::Unique(u) => {
                return Err(unique_unsupported(&u.to_string()));
            }
            other => {
                return Err(KalamError::InvalidSql(format!(
                    "Unsupported table constraint {other}"
                )));
            }
        }
    }
    match pk_names.as_slice() {
        [] if table_type == TableType::Stream => {}
        [] => {
            return Err(KalamError::InvalidSql(format!(
                "{} tables need a primary key: declare one column PRIMARY KEY",
                table_type.as_str()
            )));
        }
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
        }
        _ => {
            return Err(KalamError::InvalidSql(
                "Only a one-column primary key is supported".into(),
            ));
        }
    }

    let id = TableId::new(ns.clone(), table_name.clone());
    if app
        .catalog()
        .view(ns.as_str(), table_name.as_str())?
        .is_some()
    {
        return Err(KalamError::AlreadyExists {
            kind: "View",
            name: id.to_string(),
        });
    }
    if app.catalog().table(&id)?.is_some() {
        return if ct.if_not_exists {
            Ok(Output::Message(format!("Table '{id}' already exists")))
        } else {
            Err(KalamError::AlreadyExists {
                kind: "Table",
                name: id.to_string(),
            })
        };
    }
    let t = now();
    let def = TableDefinition {
        namespace: ns,
        name: table_name,
        table_type,
        next_column_id: columns.len() as u32 + 1,
        columns,
        version: 1,
        access_level: (table_type == TableType::Shared)
            .then(|| access_level.unwrap_or(AccessLevel::Private)),
        ttl_seconds: ttl,
        flush_policy,
        storage_id: StorageId::new(storage_id),
        created_at: t,
        updated_at: t,
        comment: None,
    };
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
    Ok(Output::Message(format!(
        "{} table '{id}' created",
        table_type.as_str()
    )))
}

async fn drop_table_by_id(app: &AppContext, ctx: &ExecCtx, id: &TableId) -> Result<()> {
    // Invalidate before and after removing the definition: a lookup racing the drop may have
    // re-cached the old entry in between.
    app.schema_registry().invalidate(id);
    let def = app.catalog().drop_table(id)?;
    app.schema_registry().invalidate(id);
    app.tables().forget(id);
    if let Some(listener) = app.tables().change_listener() {
        listener.table_dropped(id);
    }
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

/// Which storage job a statement runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum StorageJob {
    /// `flush`
    Flush,
    /// `compact`
    Compact,
}

/// Runs `kind` on `table` as a recorded job; returns the line for the reply.
pub(crate) async fn run_storage_job(
    app: &AppContext,
    table: &Arc<CachedTable>,
    kind: StorageJob,
    trigger: &str,
    by: &str,
    attempt: u32,
) -> Result<String> {
    let target = table.def.table_id().to_string();
    let job_type = match kind {
        StorageJob::Flush => "flush",
        StorageJob::Compact => "compact",
    };
    let outcome = app
        .jobs()
        .run(job_type, &target, trigger, by, attempt, |cancel| {
            let target = target.clone();
            async move {
                Ok(match kind {
                    StorageJob::Flush => {
                        let s = app.tables().flush_table(table, &cancel).await?;
                        JobReport {
                            rows: s.rows,
                            bytes: s.bytes,
                            message: format!(
                                "Flushed {} row(s) of {target} into {} segment(s), {} bytes",
                                s.rows, s.segments, s.bytes
                            ),
                        }
                    }
                    StorageJob::Compact => {
                        let (before, after) = app.tables().compact_table(table, &cancel).await?;
                        JobReport {
                            rows: 0,
                            bytes: 0,
                            message: format!(
                                "Compacted {target}: {before} segment(s) into {after}"
                            ),
                        }
                    }
                })
            }
        })
        .await?;
    Ok(job_line(outcome, job_type, &target))
}

/// The reply line of a job a statement ran.
fn job_line(outcome: JobOutcome, job_type: &str, target: &str) -> String {
    match outcome {
        JobOutcome::Ran(job) => format!(
            "{} (job {}{})",
            job.message.unwrap_or_default(),
            job.job_id,
            if job.status == "cancelled" {
                ", cancelled"
            } else {
                ""
            }
        ),
        JobOutcome::AlreadyRunning(id) => {
            format!("A {job_type} of {target} is already running (job {id})")
        }
    }
}

/// The table a `STORAGE … TABLE` statement names (service, dba, system).
fn storage_target(app: &AppContext, ctx: &ExecCtx, t: &TableRef) -> Result<Arc<CachedTable>> {
    access::check_storage_maintenance(&ctx.identity)?;
    let id = resolve(ctx, t);
    let table = app
        .schema_registry()
        .get(&id)?
        .ok_or_else(|| KalamError::NotFound {
            kind: "Table",
            name: id.to_string(),
        })?;
    if table.def.table_type == TableType::Stream {
        return Err(KalamError::InvalidSql(format!(
            "'{id}' is a STREAM table: its rows expire by TTL and are never flushed or compacted"
        )));
    }
    Ok(table)
}

/// The tables a `STORAGE … ALL [IN ns]` statement covers (service, dba, system).
fn storage_targets(
    app: &AppContext,
    ctx: &ExecCtx,
    ns: Option<&str>,
) -> Result<Vec<Arc<CachedTable>>> {
    access::check_storage_maintenance(&ctx.identity)?;
    let ns = ns.map(NamespaceId::new);
    if let Some(ns) = &ns
        && app.catalog().namespace(ns)?.is_none()
    {
        return Err(KalamError::NotFound {
            kind: "Namespace",
            name: ns.to_string(),
        });
    }
    let mut tables = Vec::new();
    for def in app.catalog().tables(ns.as_ref())? {
        if def.table_type != TableType::Stream {
            tables.extend(app.schema_registry().get(&def.table_id())?);
        }
    }
    Ok(tables)
}

/// `STORAGE FLUSH TABLE ns.t`: writes every scope's hot rows to Parquet.
pub async fn flush_table(app: &AppContext, ctx: &ExecCtx, t: &TableRef) -> Result<Output> {
    let id = resolve(ctx, t);
    if id.namespace.as_str() == "system" {
        return flush_system_table(app, ctx, id.table.as_str()).await;
    }
    let table = storage_target(app, ctx, t)?;
    storage_jobs(app, ctx, &[table], StorageJob::Flush).await
}

/// `STORAGE FLUSH TABLE system.audit_log` (dba/system); see [`crate::system_flush`].
async fn flush_system_table(app: &AppContext, ctx: &ExecCtx, name: &str) -> Result<Output> {
    access::check_admin(&ctx.identity, "flush system tables")?;
    if !name.eq_ignore_ascii_case("audit_log") {
        return Err(KalamError::InvalidInput(format!(
            "system.{name} is not flushed: only system.audit_log grows without bound; the other \
             system tables are small catalog records"
        )));
    }
    let by = ctx.identity.user_id.as_str();
    let outcome = app
        .jobs()
        .run("flush", "system.audit_log", "manual", by, 1, |_| async {
            let files = app.tables().cold().files("local")?;
            let (rows, bytes) = app
                .system_cold()
                .flush_audit(&files, app.catalog(), app.seq())
                .await?;
            Ok(JobReport {
                rows,
                bytes,
                message: format!(
                    "Flushed {rows} row(s) of system.audit_log into {} segment(s), {bytes} bytes",
                    u64::from(rows > 0)
                ),
            })
        })
        .await?;
    Ok(Output::Message(job_line(
        outcome,
        "flush",
        "system.audit_log",
    )))
}

/// `STORAGE FLUSH ALL [IN ns]`: flushes every USER and SHARED table (of one namespace).
pub async fn flush_all(app: &AppContext, ctx: &ExecCtx, ns: Option<&str>) -> Result<Output> {
    let tables = storage_targets(app, ctx, ns)?;
    storage_jobs(app, ctx, &tables, StorageJob::Flush).await
}

/// `STORAGE COMPACT TABLE ns.t`: merges each scope's segments into one.
pub async fn compact_table(app: &AppContext, ctx: &ExecCtx, t: &TableRef) -> Result<Output> {
    let table = storage_target(app, ctx, t)?;
    storage_jobs(app, ctx, &[table], StorageJob::Compact).await
}

/// `STORAGE COMPACT ALL [IN ns]`.
pub async fn compact_all(app: &AppContext, ctx: &ExecCtx, ns: Option<&str>) -> Result<Output> {
    let tables = storage_targets(app, ctx, ns)?;
    storage_jobs(app, ctx, &tables, StorageJob::Compact).await
}

/// Runs one job per table, in turn; the reply has a line per table.
async fn storage_jobs(
    app: &AppContext,
    ctx: &ExecCtx,
    tables: &[Arc<CachedTable>],
    kind: StorageJob,
) -> Result<Output> {
    let mut lines = Vec::with_capacity(tables.len());
    for table in tables {
        if kind == StorageJob::Flush {
            app.tables().flushes().forget(&table.def.table_id());
        }
        let by = ctx.identity.user_id.as_str();
        match run_storage_job(app, table, kind, "manual", by, 1).await {
            Ok(line) => lines.push(line),
            // Dropped while the statement ran (another table of an ALL may still be done).
            Err(KalamError::NotFound { kind: "Table", .. }) if tables.len() > 1 => {
                lines.push(format!(
                    "Table '{}' was dropped meanwhile; skipped",
                    table.def.table_id()
                ))
            }
            Err(e) => return Err(e),
        }
    }
    if lines.is_empty() {
        lines.push("No tables".into());
    }
    Ok(Output::Message(lines.join("\n")))
}

/// `CREATE STORAGE`: registers a filesystem or S3 storage after a write/read/list/delete probe
/// of it succeeds (dba/system).
pub async fn create_storage(
    app: &AppContext,
    ctx: &ExecCtx,
    id: &str,
    storage_type: &str,
    options: Vec<(String, String)>,
) -> Result<Output> {
    access::check_admin(&ctx.identity, "create storages")?;
    validate_identifier("storage", id).map_err(|e| KalamError::InvalidSql(e.to_string()))?;
    if app.catalog().storage(id)?.is_some() {
        return Err(KalamError::AlreadyExists {
            kind: "Storage",
            name: id.to_string(),
        });
    }
    let now = chrono::Utc::now().timestamp_micros();
    let record = kalamdb_catalog::storages::record_from_options(id, storage_type, options, now)?;
    app.catalog().put_storage(&record)?;
    // Probe before keeping it: a storage nobody can write to is refused.
    let probe = app
        .tables()
        .cold()
        .probe(id, &app.seq().next_id().to_string())
        .await;
    let failed = match &probe {
        Ok(p) if p.error.is_none() => None,
        Ok(p) => p.error.clone(),
        Err(e) => Some(e.to_string()),
    };
    if let Some(why) = failed {
        app.tables().cold().forget_storage(id);
        app.catalog().delete_storage(id)?;
        return Err(KalamError::InvalidInput(format!(
            "Storage '{id}' failed its check: {why}"
        )));
    }
    Ok(Output::Message(format!("Storage '{id}' created")))
}

/// `DROP STORAGE [IF EXISTS] id`: refused for `local` and while a table uses it.
pub fn drop_storage(app: &AppContext, ctx: &ExecCtx, id: &str, if_exists: bool) -> Result<Output> {
    access::check_admin(&ctx.identity, "drop storages")?;
    if id == "local" {
        return Err(KalamError::PermissionDenied(
            "The built-in storage 'local' cannot be dropped".into(),
        ));
    }
    if app.catalog().storage(id)?.is_none() {
        return if if_exists {
            Ok(Output::Message(format!("Storage '{id}' does not exist")))
        } else {
            Err(KalamError::NotFound {
                kind: "Storage",
                name: id.to_string(),
            })
        };
    }
    let users: Vec<String> = app
        .catalog()
        .tables(None)?
        .into_iter()
        .filter(|d| d.storage_id.as_str() == id)
        .map(|d| d.table_id().to_string())
        .collect();
    if !users.is_empty() {
        return Err(KalamError::Constraint(format!(
            "Storage '{id}' is used by {} table(s): {}",
            users.len(),
            users.join(", ")
        )));
    }
    app.catalog().delete_storage(id)?;
    app.tables().cold().forget_storage(id);
    Ok(Output::Message(format!("Storage '{id}' dropped")))
}

/// `STORAGE CHECK id`: a write/read/list/delete probe (dba/system).
pub async fn storage_check(app: &AppContext, ctx: &ExecCtx, id: &str) -> Result<Output> {
    access::check_admin(&ctx.identity, "check storages")?;
    let p = app
        .tables()
        .cold()
        .probe(id, &app.seq().next_id().to_string())
        .await?;
    table_output(
        &[
            ("storage_id", K::Text, false),
            ("writable", K::Boolean, false),
            ("readable", K::Boolean, false),
            ("listable", K::Boolean, false),
            ("deletable", K::Boolean, false),
            ("latency_ms", K::Double, false),
            ("error", K::Text, true),
        ],
        vec![vec![
            Value::Text(id.to_string()),
            Value::Bool(p.writable),
            Value::Bool(p.readable),
            Value::Bool(p.listable),
            Value::Bool(p.deletable),
            Value::F64(p.latency_ms),
            p.error.map(Value::Text).unwrap_or(Value::Null),
        ]],
    )
}

/// `KILL JOB 'id'`: asks a running job to stop at its next checkpoint (dba/system).
pub fn kill_job(app: &AppContext, ctx: &ExecCtx, job_id: &str) -> Result<Output> {
    access::check_admin(&ctx.identity, "kill jobs")?;
    if !app.jobs().kill(job_id) {
        return Err(KalamError::NotFound {
            kind: "Running job",
            name: job_id.to_string(),
        });
    }
    Ok(Output::Message(format!("Job '{job_id}' asked to stop")))
}

/// `KILL LIVE QUERY 'live_id'`: admins end any subscription, others only their own.
pub fn kill_live_query(app: &AppContext, ctx: &ExecCtx, live_id: &str) -> Result<Output> {
    let not_found = || KalamError::NotFound {
        kind: "Live query",
        name: live_id.to_string(),
    };
    let listener = app.tables().change_listener().ok_or_else(not_found)?;
    let owner = listener
        .live_queries()
        .into_iter()
        .find(|q| q.live_id == live_id)
        .map(|q| q.user_id)
        .ok_or_else(not_found)?;
    if owner != ctx.identity.user_id.as_str() {
        access::check_admin(&ctx.identity, "kill other users' live queries")?;
    }
    if !listener.kill_live_query(live_id) {
        return Err(not_found());
    }
    Ok(Output::Message(format!("Live query '{live_id}' killed")))
}

/// `CREATE USER`.
pub async fn create_user(
    app: &AppContext,
    ctx: &ExecCtx,
    name: &str,
    pw: &str,
    role: Option<&str>,
    email: Option<String>,
) -> Result<Output> {
    access::check_admin(&ctx.identity, "manage users")?;
    let id = UserId::parse(name).map_err(|e| KalamError::InvalidSql(e.to_string()))?;
    let role = match role {
        None => Role::User,
        Some(r) => Role::parse(r).ok_or_else(|| {
            KalamError::InvalidSql(format!(
                "Unknown role '{r}': use user, service, dba or system"
            ))
        })?,
    };
    if role == Role::System && ctx.identity.role != Role::System {
        return Err(KalamError::PermissionDenied(
            "Only a system user may create system users".into(),
        ));
    }
    password::check_policy(pw, app.auth().min_password_length())
        .map_err(KalamError::InvalidInput)?;
    let mut note = "";
    match app.catalog().user(&id)? {
        Some(u) if u.deleted_at.is_none() => {
            return Err(KalamError::AlreadyExists {
                kind: "User",
                name: id.to_string(),
            });
        }
        // The user id is the name: a new account must not inherit a dropped one's rows.
        Some(_) => {
            purge_user_rows(app, &id).await?;
            note = " (rows of the dropped account of that name were removed)";
        }
        None => {}
    }
    app.auth()
        .create_user(&id, pw, role, email)
        .await
        .map_err(|e| KalamError::Internal(e.to_string()))?;
    Ok(Output::Message(format!(
        "User '{id}' created with role '{role}'{note}"
    )))
}

/// Removes every row `user` holds in USER and STREAM tables, hot and flushed.
async fn purge_user_rows(app: &AppContext, user: &UserId) -> Result<()> {
    let scope = kalamdb_tables::rows::Scope::User(user.clone());
    for def in app.catalog().tables(None)? {
        if def.table_type != TableType::Shared {
            app.tables().remove_scope_data(&def, &scope).await?;
        }
    }
    Ok(())
}

/// `DROP USER`: a soft delete; the user's tokens stop working at once.
pub fn drop_user(app: &AppContext, ctx: &ExecCtx, name: &str, if_exists: bool) -> Result<Output> {
    access::check_admin(&ctx.identity, "manage users")?;
    let id = UserId::new(name);
    if name == "root" || id == ctx.identity.user_id {
        return Err(KalamError::PermissionDenied(format!(
            "User '{name}' cannot be dropped"
        )));
    }
    match app.catalog().user(&id)? {
        Some(u)
            if u.deleted_at.is_none()
                && u.role == Role::System
                && ctx.identity.role != Role::System =>
        {
            Err(KalamError::PermissionDenied(format!(
                "Only a system user may drop '{id}'"
            )))
        }
        Some(mut u) if u.deleted_at.is_none() => {
            u.deleted_at = Some(now());
            u.updated_at = now();
            app.catalog().put_user(&u)?;
            if let Some(listener) = app.tables().change_listener() {
                listener.user_revoked(&id);
            }
            Ok(Output::Message(format!("User '{id}' dropped")))
        }
        _ if if_exists => Ok(Output::Message(format!("User '{id}' does not exist"))),
        _ => Err(KalamError::NotFound {
            kind: "User",
            name: id.to_string(),
        }),
    }
}

/// `ALTER USER`: a user may change their own password and email; role changes and changes to
/// other users need dba/system. A role change makes tokens carrying the old role stop working.
pub async fn alter_user(
    app: &AppContext,
    ctx: &ExecCtx,
    name: &str,
    change: UserChange,
) -> Result<Output> {
    let id = UserId::new(name);
    let is_self = id == ctx.identity.user_id;
    if !is_self || matches!(change, UserChange::Role(_)) {
        access::check_admin(&ctx.identity, "manage users")?;
    }
    let mut user = match app.catalog().user(&id)? {
        Some(u) if u.deleted_at.is_none() => u,
        _ => {
            return Err(KalamError::NotFound {
                kind: "User",
                name: id.to_string(),
            });
        }
    };
    if user.role == Role::System && ctx.identity.role != Role::System {
        return Err(KalamError::PermissionDenied(format!(
            "Only a system user may alter '{id}'"
        )));
    }
    let what = match change {
        UserChange::Password(pw) => {
            password::check_policy(&pw, app.auth().min_password_length())
                .map_err(KalamError::InvalidInput)?;
            user.password_hash = app
                .auth()
                .hash_password(&pw)
                .await
                .map_err(|e| KalamError::Internal(e.to_string()))?;
            user.failed_login_attempts = 0;
            user.locked_until = None;
            user.revoke_tokens(now());
            "password"
        }
        UserChange::Role(r) => {
            let role = Role::parse(&r).ok_or_else(|| {
                KalamError::InvalidSql(format!(
                    "Unknown role '{r}': use user, service, dba or system"
                ))
            })?;
            if name == "root" {
                return Err(KalamError::PermissionDenied(
                    "The role of 'root' cannot be changed".into(),
                ));
            }
            if role == Role::System && ctx.identity.role != Role::System {
                return Err(KalamError::PermissionDenied(
                    "Only a system user may grant the system role".into(),
                ));
            }
            user.role = role;
            user.revoke_tokens(now());
            "role"
        }
        UserChange::Email(e) => {
            user.email = Some(e);
            "email"
        }
    };
    user.updated_at = now();
    app.catalog().put_user(&user)?;
    // Connections opened with the account's earlier tokens end with them.
    if what != "email"
        && let Some(listener) = app.tables().change_listener()
    {
        listener.user_revoked(&id);
    }
    Ok(Output::Message(format!("User '{id}' {what} updated")))
}
