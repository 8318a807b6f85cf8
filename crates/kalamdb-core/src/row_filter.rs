//! Compiled WHERE clauses evaluated on stored row versions: live queries' filters
//! (`kalamdb-live`) and topic sources' (`ALTER TOPIC … ADD SOURCE … WHERE`).
//!
//! A clause is planned by DataFusion as the same WHERE of a SELECT is: the same functions
//! (JSON, ids, `->`/`->>`), casts, type coercion and three-valued logic, so a live query
//! delivers exactly the rows a SELECT with its WHERE returns. `CURRENT_USER()` and
//! `CURRENT_ROLE()` are bound to the subscriber and constant parts folded once, at compile
//! time (`NOW()` is the subscription's start). Rows are evaluated as Arrow batches holding only
//! the columns the clause reads; a row whose evaluation fails (a failing cast of its value)
//! does not match.

use datafusion::arrow::array::{Array, ArrayRef, AsArray, BooleanArray, Int64Array};
use datafusion::arrow::datatypes::{Schema, SchemaRef};
use datafusion::arrow::record_batch::{RecordBatch, RecordBatchOptions};
use datafusion::common::{DFSchema, TableReference};
use datafusion::execution::SessionState;
use datafusion::logical_expr::simplify::SimplifyContext;
use datafusion::optimizer::simplify_expressions::ExprSimplifier;
use datafusion::physical_expr::PhysicalExpr;
use datafusion::sql::sqlparser::ast::{
    Expr, ExprWithAlias, FunctionArguments, Value as SqlValue, visit_expressions_mut,
};
use kalamdb_catalog::error::KalamError;
use kalamdb_catalog::types::table_schema;
use kalamdb_catalog::value::{Value, to_array};
use kalamdb_commons::schema::{DELETED_COLUMN, SEQ_COLUMN};
use kalamdb_commons::{KalamDataType, TableDefinition};
use kalamdb_tables::rows::StoredRow;
use std::ops::ControlFlow;
use std::sync::Arc;

/// Whom a filter is compiled for: what `CURRENT_USER()` and `CURRENT_ROLE()` read, and the
/// session whose functions the clause may call.
#[derive(Debug, Clone, Copy)]
pub struct Caller<'a> {
    /// The session state (its function registry and options).
    pub state: &'a SessionState,
    /// `CURRENT_USER()`.
    pub user: &'a str,
    /// `CURRENT_ROLE()`, lower case.
    pub role: &'a str,
}

impl<'a> Caller<'a> {
    /// `identity` calling with the functions of `state`.
    pub fn of(state: &'a SessionState, identity: &'a crate::auth::Identity) -> Self {
        Self {
            state,
            user: identity.user_id.as_str(),
            role: identity.role.as_str(),
        }
    }
}

/// A column of the batch a filter evaluates.
#[derive(Debug, Clone)]
enum Input {
    Stored(Stored),
    Seq,
    Deleted,
}

/// A stored column the clause reads.
#[derive(Debug, Clone)]
struct Stored {
    id: u32,
    ty: KalamDataType,
    /// For a column added by `ALTER TABLE`: the `_seq` of the change and what older rows
    /// read in it (as queries read them).
    added: Option<(i64, Value)>,
}

impl Stored {
    fn cell<'a>(&'a self, row: &'a StoredRow) -> &'a Value {
        match &self.added {
            Some((at, missing))
                if row.seq < *at && !row.cells.iter().any(|(id, _)| *id == self.id) =>
            {
                missing
            }
            _ => row.cell(self.id),
        }
    }
}

/// A compiled WHERE clause; see the module doc.
#[derive(Debug)]
pub struct Filter {
    expr: Arc<dyn PhysicalExpr>,
    /// The batch's columns, in the order of `schema`.
    inputs: Vec<Input>,
    schema: SchemaRef,
}

fn invalid(e: impl std::fmt::Display) -> KalamError {
    KalamError::InvalidSql(e.to_string())
}

