//! A direct reader for the most common write, `INSERT INTO t [(cols)] VALUES (…), (…)` made only
//! of literals and `$n` parameters.
//!
//! sqlparser spends most of a 1,000-row INSERT trying alternative parses of each literal; this
//! scanner reads the same grammar in one pass and hands the rows to the same insert code.
//! Anything outside the narrow grammar (expressions, functions, comments, `ON CONFLICT`,
//! `INSERT … SELECT`) returns `None` and takes the sqlparser path, so behaviour is the same.

use super::parse::TableRef;
use datafusion::scalar::ScalarValue;
use datafusion::sql::sqlparser::ast::{Expr, Value as SqlValue};
use kalamdb_catalog::defaults::literal_scalar;

/// A parsed literal INSERT.
#[derive(Debug)]
pub(crate) struct LiteralInsert {
    /// Target table.
    pub(crate) table: TableRef,
    /// Target columns as written (folded), empty for "all columns".
    pub(crate) columns: Vec<String>,
    /// Rows of values.
    pub(crate) rows: Vec<Vec<Option<ScalarValue>>>,
}

struct Scanner<'a> {
    s: &'a str,
    b: &'a [u8],
    i: usize,
}

impl<'a> Scanner<'a> {
    fn ws(&mut self) {
        while self.i < self.b.len() && self.b[self.i].is_ascii_whitespace() {
            self.i += 1;
        }
    }

    fn eat(&mut self, c: u8) -> bool {
        self.ws();
        if self.b.get(self.i) == Some(&c) {
            self.i += 1;
            true
        } else {
            false
        }
    }

    fn word(&mut self) -> Option<&'a str> {
        self.ws();
        let start = self.i;
        if !self
            .b
            .get(self.i)
            .is_some_and(|c| c.is_ascii_alphabetic() || *c == b'_')
        {
            return None;
        }
        while self.i < self.b.len()
            && (self.b[self.i].is_ascii_alphanumeric() || self.b[self.i] == b'_')
        {
            self.i += 1;
        }
        Some(&self.s[start..self.i])
    }

    fn keyword(&mut self, kw: &str) -> bool {
        let save = self.i;
        if self.word().is_some_and(|w| w.eq_ignore_ascii_case(kw)) {
            return true;
        }
        self.i = save;
        false
    }

    /// An unquoted identifier (folded) or a simple double-quoted one.
    fn ident(&mut self) -> Option<String> {
        self.ws();
        if self.b.get(self.i) == Some(&b'"') {
            let start = self.i + 1;
            let end = start + self.s[start..].find('"')?;
            if self.b.get(end + 1) == Some(&b'"') {
                return None;
            }
            self.i = end + 1;
            return Some(self.s[start..end].to_string());
        }
        self.word().map(|w| w.to_ascii_lowercase())
    }

    fn value(&mut self, params: &[SqlValue]) -> Option<ScalarValue> {
        self.ws();
        let c = *self.b.get(self.i)?;
        match c {
            b'\'' => {
                let mut out = String::new();
                let mut j = self.i + 1;
                loop {
                    let rel = self.s[j..].find('\'')?;
                    out.push_str(&self.s[j..j + rel]);
                    j += rel + 1;
                    if self.b.get(j) == Some(&b'\'') {
                        out.push('\'');
                        j += 1;
                    } else {
                        break;
                    }
                }
                self.i = j;
                Some(ScalarValue::Utf8(Some(out)))
            }
            b'$' => {
                let start = self.i + 1;
                let mut j = start;
                while j < self.b.len() && self.b[j].is_ascii_digit() {
                    j += 1;
                }
                let n: usize = self.s[start..j].parse().ok()?;
                self.i = j;
                literal_scalar(&Expr::value(params.get(n.checked_sub(1)?)?.clone()))
            }
            b'-' | b'+' | b'0'..=b'9' | b'.' => {
                let start = self.i;
                let mut j = self.i + usize::from(c == b'-' || c == b'+');
                while j < self.b.len() && (self.b[j].is_ascii_alphanumeric() || self.b[j] == b'.') {
                    j += 1;
                }
                if matches!(self.b.get(j - 1), Some(b'e' | b'E'))
                    && matches!(self.b.get(j), Some(b'-' | b'+'))
                {
                    j += 1;
                    while j < self.b.len() && self.b[j].is_ascii_digit() {
                        j += 1;
                    }
                }
                let text = &self.s[start..j];
                let digits = text.trim_start_matches(['-', '+']);
                if digits.is_empty() || digits.parse::<f64>().is_err() {
                    return None;
                }
                self.i = j;
                Some(match text.parse::<i64>() {
                    Ok(v) => ScalarValue::Int64(Some(v)),
                    Err(_) => ScalarValue::Utf8(Some(text.trim_start_matches('+').to_string())),
                })
            }
            _ => {
                let w = self.word()?;
                if w.eq_ignore_ascii_case("NULL") {
                    Some(ScalarValue::Null)
                } else if w.eq_ignore_ascii_case("TRUE") {
                    Some(ScalarValue::Boolean(Some(true)))
                } else if w.eq_ignore_ascii_case("FALSE") {
                    Some(ScalarValue::Boolean(Some(false)))
                } else {
                    None
                }
            }
        }
    }
}

