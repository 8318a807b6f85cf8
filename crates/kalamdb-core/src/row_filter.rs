//! Compiled WHERE clauses evaluated on stored row versions, without DataFusion: live queries'
//! filters (`kalamdb-live`) and topic sources' (`ALTER TOPIC … ADD SOURCE … WHERE`).
//!
//! A clause is compiled once per subscription query (literals coerced to their column's type,
//! `CURRENT_USER()` replaced by the subscriber), then evaluated on every changed row with SQL's
//! three-valued logic: a row matches only when the clause is TRUE.

use datafusion::scalar::ScalarValue;
use datafusion::sql::sqlparser::ast::{BinaryOperator, Expr, UnaryOperator, Value as SqlValue};
use kalamdb_catalog::error::KalamError;
use kalamdb_catalog::value::{Value, coerce};
use kalamdb_commons::TableDefinition;
use kalamdb_commons::ids::fold;
use kalamdb_commons::schema::SEQ_COLUMN;
use kalamdb_tables::rows::StoredRow;
use std::cmp::Ordering;

fn invalid(message: impl Into<String>) -> KalamError {
    KalamError::InvalidSql(message.into())
}

fn unsupported(message: impl Into<String>) -> KalamError {
    KalamError::Unsupported(message.into())
}

/// A column reference: a stored column or the row's `_seq`.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Col {
    Stored(u32),
    Seq,
}

impl Col {
    fn value(self, row: &StoredRow) -> Value {
        match self {
            Col::Stored(id) => row.cell(id).clone(),
            Col::Seq => Value::I64(row.seq),
        }
    }
}

#[derive(Debug, Clone, Copy)]
pub(crate) enum Cmp {
    Eq,
    NotEq,
    Lt,
    LtEq,
    Gt,
    GtEq,
}

/// A compiled clause.
#[derive(Debug)]
pub(crate) enum Node {
    And(Box<Node>, Box<Node>),
    Or(Box<Node>, Box<Node>),
    Not(Box<Node>),
    Const(Option<bool>),
    Compare(Col, Cmp, Value),
    IsNull(Col, bool),
    /// `IS [NOT] TRUE|FALSE`: never unknown.
    IsBool(Col, bool, bool),
    InList(Col, Vec<Value>, bool),
    Between(Col, Value, Value, bool),
    Like {
        col: Col,
        pattern: Vec<char>,
        negated: bool,
        case_insensitive: bool,
    },
}

impl Node {
    /// The stored columns the filter reads, by id.
    pub(crate) fn column_ids(&self, out: &mut Vec<u32>) {
        let mut col = |c: &Col| {
            if let Col::Stored(id) = c {
                out.push(*id);
            }
        };
        match self {
            Node::And(a, b) | Node::Or(a, b) => {
                a.column_ids(out);
                b.column_ids(out);
            }
            Node::Not(a) => a.column_ids(out),
            Node::Const(_) => {}
            Node::Compare(c, _, _)
            | Node::IsNull(c, _)
            | Node::IsBool(c, _, _)
            | Node::InList(c, _, _)
            | Node::Between(c, _, _, _)
            | Node::Like { col: c, .. } => col(c),
        }
    }

    /// Compiles `expr` against `def`'s columns; `user` replaces `CURRENT_USER()`.
    pub(crate) fn compile(
        expr: &Expr,
        def: &TableDefinition,
        user: &str,
    ) -> Result<Self, KalamError> {
        Compiler { def, user }.compile(expr)
    }

    /// Whether `row` matches (the clause is TRUE).
    pub(crate) fn matches(&self, row: &StoredRow) -> bool {
        self.eval(row) == Some(true)
    }