impl Filter {
    /// Compiles `e` over the columns of `def` for `caller`. Unknown columns, functions and
    /// shapes a WHERE cannot hold (aggregates, subqueries) are `INVALID_SQL`.
    pub fn compile(
        e: &Expr,
        def: &TableDefinition,
        caller: Caller<'_>,
    ) -> Result<Self, KalamError> {
        let mut e = e.clone();
        crate::json_ops::bind_json_arrows(&mut e);
        bind_caller(&mut e, caller.user, caller.role);
        let qualifier = TableReference::bare(def.name.as_str());
        let full = table_schema(def);
        let df_full =
            DFSchema::try_from_qualified_schema(qualifier.clone(), &full).map_err(invalid)?;
        let logical = caller
            .state
            .create_logical_expr_from_sql_expr(
                ExprWithAlias {
                    expr: e,
                    alias: None,
                },
                &df_full,
            )
            .map_err(invalid)?;
        let logical =
            crate::uuid_literals::canonical_literals(logical, &df_full).map_err(invalid)?;
        let simplifier = ExprSimplifier::new(
            SimplifyContext::builder()
                .with_schema(Arc::new(df_full.clone()))
                .with_config_options(Arc::clone(caller.state.config_options()))
                .with_current_time()
                .build(),
        );
        let logical = simplifier
            .coerce(logical, &df_full)
            .and_then(|e| simplifier.simplify(e))
            .map_err(invalid)?;

        // Only the columns the clause reads go into the batches it evaluates.
        let used = logical.column_refs();
        let mut fields = Vec::new();
        let mut inputs = Vec::new();
        for field in full.fields() {
            if !used.iter().any(|c| c.name == *field.name()) {
                continue;
            }
            let input = match field.name().as_str() {
                SEQ_COLUMN => Input::Seq,
                DELETED_COLUMN => Input::Deleted,
                name => match def.columns.iter().find(|c| c.name == name) {
                    Some(c) => Input::Stored(Stored {
                        id: c.column_id,
                        ty: c.data_type,
                        added: c
                            .added_at_seq
                            .zip(kalamdb_catalog::defaults::missing_value(c)),
                    }),
                    None => return Err(invalid(format!("unknown column {name}"))),
                },
            };
            inputs.push(input);
            // Nullable whatever the column says: a row stored before a NOT NULL column was
            // added holds no value for it.
            fields.push(Arc::new(field.as_ref().clone().with_nullable(true)));
        }
        let schema = Arc::new(Schema::new(fields));
        let df_schema = DFSchema::try_from_qualified_schema(qualifier, &schema).map_err(invalid)?;
        let expr = caller
            .state
            .create_physical_expr(logical, &df_schema)
            .map_err(invalid)?;
        match expr.data_type(&schema).map_err(invalid)? {
            datafusion::arrow::datatypes::DataType::Boolean
            | datafusion::arrow::datatypes::DataType::Null => {}
            other => {
                return Err(invalid(format!(
                    "WHERE needs a condition, not a value of type {other}"
                )));
            }
        }
        Ok(Self {
            expr,
            inputs,
            schema,
        })
    }

    /// Whether `row` passes (the clause is TRUE for it).
    pub fn matches(&self, row: &StoredRow) -> bool {
        self.mask(&[row]).first().copied().unwrap_or(false)
    }

    /// For each of `rows`, whether it passes.
    pub fn mask(&self, rows: &[&StoredRow]) -> Vec<bool> {
        match self.evaluate(rows) {
            Ok(result) => (0..rows.len())
                .map(|i| result.is_valid(i) && result.value(i))
                .collect(),
            Err(e) => {
                // One failing row (a cast of its value) must not hide the others.
                if rows.len() > 1 {
                    return rows.iter().map(|r| self.matches(r)).collect();
                }
                tracing::debug!(error = %e, "filter evaluation failed; the row does not match");
                vec![false; rows.len()]
            }
        }
    }

    fn evaluate(&self, rows: &[&StoredRow]) -> Result<BooleanArray, KalamError> {
        let columns = self
            .inputs
            .iter()
            .map(|input| -> Result<ArrayRef, KalamError> {
                Ok(match input {
                    Input::Stored(c) => to_array(rows.iter().map(|r| c.cell(r)), &c.ty)?,
                    Input::Seq => {
                        Arc::new(Int64Array::from_iter_values(rows.iter().map(|r| r.seq)))
                    }
                    Input::Deleted => Arc::new(BooleanArray::from_iter(
                        rows.iter().map(|r| Some(r.deleted)),
                    )),
                })
            })
            .collect::<Result<Vec<_>, _>>()?;
        let options = RecordBatchOptions::new().with_row_count(Some(rows.len()));
        let batch = RecordBatch::try_new_with_options(Arc::clone(&self.schema), columns, &options)
            .map_err(|e| KalamError::Internal(e.to_string()))?;
        let result = self
            .expr
            .evaluate(&batch)
            .and_then(|v| v.into_array(rows.len()))
            .map_err(KalamError::from_datafusion)?;
        match result.as_boolean_opt() {
            Some(b) => Ok(b.clone()),
            // A clause that is NULL for every row (`WHERE NULL`).
            None => Ok(BooleanArray::new_null(rows.len())),
        }
    }

