//! Tab completion of the shell: backslash commands, SQL keywords, and the namespaces, tables and
//! columns the server shows the user (fetched at start and by `\refresh`).

use parking_lot::Mutex;
use rustyline::completion::{Completer, Pair};
use rustyline::highlight::Highlighter;
use rustyline::hint::Hinter;
use rustyline::validate::Validator;
use std::collections::BTreeSet;
use std::sync::Arc;

/// SQL keywords offered for completion.
const KEYWORDS: &[&str] = &[
    "SELECT",
    "FROM",
    "WHERE",
    "INSERT",
    "INTO",
    "VALUES",
    "UPDATE",
    "SET",
    "DELETE",
    "CREATE",
    "DROP",
    "ALTER",
    "TABLE",
    "USER",
    "SHARED",
    "STREAM",
    "NAMESPACE",
    "VIEW",
    "TOPIC",
    "INDEX",
    "PRIMARY",
    "KEY",
    "DEFAULT",
    "NOT",
    "NULL",
    "AND",
    "OR",
    "ORDER",
    "BY",
    "GROUP",
    "HAVING",
    "LIMIT",
    "OFFSET",
    "JOIN",
    "LEFT",
    "INNER",
    "ON",
    "AS",
    "DISTINCT",
    "COUNT",
    "SHOW",
    "TABLES",
    "NAMESPACES",
    "DESCRIBE",
    "STORAGE",
    "FLUSH",
    "COMPACT",
    "BEGIN",
    "COMMIT",
    "ROLLBACK",
    "SUBSCRIBE",
    "CONSUME",
    "ACK",
    "EXECUTE",
    "WITH",
    "BIGINT",
    "INT",
    "TEXT",
    "BOOLEAN",
    "DOUBLE",
    "TIMESTAMP",
    "JSON",
    "UUID",
    "IF",
    "EXISTS",
    "CASCADE",
    "ASC",
    "DESC",
    "IN",
    "LIKE",
    "BETWEEN",
    "IS",
    "TRUE",
    "FALSE",
];

/// The backslash commands (for completion; `\?` lists them with help).
pub const COMMANDS: &[&str] = &[
    "\\q",
    "\\quit",
    "\\?",
    "\\help",
    "\\dt",
    "\\tables",
    "\\d",
    "\\describe",
    "\\dn",
    "\\du",
    "\\use",
    "\\format",
    "\\x",
    "\\timing",
    "\\as",
    "\\flush",
    "\\jobs",
    "\\health",
    "\\info",
    "\\session",
    "\\history",
    "\\i",
    "\\refresh",
    "\\subscribe",
    "\\unsubscribe",
    "\\consume",
    "\\import",
    "\\export",
];

/// Names known on the server.
#[derive(Debug, Default)]
pub struct Vocabulary {
    /// Namespaces.
    pub namespaces: BTreeSet<String>,
    /// `ns.table` and bare table names.
    pub tables: BTreeSet<String>,
    /// Column names.
    pub columns: BTreeSet<String>,
}

/// The shell's rustyline helper.
#[derive(Debug, Clone, Default)]
pub struct ShellHelper {
    /// Shared with the shell, which refreshes it.
    pub vocabulary: Arc<Mutex<Vocabulary>>,
}

impl ShellHelper {
    /// Completions of `word` (case-insensitive prefix), sorted, without duplicates.
    pub fn candidates(&self, word: &str) -> Vec<String> {
        let lower = word.to_ascii_lowercase();
        let starts = |c: &str| c.to_ascii_lowercase().starts_with(&lower);
        if word.starts_with('\\') {
            let mut found: Vec<String> = COMMANDS
                .iter()
                .filter(|c| starts(c))
                .map(|c| c.to_string())
                .collect();
            found.sort();
            return found;
        }
        let v = self.vocabulary.lock();
        let mut out: BTreeSet<String> = BTreeSet::new();
        out.extend(v.tables.iter().filter(|t| starts(t)).cloned());
        if !word.contains('.') {
            out.extend(v.namespaces.iter().filter(|n| starts(n)).cloned());
            out.extend(v.columns.iter().filter(|c| starts(c)).cloned());
            // Keywords in the case being typed.
            let upper = word.chars().next().is_some_and(char::is_uppercase);
            out.extend(KEYWORDS.iter().filter(|k| starts(k)).map(|k| {
                if upper {
                    k.to_string()
                } else {
                    k.to_ascii_lowercase()
                }
            }));
        }
        out.into_iter().collect()
    }
}

impl Completer for ShellHelper {
    type Candidate = Pair;

    fn complete(
        &self,
        line: &str,
        pos: usize,
        _ctx: &rustyline::Context<'_>,
    ) -> rustyline::Result<(usize, Vec<Pair>)> {
        let before = &line[..pos];
        let start = before
            .char_indices()
            .rev()
            .find(|(_, c)| !(c.is_alphanumeric() || matches!(c, '_' | '.' | '\\')))
            .map_or(0, |(i, c)| i + c.len_utf8());
        let word = &before[start..];
        if word.is_empty() {
            return Ok((pos, Vec::new()));
        }
        let pairs = self
            .candidates(word)
            .into_iter()
            .map(|c| Pair {
                display: c.clone(),
                replacement: c,
            })
            .collect();
        Ok((start, pairs))
    }
}

impl Hinter for ShellHelper {
    type Hint = String;
}

impl Highlighter for ShellHelper {}

impl Validator for ShellHelper {}

impl rustyline::Helper for ShellHelper {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn completes_commands_keywords_and_server_names() {
        let h = ShellHelper::default();
        {
            let mut v = h.vocabulary.lock();
            v.namespaces.insert("app".into());
            v.tables.insert("app.todos".into());
            v.tables.insert("todos".into());
            v.columns.insert("title".into());
        }
        assert_eq!(
            h.candidates("\\d"),
            vec!["\\d", "\\describe", "\\dn", "\\dt", "\\du"]
        );
        assert_eq!(h.candidates("app.t"), vec!["app.todos"]);
        assert!(h.candidates("sel").contains(&"select".to_string()));
        assert!(h.candidates("SEL").contains(&"SELECT".to_string()));
        assert!(h.candidates("ti").contains(&"title".to_string()));
        assert!(h.candidates("ap").contains(&"app".to_string()));
    }
}