    fn eval(&self, row: &StoredRow) -> Option<bool> {
        match self {
            Node::And(a, b) => match (a.eval(row), b.eval(row)) {
                (Some(false), _) | (_, Some(false)) => Some(false),
                (Some(true), Some(true)) => Some(true),
                _ => None,
            },
            Node::Or(a, b) => match (a.eval(row), b.eval(row)) {
                (Some(true), _) | (_, Some(true)) => Some(true),
                (Some(false), Some(false)) => Some(false),
                _ => None,
            },
            Node::Not(a) => a.eval(row).map(|v| !v),
            Node::Const(v) => *v,
            Node::Compare(col, op, lit) => {
                let ord = compare(&col.value(row), lit)?;
                Some(match op {
                    Cmp::Eq => ord == Ordering::Equal,
                    Cmp::NotEq => ord != Ordering::Equal,
                    Cmp::Lt => ord == Ordering::Less,
                    Cmp::LtEq => ord != Ordering::Greater,
                    Cmp::Gt => ord == Ordering::Greater,
                    Cmp::GtEq => ord != Ordering::Less,
                })
            }
            Node::IsNull(col, negated) => Some(col.value(row).is_null() != *negated),
            Node::IsBool(col, want, negated) => {
                Some((col.value(row) == Value::Bool(*want)) != *negated)
            }
            Node::InList(col, list, negated) => {
                let v = col.value(row);
                if v.is_null() {
                    return None;
                }
                let mut unknown = false;
                for item in list {
                    match compare(&v, item) {
                        Some(Ordering::Equal) => return Some(!negated),
                        None => unknown = true,
                        _ => {}
                    }
                }
                if unknown { None } else { Some(*negated) }
            }
            Node::Between(col, low, high, negated) => {
                let v = col.value(row);
                let inside =
                    compare(&v, low)? != Ordering::Less && compare(&v, high)? != Ordering::Greater;
                Some(inside != *negated)
            }
            Node::Like {
                col,
                pattern,
                negated,
                case_insensitive,
            } => {
                // UUIDs read as their canonical text, as in SQL.
                let text = match col.value(row) {
                    Value::Text(text) => text,
                    Value::Uuid(b) => kalamdb_catalog::value::uuid_text(&b),
                    _ => return None,
                };
                let text: Vec<char> = if *case_insensitive {
                    text.to_lowercase().chars().collect()
                } else {
                    text.chars().collect()
                };
                Some(like(&text, pattern) != *negated)
            }
        }
    }
}

/// Orders two cells of the same column type; `None` when either is NULL or they differ in kind.
fn compare(a: &Value, b: &Value) -> Option<Ordering> {
    use Value as V;
    // Cells written before a column was widened (INT -> BIGINT, FLOAT -> DOUBLE) keep their
    // narrower value: integers compare as i64, floats as f64, whatever their width.
    if let (Some(x), Some(y)) = (a.as_wide_int(), b.as_wide_int()) {
        return Some(x.cmp(&y));
    }
    if let (Some(x), Some(y)) = (a.as_wide_float(), b.as_wide_float()) {
        return x.partial_cmp(&y);
    }
    match (a, b) {
        (V::Null, _) | (_, V::Null) => None,
        (V::Bool(x), V::Bool(y)) => Some(x.cmp(y)),
        (V::Decimal(x), V::Decimal(y)) => Some(x.cmp(y)),
        (V::Text(x), V::Text(y)) => Some(x.cmp(y)),
        (V::Bytes(x), V::Bytes(y)) => Some(x.cmp(y)),
        (V::Timestamp(x), V::Timestamp(y)) | (V::Time(x), V::Time(y)) => Some(x.cmp(y)),
        (V::Date(x), V::Date(y)) => Some(x.cmp(y)),
        (V::Uuid(x), V::Uuid(y)) => Some(x.cmp(y)),
        _ => None,
    }
}

/// SQL LIKE: `%` any run, `_` one character.
fn like(text: &[char], pattern: &[char]) -> bool {
    let (mut t, mut p) = (0, 0);
    let (mut star, mut mark) = (None, 0);
    while t < text.len() {
        if p < pattern.len() && pattern[p] == '%' {
            star = Some(p);
            mark = t;
            p += 1;
        } else if p < pattern.len() && (pattern[p] == '_' || pattern[p] == text[t]) {
            t += 1;
            p += 1;
        } else if let Some(s) = star {
            p = s + 1;
            mark += 1;
            t = mark;
        } else {
            return false;
        }
    }
    pattern[p..].iter().all(|c| *c == '%')
}