    /// The ids of the stored columns the clause reads, added to `out`.
    pub fn column_ids(&self, out: &mut Vec<u32>) {
        out.extend(self.inputs.iter().filter_map(|i| match i {
            Input::Stored(c) => Some(c.id),
            _ => None,
        }));
    }
}

/// Replaces `CURRENT_USER` and `CURRENT_ROLE()` in `expr` (and below) with `user` and `role`.
pub fn bind_caller(expr: &mut Expr, user: &str, role: &str) {
    let _ = visit_expressions_mut(expr, |e| {
        bind_caller_in(e, user, role);
        ControlFlow::<()>::Continue(())
    });
}

/// Replaces `expr` with `user` or `role` if it is `CURRENT_USER` or `CURRENT_ROLE()`.
pub(crate) fn bind_caller_in(expr: &mut Expr, user: &str, role: &str) -> bool {
    let Expr::Function(f) = expr else {
        return false;
    };
    let no_args = match &f.args {
        FunctionArguments::None => true,
        FunctionArguments::List(l) => l.args.is_empty(),
        FunctionArguments::Subquery(_) => false,
    };
    let name = f.name.to_string();
    let value = if !no_args {
        return false;
    } else if name.eq_ignore_ascii_case("CURRENT_USER") {
        user
    } else if name.eq_ignore_ascii_case("CURRENT_ROLE") {
        role
    } else {
        return false;
    };
    *expr = Expr::value(SqlValue::SingleQuotedString(value.to_string()));
    true
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::execution::SessionStateBuilder;
    use kalamdb_commons::{ColumnDefinition, NamespaceId, TableId, TableName, TableType};

    /// The WHERE clause `clause`, parsed.
    fn clause(text: &str) -> Expr {
        datafusion::sql::sqlparser::parser::Parser::new(
            &datafusion::sql::sqlparser::dialect::GenericDialect {},
        )
        .try_with_sql(text)
        .unwrap()
        .parse_expr()
        .unwrap()
    }

    fn def() -> TableDefinition {
        let col = |id: u32, name: &str, t: KalamDataType| ColumnDefinition {
            column_id: id,
            name: name.into(),
            ordinal: id,
            data_type: t,
            nullable: true,
            primary_key: id == 1,
            default: None,
            added_at_seq: None,
            missing_value: None,
        };
        TableDefinition::new(
            TableId::new(NamespaceId::new("app"), TableName::new("t")),
            TableType::Shared,
            vec![
                col(1, "id", KalamDataType::BigInt),
                col(2, "title", KalamDataType::Text),
                col(3, "done", KalamDataType::Boolean),
                col(4, "owner", KalamDataType::Text),
                col(5, "doc", KalamDataType::Json),
            ],
        )
    }

    fn row(id: i64, title: Option<&str>, done: bool, owner: &str) -> StoredRow {
        StoredRow {
            seq: 100 + id,
            deleted: false,
            cells: vec![
                (1, Value::I64(id)),
                (
                    2,
                    title.map(|t| Value::Text(t.into())).unwrap_or(Value::Null),
                ),
                (3, Value::Bool(done)),
                (4, Value::Text(owner.into())),
                (5, Value::Text(format!(r#"{{"n": {id}, "tags": ["a"]}}"#))),
            ],
        }
    }

    fn state() -> SessionState {
        let mut state = SessionStateBuilder::new().with_default_features().build();
        datafusion_functions_json::register_all(&mut state).unwrap();
        state
    }

    fn compile(clause: &str) -> Result<Filter, KalamError> {
        let state = state();
        let caller = Caller {
            state: &state,
            user: "alice",
            role: "user",
        };
        Filter::compile(&self::clause(clause), &def(), caller)
    }

    fn matches(clause: &str, r: &StoredRow) -> bool {
        compile(clause).unwrap().matches(r)
    }

    #[test]
    fn cells_written_before_a_widening_compare_by_value() {
        // `id` is BIGINT now; a cell stored while it was INT (or SMALLINT) still compares.
        let mut r = row(5, Some("x"), false, "alice");
        r.cells[0].1 = Value::I32(5);
        assert!(matches("id = 5", &r));
        assert!(matches("id BETWEEN 4 AND 6", &r));
        assert!(matches("id IN (1, 5)", &r));
        r.cells[0].1 = Value::I16(7);
        assert!(matches("id > 6", &r));
        assert!(!matches("id < 6", &r));
    }

    #[test]
    fn evaluates_conditions_as_sql_does() {
        let r = row(5, Some("Write spec"), false, "alice");
        let null_title = row(6, None, true, "bob");
        for (clause, want) in [
            ("id = 5", true),
            ("5 = id", true),
            ("t.id = 5", true),
            ("id + 1 = 6", true),
            ("id > 4 AND id <= 5", true),
            ("id <> 5 OR done = false", true),
            ("NOT (id = 5)", false),
            ("id IN (1, 5, 9)", true),
            ("id NOT IN (1, 9)", true),
            ("id BETWEEN 1 AND 4", false),
            ("title LIKE 'Write%'", true),
            ("title ILIKE 'write%'", true),
            ("lower(title) = 'write spec'", true),
            ("done IS FALSE", true),
            ("title IS NOT NULL", true),
            ("owner = CURRENT_USER()", true),
            ("CURRENT_ROLE() = 'user'", true),
            ("_seq > 100", true),
            ("json_get_int(doc, 'n') = 5", true),
            ("doc->>'n' = '5'", true),
            ("json_length(doc, 'tags') = 1", true),
            ("json_contains(doc, 'missing')", false),
        ] {
            assert_eq!(matches(clause, &r), want, "{clause}");
        }
        for (clause, want) in [
            ("title = 'x'", false),
            ("NOT (title = 'x')", false),
            ("title IS NULL", true),
            ("owner = CURRENT_USER()", false),
        ] {
            assert_eq!(matches(clause, &null_title), want, "{clause} on NULL title");
        }
    }

    #[test]
    fn rows_older_than_an_added_column_read_its_default() {
        let mut def = def();
        def.columns.push(ColumnDefinition {
            column_id: 6,
            name: "flag".into(),
            ordinal: 6,
            data_type: KalamDataType::Int,
            nullable: false,
            primary_key: false,
            default: None,
            added_at_seq: Some(150),
            missing_value: Some("7".into()),
        });
        let state = state();
        let caller = Caller {
            state: &state,
            user: "alice",
            role: "user",
        };
        let f = Filter::compile(&clause("flag = 7"), &def, caller).unwrap();
        let old = row(5, Some("x"), false, "alice"); // _seq 105, before the column
        let mut new = row(60, Some("x"), false, "alice"); // _seq 160, after it
        assert_eq!(f.mask(&[&old, &new]), vec![true, false]);
        new.cells.push((6, Value::I32(7)));
        assert_eq!(f.mask(&[&old, &new]), vec![true, true]);
    }

    #[test]
    fn a_batch_is_judged_row_by_row() {
        let rows = [
            row(1, Some("a"), false, "x"),
            row(2, None, false, "x"),
            row(3, Some("c"), true, "x"),
        ];
        let refs: Vec<&StoredRow> = rows.iter().collect();
        let f = compile("title IS NOT NULL AND NOT done").unwrap();
        assert_eq!(f.mask(&refs), vec![true, false, false]);
        let mut ids = Vec::new();
        f.column_ids(&mut ids);
        assert_eq!(ids, vec![2, 3]);
    }

    #[test]
    fn refuses_unknown_columns_and_non_conditions() {
        for clause in [
            "nope = 1",
            "id = 'abc'",
            "id + 1",
            "count(id) > 1",
            "nofunc(id)",
        ] {
            let err = compile(clause).unwrap_err();
            assert_eq!(err.code().as_str(), "INVALID_SQL", "{clause}: {err}");
        }
    }
}