/// Reads `sql` if it is a literal-only `INSERT … VALUES`; `None` otherwise.
pub(crate) fn parse(sql: &str, params: &[SqlValue]) -> Option<LiteralInsert> {
    if sql.contains("--") || sql.contains("/*") {
        return None;
    }
    let mut p = Scanner {
        s: sql,
        b: sql.as_bytes(),
        i: 0,
    };
    if !p.keyword("INSERT") || !p.keyword("INTO") {
        return None;
    }
    let first = p.ident()?;
    let table = if p.eat(b'.') {
        TableRef {
            namespace: Some(first),
            table: p.ident()?,
        }
    } else {
        TableRef {
            namespace: None,
            table: first,
        }
    };
    let mut columns = Vec::new();
    if p.eat(b'(') {
        loop {
            columns.push(p.ident()?);
            if p.eat(b')') {
                break;
            }
            if !p.eat(b',') {
                return None;
            }
        }
    }
    if !p.keyword("VALUES") {
        return None;
    }
    let mut rows = Vec::new();
    loop {
        if !p.eat(b'(') {
            return None;
        }
        let mut row = Vec::with_capacity(columns.len().max(4));
        loop {
            row.push(Some(p.value(params)?));
            if p.eat(b')') {
                break;
            }
            if !p.eat(b',') {
                return None;
            }
        }
        rows.push(row);
        if !p.eat(b',') {
            break;
        }
    }
    p.eat(b';');
    p.ws();
    (p.i == p.b.len()).then_some(LiteralInsert {
        table,
        columns,
        rows,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_literal_inserts_and_refuses_the_rest() {
        let p = parse(
            "insert into App.t (ID, \"Name\") values (1, 'it''s'), (-2.5, NULL), ($1, TRUE);",
            &[SqlValue::Number("7".into(), false)],
        )
        .unwrap();
        assert_eq!(
            p.table,
            TableRef {
                namespace: Some("app".into()),
                table: "t".into()
            }
        );
        assert_eq!(p.columns, vec!["id", "Name"]);
        assert_eq!(
            p.rows[0],
            vec![
                Some(ScalarValue::Int64(Some(1))),
                Some(ScalarValue::Utf8(Some("it's".into())))
            ]
        );
        assert_eq!(
            p.rows[1],
            vec![
                Some(ScalarValue::Utf8(Some("-2.5".into()))),
                Some(ScalarValue::Null)
            ]
        );
        assert_eq!(
            p.rows[2],
            vec![
                Some(ScalarValue::Int64(Some(7))),
                Some(ScalarValue::Boolean(Some(true)))
            ]
        );
        for other in [
            "INSERT INTO t VALUES (now())",
            "INSERT INTO t VALUES (1 + 1)",
            "INSERT INTO t SELECT 1",
            "INSERT INTO t VALUES (1) ON CONFLICT DO NOTHING",
            "INSERT INTO t VALUES (1) -- c",
            "INSERT INTO t VALUES ($2)",
            "INSERT INTO t VALUES ('open",
            "INSERT INTO t VALUES (1e)",
        ] {
            assert!(
                parse(other, &[SqlValue::Number("1".into(), false)]).is_none(),
                "{other}"
            );
        }
    }
}