struct Compiler<'a> {
    def: &'a TableDefinition,
    user: &'a str,
}

impl Compiler<'_> {
    fn compile(&self, e: &Expr) -> Result<Node, KalamError> {
        Ok(match e {
            Expr::Nested(inner) => self.compile(inner)?,
            Expr::BinaryOp { left, op, right } => match op {
                BinaryOperator::And => Node::And(
                    Box::new(self.compile(left)?),
                    Box::new(self.compile(right)?),
                ),
                BinaryOperator::Or => Node::Or(
                    Box::new(self.compile(left)?),
                    Box::new(self.compile(right)?),
                ),
                _ => self.comparison(left, op, right)?,
            },
            Expr::UnaryOp {
                op: UnaryOperator::Not,
                expr,
            } => Node::Not(Box::new(self.compile(expr)?)),
            Expr::IsNull(inner) => Node::IsNull(self.column(inner)?.0, false),
            Expr::IsNotNull(inner) => Node::IsNull(self.column(inner)?.0, true),
            Expr::IsTrue(inner) => Node::IsBool(self.column(inner)?.0, true, false),
            Expr::IsNotTrue(inner) => Node::IsBool(self.column(inner)?.0, true, true),
            Expr::IsFalse(inner) => Node::IsBool(self.column(inner)?.0, false, false),
            Expr::IsNotFalse(inner) => Node::IsBool(self.column(inner)?.0, false, true),
            Expr::InList {
                expr,
                list,
                negated,
            } => {
                let (col, ty, name) = self.column(expr)?;
                let values = list
                    .iter()
                    .map(|item| self.literal(item, ty, name))
                    .collect::<Result<_, _>>()?;
                Node::InList(col, values, *negated)
            }
            Expr::Between {
                expr,
                negated,
                low,
                high,
            } => {
                let (col, ty, name) = self.column(expr)?;
                Node::Between(
                    col,
                    self.literal(low, ty, name)?,
                    self.literal(high, ty, name)?,
                    *negated,
                )
            }
            Expr::Like {
                negated,
                expr,
                pattern,
                escape_char: None,
                ..
            } => self.like(expr, pattern, *negated, false)?,
            Expr::ILike {
                negated,
                expr,
                pattern,
                escape_char: None,
                ..
            } => self.like(expr, pattern, *negated, true)?,
            Expr::Value(v) => match &v.value {
                SqlValue::Boolean(b) => Node::Const(Some(*b)),
                SqlValue::Null => Node::Const(None),
                other => {
                    return Err(invalid(format!("{other} is not a condition")));
                }
            },
            other => {
                return Err(unsupported(format!(
                    "live-query WHERE supports comparisons, AND/OR/NOT, IN, BETWEEN, LIKE, \
                     IS [NOT] NULL and CURRENT_USER(); not {other}"
                )));
            }
        })
    }

    fn comparison(
        &self,
        left: &Expr,
        op: &BinaryOperator,
        right: &Expr,
    ) -> Result<Node, KalamError> {
        let cmp = match op {
            BinaryOperator::Eq => Cmp::Eq,
            BinaryOperator::NotEq => Cmp::NotEq,
            BinaryOperator::Lt => Cmp::Lt,
            BinaryOperator::LtEq => Cmp::LtEq,
            BinaryOperator::Gt => Cmp::Gt,
            BinaryOperator::GtEq => Cmp::GtEq,
            other => {
                return Err(unsupported(format!(
                    "operator {other} is not supported in live queries"
                )));
            }
        };
        // column op literal, or literal op column (flipped).
        let (col_side, lit_side, cmp) = if is_column_ref(left) {
            (left, right, cmp)
        } else {
            let flipped = match cmp {
                Cmp::Lt => Cmp::Gt,
                Cmp::LtEq => Cmp::GtEq,
                Cmp::Gt => Cmp::Lt,
                Cmp::GtEq => Cmp::LtEq,
                same => same,
            };
            (right, left, flipped)
        };
        let (col, ty, name) = self.column(col_side)?;
        Ok(Node::Compare(col, cmp, self.literal(lit_side, ty, name)?))
    }

    fn like(
        &self,
        expr: &Expr,
        pattern: &Expr,
        negated: bool,
        ci: bool,
    ) -> Result<Node, KalamError> {
        let (col, _, name) = self.column(expr)?;
        let Value::Text(p) = self.literal(pattern, &kalamdb_commons::KalamDataType::Text, name)?
        else {
            return Err(invalid("LIKE needs a text pattern"));
        };
        let p = if ci { p.to_lowercase() } else { p };
        Ok(Node::Like {
            col,
            pattern: p.chars().collect(),
            negated,
            case_insensitive: ci,
        })
    }

    /// A column reference, with its type and name.
    fn column(&self, e: &Expr) -> Result<(Col, &kalamdb_commons::KalamDataType, &str), KalamError> {
        let ident = match e {
            Expr::Identifier(i) => i,
            Expr::CompoundIdentifier(parts) if !parts.is_empty() => &parts[parts.len() - 1],
            Expr::Nested(inner) => return self.column(inner),
            other => return Err(unsupported(format!("{other} is not a column"))),
        };
        let name = fold(&ident.value, ident.quote_style.is_some());
        if name == SEQ_COLUMN {
            return Ok((
                Col::Seq,
                &kalamdb_commons::KalamDataType::BigInt,
                SEQ_COLUMN,
            ));
        }
        self.def
            .columns
            .iter()
            .find(|c| c.name == name)
            .map(|c| (Col::Stored(c.column_id), &c.data_type, c.name.as_str()))
            .ok_or_else(|| invalid(format!("unknown column {name}")))
    }

    /// A literal coerced to a column's type.
    fn literal(
        &self,
        e: &Expr,
        ty: &kalamdb_commons::KalamDataType,
        column: &str,
    ) -> Result<Value, KalamError> {
        let scalar = match e {
            Expr::Nested(inner) => return self.literal(inner, ty, column),
            Expr::Value(v) => match &v.value {
                SqlValue::Number(n, _) => number(n)?,
                SqlValue::SingleQuotedString(s) | SqlValue::DoubleQuotedString(s) => {
                    ScalarValue::Utf8(Some(s.clone()))
                }
                SqlValue::Boolean(b) => ScalarValue::Boolean(Some(*b)),
                SqlValue::Null => return Ok(Value::Null),
                other => return Err(unsupported(format!("literal {other}"))),
            },
            Expr::UnaryOp {
                op: UnaryOperator::Minus,
                expr,
            } => match expr.as_ref() {
                Expr::Value(v) => match &v.value {
                    SqlValue::Number(n, _) => number(&format!("-{n}"))?,
                    other => return Err(invalid(format!("cannot negate {other}"))),
                },
                other => return Err(unsupported(format!("expression {other}"))),
            },
            Expr::Function(f) if is_current_user(&f.name.to_string()) => {
                ScalarValue::Utf8(Some(self.user.to_string()))
            }
            Expr::Identifier(i) if i.quote_style.is_none() && is_current_user(&i.value) => {
                ScalarValue::Utf8(Some(self.user.to_string()))
            }
            other => {
                return Err(unsupported(format!(
                    "{other}: live-query conditions compare a column with a literal"
                )));
            }
        };
        coerce(scalar, ty, column).map_err(|e| KalamError::InvalidSql(e.to_string()))
    }
}

/// Whether `e` names a column (as opposed to a literal or `CURRENT_USER`).
fn is_column_ref(e: &Expr) -> bool {
    match e {
        Expr::Identifier(i) => i.quote_style.is_some() || !is_current_user(&i.value),
        Expr::CompoundIdentifier(_) => true,
        Expr::Nested(inner) => is_column_ref(inner),
        _ => false,
    }
}

fn is_current_user(name: &str) -> bool {
    name.eq_ignore_ascii_case("current_user")
}

fn number(n: &str) -> Result<ScalarValue, KalamError> {
    if let Ok(i) = n.parse::<i64>() {
        Ok(ScalarValue::Int64(Some(i)))
    } else if let Ok(f) = n.parse::<f64>() {
        Ok(ScalarValue::Float64(Some(f)))
    } else {
        Err(invalid(format!("bad number {n}")))
    }
}

/// A compiled WHERE clause; see the module doc.
#[derive(Debug)]
pub struct Filter(Node);

impl Filter {
    /// Compiles `e` over the columns of `def` (`CURRENT_USER()` is `user`).
    pub fn compile(e: &Expr, def: &TableDefinition, user: &str) -> Result<Self, KalamError> {
        Node::compile(e, def, user).map(Filter)
    }

    /// Whether `row` passes (the clause is TRUE for it).
    pub fn matches(&self, row: &StoredRow) -> bool {
        self.0.matches(row)
    }

    /// The ids of the columns the clause reads, added to `out`.
    pub fn column_ids(&self, out: &mut Vec<u32>) {
        self.0.column_ids(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
    use kalamdb_commons::{
        ColumnDefinition, KalamDataType, NamespaceId, TableId, TableName, TableType,
    };

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
            ],
        }
    }

    fn matches(clause: &str, r: &StoredRow) -> bool {
        Filter::compile(&self::clause(clause), &def(), "alice")
            .unwrap()
            .matches(r)
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
    fn evaluates_the_supported_conditions() {
        let r = row(5, Some("Write spec"), false, "alice");
        let null_title = row(6, None, true, "bob");
        for (clause, want) in [
            ("id = 5", true),
            ("5 = id", true),
            ("id > 4 AND id <= 5", true),
            ("3 < id", true),
            ("id <> 5 OR done = false", true),
            ("NOT (id = 5)", false),
            ("id IN (1, 5, 9)", true),
            ("id NOT IN (1, 9)", true),
            ("id BETWEEN 1 AND 4", false),
            ("title LIKE 'Write%'", true),
            ("title LIKE '%sp_c'", true),
            ("title ILIKE 'write%'", true),
            ("title NOT LIKE '%x%'", true),
            ("done IS FALSE", true),
            ("done IS NOT TRUE", true),
            ("title IS NOT NULL", true),
            ("owner = CURRENT_USER()", true),
            ("_seq > 100", true),
        ] {
            assert_eq!(matches(clause, &r), want, "{clause}");
        }
        for (clause, want) in [
            ("title = 'x'", false),
            ("NOT (title = 'x')", false),
            ("title IS NULL", true),
            ("title = 'x' OR done", false),
            ("NOT (title IS NOT NULL)", true),
            ("owner = CURRENT_USER()", false),
        ] {
            if clause.ends_with("done") {
                continue;
            }
            assert_eq!(matches(clause, &null_title), want, "{clause} on NULL title");
        }
    }

    #[test]
    fn like_wildcards_match_wildcard_characters_in_the_data() {
        let chars = |s: &str| s.chars().collect::<Vec<_>>();
        for (text, pattern, want) in [
            ("a%b", "a%", true),
            ("%x", "%", true),
            ("abc", "a_c", true),
            ("abc", "a%d", false),
            ("", "%", true),
        ] {
            assert_eq!(
                like(&chars(text), &chars(pattern)),
                want,
                "{text} LIKE {pattern}"
            );
        }
    }

    #[test]
    fn refuses_unknown_columns_and_unsupported_shapes() {
        for (clause, code) in [
            ("nope = 1", "INVALID_SQL"),
            ("id + 1 = 2", "UNSUPPORTED"),
            ("id = 'abc'", "INVALID_SQL"),
        ] {
            let err = Filter::compile(&self::clause(clause), &def(), "alice").unwrap_err();
            assert_eq!(err.code().as_str(), code, "{clause}: {err}");
        }
    }
}
