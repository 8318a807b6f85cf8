//! The statement parser: KalamDB's own statements recognised by their leading words in front
//! of sqlparser's `Parser`, over one tokenization of the text (DataFusion's `DFParser` pattern).
//!
//! Own statements: `CREATE|DROP NAMESPACE`, `USE [NAMESPACE]`, `SET NAMESPACE`,
//! `SHOW NAMESPACES|TABLES|STORAGES`, `DESCRIBE|DESC TABLE`, `CREATE [USER|SHARED|STREAM] TABLE`
//! (sqlparser parses what follows `TABLE`), `ALTER [..] TABLE` (sqlparser parses the change),
//! `DROP [..] TABLE`, `CREATE USER … WITH PASSWORD … [ROLE …] [EMAIL …]`, `ALTER|DROP USER`,
//! storages, flush/compaction, `KILL …`, `SUBSCRIBE TO`. Everything else is sqlparser's.
//! Unquoted identifiers are folded to lower case, as DataFusion does.

use datafusion::sql::sqlparser::ast::{
    AlterColumnOperation as Col, AlterTableOperation as Op, ColumnOption, CreateTable,
    CreateTableOptions, DataType, Expr, Ident, ObjectName, ObjectNamePart, ObjectType, SqlOption,
    Statement, Value as SqlValue,
};
use datafusion::sql::sqlparser::dialect::GenericDialect;
use datafusion::sql::sqlparser::keywords::Keyword;
use datafusion::sql::sqlparser::parser::{Parser, ParserError};
use datafusion::sql::sqlparser::tokenizer::{Token, TokenWithSpan, Tokenizer, Word};
use kalamdb_catalog::error::{KalamError, Result};
use kalamdb_commons::TableType;

/// A parsed statement.
#[derive(Debug, Clone)]
pub enum Command {
    /// `CREATE NAMESPACE [IF NOT EXISTS] ns`
    CreateNamespace {
        /// Name.
        name: String,
        /// IF NOT EXISTS.
        if_not_exists: bool,
    },
    /// `DROP NAMESPACE [IF EXISTS] ns [CASCADE]`
    DropNamespace {
        /// Name.
        name: String,
        /// IF EXISTS.
        if_exists: bool,
        /// CASCADE.
        cascade: bool,
    },
    /// `USE ns`
    Use(String),
    /// `SHOW NAMESPACES`
    ShowNamespaces,
    /// `SHOW TABLES [IN ns]`
    ShowTables(Option<String>),
    /// `SHOW STORAGES`
    ShowStorages,
    /// `SHOW MANIFEST [CACHE]`: the rows of `system.manifest`.
    ShowManifest,
    /// `SUBSCRIBE TO <select> [OPTIONS (…)]` (the text after `TO`)
    SubscribeTo(String),
    /// `KILL LIVE QUERY 'live_id'`
    KillLiveQuery(String),
    /// `CLUSTER SNAPSHOT` | `CLUSTER TRIGGER ELECTION [GROUP g]` |
    /// `CLUSTER TRANSFER LEADER n [GROUP g]` | `CLUSTER ADD NODE …` | `CLUSTER REMOVE NODE n`
    Cluster(ClusterCommand),
    /// `STORAGE FLUSH TABLE [ns.]t` (also `FLUSH TABLE [ns.]t`)
    FlushTable(TableRef),
    /// `BACKUP DATABASE TO 'folder'` | `BACKUP DATABASE TO STORAGE id PATH 'path'`
    Backup(crate::backup::BackupTarget),
    /// `EXPORT USER DATA [FOR USER 'u']`
    ExportUserData(Option<String>),
    /// `STORAGE FLUSH ALL [IN [NAMESPACE] ns]`
    FlushAll(Option<String>),
    /// `STORAGE COMPACT TABLE [ns.]t`
    CompactTable(TableRef),
    /// `STORAGE COMPACT ALL [IN [NAMESPACE] ns]`
    CompactAll(Option<String>),
    /// `KILL JOB 'job_id'`
    KillJob(String),
    /// `KILL QUERY <id>`: cancels a running request (ids in `system.queries`).
    KillQuery(u64),
    /// `KILL TRANSACTION <id>`: rolls back an open transaction (ids in `system.transactions`).
    KillTransaction(String),
    /// A topic statement (`CREATE/DROP/CLEAR/ALTER TOPIC`, `CONSUME`, `ACK`, `SHOW TOPICS`,
    /// `DESCRIBE TOPIC`).
    Topic(TopicCommand),
    /// `CREATE STORAGE id TYPE 'filesystem' [NAME '…'] [DESCRIPTION '…'] [PATH '…'] …`
    CreateStorage {
        /// Id.
        id: String,
        /// `filesystem`, `s3`, …
        storage_type: String,
        /// Options by upper-case keyword (`NAME`, `PATH`, `BASE_DIRECTORY`, templates …).
        options: Vec<(String, String)>,
    },
    /// `DROP STORAGE [IF EXISTS] id`
    DropStorage {
        /// Id.
        id: String,
        /// IF EXISTS.
        if_exists: bool,
    },
    /// `STORAGE CHECK id [EXTENDED]`
    StorageCheck {
        /// The storage.
        id: String,
        /// `EXTENDED`: with the volume's size.
        extended: bool,
    },
    /// `DESCRIBE TABLE [ns.]t`
    Describe(TableRef),
    /// `CREATE [type] TABLE …`
    CreateTable {
        /// Type from the prefix keyword.
        prefix_type: Option<TableType>,
        /// The rest, as sqlparser saw it.
        stmt: Box<CreateTable>,
    },
    /// `DROP [type] TABLE [IF EXISTS] [ns.]t`
    DropTable {
        /// The table.
        table: TableRef,
        /// The kind named (`DROP USER TABLE`): the table must be of it.
        table_type: Option<TableType>,
        /// IF EXISTS.
        if_exists: bool,
    },
    /// `CREATE USER u WITH PASSWORD 'p' | WITH OAUTH PROVIDER 'p' SUBJECT 's' [ROLE r]
    /// [EMAIL 'e']`
    CreateUser {
        /// Id.
        name: String,
        /// How the user signs in.
        login: UserLogin,
        /// Role name as written.
        role: Option<String>,
        /// Email.
        email: Option<String>,
    },
    /// `DROP USER [IF EXISTS] u`
    DropUser {
        /// Id.
        name: String,
        /// IF EXISTS.
        if_exists: bool,
    },
    /// `ALTER USER u SET PASSWORD 'p' | SET ROLE r | SET EMAIL 'e'`
    AlterUser {
        /// Id.
        name: String,
        /// What changes.
        change: UserChange,
    },
    /// `ALTER [USER|SHARED|STREAM] TABLE ns.t <one change>`
    AlterTable {
        /// The table.
        table: TableRef,
        /// The change.
        change: AlterChange,
    },
    /// Anything sqlparser understands (queries and DML).
    Sql(Box<Statement>),
}

/// The one change of an `ALTER TABLE`.
#[derive(Debug, Clone, PartialEq)]
pub enum AlterChange {
    /// `ADD [COLUMN] name type [NULL|NOT NULL] [DEFAULT v]`
    AddColumn(Box<datafusion::sql::sqlparser::ast::ColumnDef>),
    /// `DROP COLUMN name`
    DropColumn(String),
    /// `RENAME COLUMN a TO b`
    RenameColumn(String, String),
    /// `MODIFY [COLUMN] name type [NULL|NOT NULL]`, `ALTER COLUMN name [SET DATA] TYPE type`:
    /// the new type as SQL text, and the nullability when given.
    SetType(String, String, Option<bool>),
    /// `ALTER COLUMN name SET NOT NULL` (false) / `DROP NOT NULL` (true).
    SetNullable(String, bool),
    /// `ALTER COLUMN name SET DEFAULT v` / `DROP DEFAULT`.
    SetDefault(String, Option<Box<datafusion::sql::sqlparser::ast::Expr>>),
    /// `SET ACCESS_LEVEL 'x'`, `SET ACCESS LEVEL x`, `SET TTL_SECONDS n`,
    /// `SET FLUSH_POLICY 'p'`, `SET TBLPROPERTIES (K = 'v')`: option name (upper case), value.
    SetOption(String, String),
}

/// How a user created by `CREATE USER` signs in.
#[derive(Debug, Clone, PartialEq)]
pub enum UserLogin {
    /// `WITH PASSWORD 'p'`.
    Password(String),
    /// `WITH OAUTH PROVIDER 'p' SUBJECT 's'`: tokens of that `[auth.oidc]` issuer whose `sub`
    /// is `s`.
    OAuth {
        /// The issuer's provider name.
        provider: String,
        /// Its `sub`.
        subject: String,
    },
}

/// One change of `ALTER USER`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UserChange {
    /// New password.
    Password(String),
    /// New role, as written.
    Role(String),
    /// New email.
    Email(String),
}

/// A possibly namespace-qualified table name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TableRef {
    /// Namespace, if given.
    pub namespace: Option<String>,
    /// Table.
    pub table: String,
}

impl std::fmt::Display for TableRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.namespace {
            Some(ns) => write!(f, "{ns}.{}", self.table),
            None => f.write_str(&self.table),
        }
    }
}

impl TableRef {
    /// From a sqlparser object name (`t` or `ns.t`), folding unquoted parts.
    pub fn from_object_name(name: &ObjectName) -> Result<Self> {
        let parts: Vec<String> = name
            .0
            .iter()
            .map(|p| match p {
                ObjectNamePart::Identifier(i) => Ok(fold(&i.value, i.quote_style.is_some())),
                other => Err(KalamError::InvalidSql(format!(
                    "unsupported table name part {other}"
                ))),
            })
            .collect::<Result<_>>()?;
        match parts.as_slice() {
            [t] => Ok(Self {
                namespace: None,
                table: t.clone(),
            }),
            [ns, t] => Ok(Self {
                namespace: Some(ns.clone()),
                table: t.clone(),
            }),
            _ => Err(KalamError::InvalidSql(format!(
                "invalid table name {name}: use namespace.table"
            ))),
        }
    }
}

pub use kalamdb_commons::ids::fold;

/// The statement parser: sqlparser's own [`Parser`] over one tokenization of the text, with
/// KalamDB's statements recognised in front of it (DataFusion's `DFParser` pattern). Standard
/// statements, `CREATE TABLE`'s body and `ALTER TABLE`'s changes are parsed by sqlparser from
/// the same tokens: no text is rewritten and parsed again.
struct KalamParser<'a> {
    sql: &'a str,
    p: Parser<'a>,
}

/// The dialect of every statement.
const DIALECT: GenericDialect = GenericDialect {};

impl<'a> KalamParser<'a> {
    fn new(sql: &'a str) -> Result<Self> {
        let tokens = Tokenizer::new(&DIALECT, sql)
            .with_unescape(true)
            .tokenize_with_location()
            .map_err(|e| KalamError::InvalidSql(e.to_string()))?;
        Ok(Self {
            sql,
            p: Parser::new(&DIALECT)
                .with_tokens_with_locations(keyword_columns(current_user_calls(tokens))),
        })
    }

    /// The `n`th next token (whitespace skipped) if it is a bare word, upper-cased.
    fn word_at(&self, n: usize) -> Option<String> {
        match self.p.peek_nth_token(n).token {
            Token::Word(w) if w.quote_style.is_none() => Some(w.value.to_ascii_uppercase()),
            _ => None,
        }
    }

    fn peek_is(&self, n: usize, word: &str) -> bool {
        self.word_at(n).as_deref() == Some(word)
    }

    fn eat(&mut self, word: &str) -> bool {
        self.eat_all(&[word])
    }

    fn eat_all(&mut self, words: &[&str]) -> bool {
        if !words.iter().enumerate().all(|(i, w)| self.peek_is(i, w)) {
            return false;
        }
        for _ in words {
            self.p.next_token();
        }
        true
    }

    /// Moves past `n` words already classified.
    fn skip(&mut self, n: usize) -> &mut Self {
        for _ in 0..n {
            self.p.next_token();
        }
        self
    }

    fn expect(&mut self, word: &str) -> Result<()> {
        if self.eat(word) {
            Ok(())
        } else {
            Err(KalamError::InvalidSql(format!(
                "expected {word} near {}",
                self.near()
            )))
        }
    }

    fn near(&self) -> String {
        match self.p.peek_token().token {
            Token::EOF => "end of statement".into(),
            t => format!("'{t}'"),
        }
    }

    /// A name: an identifier (folded unless quoted) or a quoted string. A number glued to a
    /// word (`1abc`) is returned whole, so the naming rules can say what is wrong with it.
    fn ident(&mut self) -> Result<String> {
        let at = self.p.next_token();
        match at.token {
            Token::Word(w) => Ok(fold(&w.value, w.quote_style.is_some())),
            Token::SingleQuotedString(s) => Ok(s),
            Token::Number(n, _) => match self.p.peek_token_no_skip() {
                TokenWithSpan {
                    token: Token::Word(w),
                    span,
                } if span.start == at.span.end => {
                    self.p.next_token();
                    Ok(format!("{n}{}", w.value))
                }
                _ => Ok(n),
            },
            other => {
                self.p.prev_token();
                Err(KalamError::InvalidSql(format!(
                    "expected a name near {}",
                    if other == Token::EOF {
                        "end of statement".to_string()
                    } else {
                        format!("'{other}'")
                    }
                )))
            }
        }
    }

    /// A string literal (or a bare word).
    fn string(&mut self) -> Result<String> {
        match self.p.peek_token().token {
            Token::SingleQuotedString(s) | Token::DoubleQuotedString(s) => {
                self.p.next_token();
                Ok(s)
            }
            Token::Word(w) => {
                self.p.next_token();
                Ok(w.value)
            }
            _ => Err(KalamError::InvalidSql(format!(
                "expected a string near {}",
                self.near()
            ))),
        }
    }

    /// `<intro> [NAMESPACE] ns` when the next word is one of `intro`; `None` otherwise.
    fn namespace_after(&mut self, intro: &[&str]) -> Result<Option<String>> {
        if !intro.iter().any(|w| self.eat(w)) {
            return Ok(None);
        }
        self.eat("NAMESPACE");
        self.ident().map(Some)
    }

    fn table_ref(&mut self) -> Result<TableRef> {
        let first = self.ident()?;
        if !self.p.consume_token(&Token::Period) {
            return Ok(TableRef {
                namespace: None,
                table: first,
            });
        }
        Ok(TableRef {
            namespace: Some(first),
            table: self.ident()?,
        })
    }

    /// The statement must end here (trailing semicolons allowed).
    fn done(&mut self) -> Result<()> {
        while self.p.consume_token(&Token::SemiColon) {}
        match self.p.peek_token().token {
            Token::EOF => Ok(()),
            _ => Err(KalamError::InvalidSql(format!(
                "unexpected {}",
                self.near()
            ))),
        }
    }

    /// The text from the next token to the end, as written.
    fn rest_text(&self) -> &'a str {
        let start = self.p.peek_token().span.start;
        match byte_offset(self.sql, start.line, start.column) {
            Some(at) => &self.sql[at..],
            None => "",
        }
    }
}

/// The byte offset of 1-based `line` and `column` (in characters) in `text`.
pub(crate) fn byte_offset(text: &str, line: u64, column: u64) -> Option<usize> {
    if line == 0 {
        return None;
    }
    let mut at = 0;
    for _ in 1..line {
        at += text[at..].find('\n')? + 1;
    }
    let col = usize::try_from(column.saturating_sub(1)).ok()?;
    Some(match text[at..].char_indices().nth(col) {
        Some((i, _)) => at + i,
        None => text.len(),
    })
}

/// Column names that sqlparser's generic dialect would read as the start of a MySQL index
/// definition (`KEY name (…)`, `INDEX name (…)`) are marked as identifiers where a column
/// definition starts: after `(` or `,` in `CREATE … TABLE`'s column list, and after `ADD
/// [COLUMN]` in `ALTER … TABLE`. KalamDB has no inline index definitions, so `key TEXT
/// PRIMARY KEY` is a column, as in PostgreSQL and upstream KalamDB. The mark keeps the name
/// folded as an unquoted name would be.
fn keyword_columns(mut tokens: Vec<TokenWithSpan>) -> Vec<TokenWithSpan> {
    let words: Vec<(usize, String)> = tokens
        .iter()
        .enumerate()
        .filter_map(|(i, t)| match &t.token {
            Token::Word(w) if w.quote_style.is_none() => Some((i, w.value.to_ascii_uppercase())),
            _ => None,
        })
        .take(4)
        .collect();
    let word = |n: usize| words.get(n).map(|(_, w)| w.as_str()).unwrap_or("");
    let table_at = match (word(0), word(1)) {
        ("CREATE" | "ALTER", "TABLE") => 1,
        ("CREATE" | "ALTER", "USER" | "SHARED" | "STREAM") if word(2) == "TABLE" => 2,
        _ => return tokens,
    };
    let creating = word(0) == "CREATE";
    let start = words[table_at].0 + 1;
    let mut depth = 0usize;
    let mut column_starts = false;
    for token in tokens.iter_mut().skip(start) {
        if matches!(token.token, Token::Whitespace(_)) {
            continue;
        }
        let starts_column = std::mem::take(&mut column_starts);
        let mark = match &token.token {
            Token::LParen => {
                depth += 1;
                column_starts = creating && depth == 1;
                false
            }
            Token::RParen => {
                depth = depth.saturating_sub(1);
                false
            }
            Token::Comma => {
                column_starts = creating && depth == 1;
                false
            }
            Token::Word(w) if w.quote_style.is_none() => {
                if !creating {
                    column_starts = w.keyword == Keyword::ADD
                        || (w.keyword == Keyword::COLUMN && starts_column);
                }
                starts_column && matches!(w.keyword, Keyword::KEY | Keyword::INDEX)
            }
            _ => false,
        };
        if mark {
            mark_identifier(token);
        }
    }
    tokens
}

fn mark_identifier(token: &mut TokenWithSpan) {
    if let Token::Word(w) = &token.token {
        token.token = Token::Word(Word {
            value: w.value.to_ascii_lowercase(),
            quote_style: Some('"'),
            keyword: Keyword::NoKeyword,
        });
    }
}

/// `CURRENT_USER()` (KalamDB's spelling) becomes `CURRENT_USER`, the SQL keyword form
/// sqlparser accepts: the two parenthesis tokens are dropped.
fn current_user_calls(mut tokens: Vec<TokenWithSpan>) -> Vec<TokenWithSpan> {
    let is_blank = |t: &TokenWithSpan| matches!(t.token, Token::Whitespace(_));
    let mut i = 0;
    while i < tokens.len() {
        let is_call = matches!(&tokens[i].token, Token::Word(w) if w.quote_style.is_none() && w.value.eq_ignore_ascii_case("CURRENT_USER"));
        if is_call {
            let mut j = i + 1;
            while tokens.get(j).is_some_and(is_blank) {
                j += 1;
            }
            if tokens.get(j).is_some_and(|t| t.token == Token::LParen) {
                let mut k = j + 1;
                while tokens.get(k).is_some_and(is_blank) {
                    k += 1;
                }
                if tokens.get(k).is_some_and(|t| t.token == Token::RParen) {
                    tokens.drain(i + 1..=k);
                }
            }
        }
        i += 1;
    }
    tokens
}

fn table_type_word(w: &str) -> Option<TableType> {
    match w {
        "USER" => Some(TableType::User),
        "SHARED" => Some(TableType::Shared),
        "STREAM" => Some(TableType::Stream),
        _ => None,
    }
}

/// The first `n` bare words of a statement, upper-cased, skipping whitespace and comments.
/// Classifying by these avoids tokenizing a large statement (a 1,000-row INSERT) twice.
pub(crate) fn leading_words(sql: &str, n: usize) -> Vec<String> {
    let b = sql.as_bytes();
    let mut words = Vec::with_capacity(n);
    let mut i = 0;
    while i < b.len() && words.len() < n {
        match b[i] {
            c if c.is_ascii_whitespace() => i += 1,
            b'-' if b.get(i + 1) == Some(&b'-') => {
                while i < b.len() && b[i] != b'\n' {
                    i += 1;
                }
            }
            b'/' if b.get(i + 1) == Some(&b'*') => {
                i += 2;
                while i < b.len() && !(b[i] == b'*' && b.get(i + 1) == Some(&b'/')) {
                    i += 1;
                }
                i += 2;
            }
            c if c.is_ascii_alphabetic() || c == b'_' => {
                let start = i;
                while i < b.len() && (b[i].is_ascii_alphanumeric() || b[i] == b'_') {
                    i += 1;
                }
                words.push(sql[start..i].to_ascii_uppercase());
            }
            _ => break,
        }
    }
    words
}

impl Command {
    /// Checks the statement's expressions against `limits` (see [`crate::expr_limits`]);
    /// our own statements hold expressions only in column definitions and defaults.
    pub fn check_limits(&self, limits: crate::expr_limits::ExprLimits) -> Result<()> {
        match self {
            Command::Sql(stmt) => crate::expr_limits::check(&**stmt, limits),
            Command::CreateTable { stmt, .. } => crate::expr_limits::check(&**stmt, limits),
            Command::AlterTable { change, .. } => match change {
                AlterChange::AddColumn(col) => crate::expr_limits::check(&**col, limits),
                AlterChange::SetDefault(_, Some(e)) => crate::expr_limits::check(&**e, limits),
                _ => Ok(()),
            },
            _ => Ok(()),
        }
    }

    /// Whether the command may run inside a transaction: queries, DML and statements that
    /// only read the catalog or set the session's namespace.
    pub fn allowed_in_transaction(&self) -> bool {
        match self {
            Command::Use(_)
            | Command::ShowNamespaces
            | Command::ShowTables(_)
            | Command::ShowStorages
            | Command::Describe(_) => true,
            Command::Sql(stmt) => matches!(
                **stmt,
                Statement::Query(_)
                    | Statement::Explain { .. }
                    | Statement::Insert(_)
                    | Statement::Update(_)
                    | Statement::Delete(_)
            ),
            _ => false,
        }
    }

    /// Whether the statement creates, drops or alters a catalog object (see
    /// `AppContext::ddl_lock`).
    pub fn changes_catalog(&self) -> bool {
        match self {
            Command::CreateNamespace { .. }
            | Command::DropNamespace { .. }
            | Command::CreateStorage { .. }
            | Command::DropStorage { .. }
            | Command::CreateTable { .. }
            | Command::DropTable { .. }
            | Command::AlterTable { .. }
            | Command::CreateUser { .. }
            | Command::DropUser { .. }
            | Command::AlterUser { .. } => true,
            Command::Sql(stmt) => matches!(
                **stmt,
                Statement::CreateView(_)
                    | Statement::Drop {
                        object_type: ObjectType::View,
                        ..
                    }
            ),
            _ => false,
        }
    }
}

/// Whether `sql` is one of KalamDB's own statements (DDL, user management, flush and
/// compaction …): administrative work that is not held to the query timeout.
pub(crate) fn is_own_statement_text(sql: &str) -> bool {
    is_own_statement(&leading_words(sql, 2))
}

/// Whether the leading words name one of KalamDB's own statements.
fn is_own_statement(w: &[String]) -> bool {
    let at = |i: usize| w.get(i).map(String::as_str).unwrap_or("");
    matches!(
        (at(0), at(1)),
        (
            "CREATE" | "DROP",
            "NAMESPACE" | "TABLE" | "USER" | "SHARED" | "STREAM" | "STORAGE"
        ) | ("ALTER", "USER" | "TABLE" | "SHARED" | "STREAM")
            | ("USE", _)
            | ("SET", "NAMESPACE")
            | ("SHOW", "NAMESPACES" | "STORAGES" | "TABLES" | "MANIFEST")
            | ("DESCRIBE" | "DESC", "TABLE")
            | ("KILL", "LIVE" | "JOB" | "QUERY" | "TRANSACTION")
            | (
                "CREATE" | "DROP" | "CLEAR" | "ALTER" | "DESCRIBE" | "DESC",
                "TOPIC"
            )
            | ("SHOW", "TOPICS")
            | ("FLUSH", "TABLE")
            | ("BACKUP", "DATABASE")
            | ("EXPORT", "USER")
            | ("STORAGE", "FLUSH" | "COMPACT" | "CHECK")
            | ("SUBSCRIBE", "TO")
            | (
                "CLUSTER",
                "SNAPSHOT" | "TRIGGER" | "TRANSFER" | "ADD" | "JOIN" | "REMOVE"
            )
    )
}

/// Splits `EXECUTE AS USER 'name' (statement)` into the user and the inner statement text;
/// `None` when `sql` is not such a wrapper.
pub fn execute_as(sql: &str) -> Result<Option<(String, String)>> {
    let words = leading_words(sql, 3);
    if words.len() < 3 || words[0] != "EXECUTE" || words[1] != "AS" || words[2] != "USER" {
        return Ok(None);
    }
    let bad = || {
        KalamError::BadRequest("EXECUTE AS USER expects: EXECUTE AS USER 'name' (statement)".into())
    };
    let upper = sql.to_ascii_uppercase();
    let after_user = upper.find("USER").ok_or_else(bad)? + 4;
    let rest = sql[after_user..].trim_start();
    let (name, rest) = if let Some(r) = rest.strip_prefix('\'') {
        let end = r.find('\'').ok_or_else(bad)?;
        (&r[..end], &r[end + 1..])
    } else {
        let end = rest
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == '-'))
            .unwrap_or(rest.len());
        (&rest[..end], &rest[end..])
    };
    let rest = rest.trim();
    let inner = rest
        .strip_prefix('(')
        .and_then(|r| {
            r.trim_end()
                .trim_end_matches(';')
                .trim_end()
                .strip_suffix(')')
        })
        .map(str::trim)
        .ok_or_else(bad)?;
    if name.is_empty() || inner.is_empty() {
        return Err(bad());
    }
    if leading_words(inner, 1)
        .first()
        .is_some_and(|w| w == "EXECUTE")
    {
        return Err(KalamError::BadRequest(
            "EXECUTE AS USER cannot be nested".into(),
        ));
    }
    Ok(Some((name.to_string(), inner.to_string())))
}

/// For DDL, user management and SHOW/DESCRIBE: the audit action (`CREATE_TABLE`, `DROP_USER`,
/// `SHOW_TABLES` …) and the object's name as written. `None` for statements that are not
/// audited.
pub fn audited_action(sql: &str) -> Option<(&'static str, String)> {
    if !is_own_statement(&leading_words(sql, 2)) {
        return None;
    }
    Some(match parse_statement(sql).ok()? {
        Command::CreateNamespace { name, .. } => ("CREATE_NAMESPACE", name),
        Command::DropNamespace { name, .. } => ("DROP_NAMESPACE", name),
        Command::CreateTable { stmt, .. } => ("CREATE_TABLE", stmt.name.to_string()),
        Command::DropTable { table, .. } => {
            let ns = table.namespace.map(|n| n + ".").unwrap_or_default();
            ("DROP_TABLE", format!("{ns}{}", table.table))
        }
        Command::CreateUser { name, .. } => ("CREATE_USER", name),
        Command::AlterUser { name, .. } => ("ALTER_USER", name),
        Command::AlterTable { table, .. } => {
            let ns = table.namespace.map(|n| n + ".").unwrap_or_default();
            ("ALTER_TABLE", format!("{ns}{}", table.table))
        }
        Command::DropUser { name, .. } => ("DROP_USER", name),
        Command::ShowNamespaces => ("SHOW_NAMESPACES", String::new()),
        Command::ShowTables(ns) => ("SHOW_TABLES", ns.unwrap_or_default()),
        Command::ShowStorages => ("SHOW_STORAGES", String::new()),
        Command::KillLiveQuery(id) => ("KILL_LIVE_QUERY", id),
        Command::KillJob(id) => ("KILL_JOB", id),
        Command::KillQuery(id) => ("KILL_QUERY", id.to_string()),
        Command::KillTransaction(id) => ("KILL_TRANSACTION", id),
        Command::Topic(TopicCommand::Create { topic, .. }) => ("CREATE_TOPIC", topic.to_string()),
        Command::Topic(TopicCommand::Drop { topic, .. }) => ("DROP_TOPIC", topic.to_string()),
        Command::Topic(TopicCommand::Clear(topic)) => ("CLEAR_TOPIC", topic.to_string()),
        Command::Topic(TopicCommand::Flush(topic)) => ("FLUSH_TOPIC", topic.to_string()),
        Command::Topic(
            TopicCommand::AddSource { topic, .. } | TopicCommand::DropSource { topic, .. },
        ) => ("ALTER_TOPIC", topic.to_string()),
        Command::CreateStorage { id, .. } => ("CREATE_STORAGE", id),
        Command::DropStorage { id, .. } => ("DROP_STORAGE", id),
        Command::FlushTable(table) => {
            let ns = table.namespace.map(|n| n + ".").unwrap_or_default();
            ("FLUSH_TABLE", format!("{ns}{}", table.table))
        }
        Command::FlushAll(ns) => ("FLUSH_ALL", ns.unwrap_or_default()),
        Command::Backup(target) => ("BACKUP_DATABASE", target.to_string()),
        Command::ExportUserData(user) => ("EXPORT_USER_DATA", user.unwrap_or_default()),
        Command::CompactTable(table) => {
            let ns = table.namespace.map(|n| n + ".").unwrap_or_default();
            ("COMPACT_TABLE", format!("{ns}{}", table.table))
        }
        Command::CompactAll(ns) => ("COMPACT_ALL", ns.unwrap_or_default()),
        Command::Describe(table) => {
            let ns = table.namespace.map(|n| n + ".").unwrap_or_default();
            ("DESCRIBE_TABLE", format!("{ns}{}", table.table))
        }
        _ => return None,
    })
}

/// A topic statement (`docs/protocol.md` §7.1).
#[derive(Debug, Clone, PartialEq)]
pub enum TopicCommand {
    /// `CREATE TOPIC [IF NOT EXISTS] t [PARTITIONS n] [WITH (RETENTION_SECONDS = …,
    /// RETENTION_MAX_BYTES = …)]`
    Create {
        /// The topic.
        topic: TableRef,
        /// `IF NOT EXISTS`.
        if_not_exists: bool,
        /// Partitions (1 by default).
        partitions: u32,
        /// `WITH` options, upper-cased names.
        options: Vec<(String, String)>,
    },
    /// `DROP TOPIC [IF EXISTS] t`
    Drop {
        /// The topic.
        topic: TableRef,
        /// `IF EXISTS`.
        if_exists: bool,
    },
    /// `CLEAR TOPIC t`: removes its messages and groups' offsets, keeps the topic.
    Clear(TableRef),
    /// `STORAGE FLUSH TOPIC t` (also `FLUSH TOPIC t`): moves its hot messages to Parquet now.
    Flush(TableRef),
    /// `ALTER TOPIC t ADD SOURCE ns.table ON INSERT|UPDATE|DELETE [WITH (PAYLOAD = 'key'|'full'|'diff')]`
    AddSource {
        /// The topic.
        topic: TableRef,
        /// The source table.
        table: TableRef,
        /// `insert`, `update` or `delete`.
        op: String,
        /// `key`, `full` (default) or `diff`.
        payload: String,
        /// The `WHERE` clause, as text.
        filter: Option<String>,
    },
    /// `ALTER TOPIC t DROP SOURCE ns.table [ON op]`
    DropSource {
        /// The topic.
        topic: TableRef,
        /// The source table.
        table: TableRef,
        /// Only this change kind.
        op: Option<String>,
    },
    /// `CONSUME FROM t [GROUP 'g'] [PARTITION p] [FROM EARLIEST|LATEST|n] [LIMIT n]`
    Consume {
        /// The topic.
        topic: TableRef,
        /// The consumer group.
        group: Option<String>,
        /// The partition (0 by default).
        partition: u32,
        /// Where to start without a committed group offset (`LATEST` by default).
        start: crate::topics::Start,
        /// Most messages (100 by default).
        limit: u64,
    },
    /// `ACK t GROUP 'g' [PARTITION p] UPTO OFFSET n`
    Ack {
        /// The topic.
        topic: TableRef,
        /// The group.
        group: String,
        /// The partition (0 by default).
        partition: u32,
        /// The last offset done.
        upto: u64,
    },
    /// `SHOW TOPICS [IN ns]`
    Show(Option<String>),
    /// `DESCRIBE TOPIC t`
    Describe(TableRef),
}

/// A statement that begins or ends a transaction.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TxControl {
    /// `BEGIN [TRANSACTION | WORK]`, `START TRANSACTION`.
    Begin,
    /// `COMMIT [TRANSACTION | WORK]`, `END [TRANSACTION]`.
    Commit,
    /// `ROLLBACK [TRANSACTION | WORK]`.
    Rollback,
}

/// The `CLUSTER …` statements (a cluster member only; admins).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClusterCommand {
    /// `CLUSTER SNAPSHOT`: every group on this node snapshots its state now.
    Snapshot,
    /// `CLUSTER TRIGGER ELECTION [GROUP g]`: this node stands for leader of every group (or
    /// of `g`).
    TriggerElection(Option<u64>),
    /// `CLUSTER ADD NODE n [RPC] 'ip:port' [API] 'url'` (also upstream's `CLUSTER JOIN n …`):
    /// node `n`, started with `[cluster] join = true`, becomes a voter of every group.
    AddNode {
        /// Its node id (never reused).
        node: u64,
        /// Its RPC address.
        rpc_addr: String,
        /// Its client URL.
        api_url: String,
    },
    /// `CLUSTER REMOVE NODE n`: node `n` leaves every group.
    RemoveNode(u64),
    /// `CLUSTER TRANSFER LEADER n [GROUP g]`: node `n` stands for leader of every group (or
    /// of `g`), from any member.
    TransferLeader {
        /// The node to lead.
        node: u64,
        /// One group only.
        group: Option<u64>,
    },
}

/// Whether `sql` begins or ends a transaction (only a text starting with one of their words
/// is parsed). Isolation options, chains and savepoints are refused: every transaction runs
/// at snapshot isolation.
pub fn transaction_control(sql: &str) -> Result<Option<TxControl>> {
    let first = leading_words(sql, 1);
    if !matches!(
        first.first().map(String::as_str),
        Some("BEGIN" | "START" | "COMMIT" | "END" | "ROLLBACK")
    ) {
        return Ok(None);
    }
    let Command::Sql(stmt) = parse_statement(sql)? else {
        return Ok(None);
    };
    let unsupported = |what: &str| {
        Err(KalamError::Unsupported(format!(
            "{what}: transactions run at snapshot isolation, without options, chains or \
             savepoints"
        )))
    };
    match *stmt {
        Statement::StartTransaction {
            modes,
            modifier,
            statements,
            ..
        } => {
            if !modes.is_empty() || modifier.is_some() || !statements.is_empty() {
                return unsupported("BEGIN with options");
            }
            Ok(Some(TxControl::Begin))
        }
        Statement::Commit {
            chain, modifier, ..
        } => {
            if chain || modifier.is_some() {
                return unsupported("COMMIT with options");
            }
            Ok(Some(TxControl::Commit))
        }
        Statement::Rollback { chain, savepoint } => {
            if chain || savepoint.is_some() {
                return unsupported("ROLLBACK with options");
            }
            Ok(Some(TxControl::Rollback))
        }
        _ => Ok(None),
    }
}

/// Parses one statement.
pub fn parse_statement(sql: &str) -> Result<Command> {
    let mut p = KalamParser::new(sql)?;
    let command = p.statement()?;
    p.done()?;
    Ok(command)
}

impl KalamParser<'_> {
    /// One statement: KalamDB's own by their leading words, else sqlparser's.
    fn statement(&mut self) -> Result<Command> {
        let w0 = self.word_at(0).unwrap_or_default();
        let w1 = self.word_at(1).unwrap_or_default();
        let w2 = self.word_at(2).unwrap_or_default();
        Ok(match (w0.as_str(), w1.as_str()) {
            ("CREATE", "NAMESPACE") => {
                let if_not_exists = self.skip(2).eat_all(&["IF", "NOT", "EXISTS"]);
                Command::CreateNamespace {
                    name: self.ident()?,
                    if_not_exists,
                }
            }
            ("DROP", "NAMESPACE") => {
                let if_exists = self.skip(2).eat_all(&["IF", "EXISTS"]);
                let name = self.ident()?;
                Command::DropNamespace {
                    name,
                    if_exists,
                    cascade: self.eat("CASCADE"),
                }
            }
            ("USE", _) | ("SET", "NAMESPACE") => {
                self.skip(1).eat("NAMESPACE");
                Command::Use(self.ident()?)
            }
            ("SHOW", "NAMESPACES") => {
                self.skip(2);
                Command::ShowNamespaces
            }
            ("SHOW", "STORAGES") => {
                self.skip(2);
                Command::ShowStorages
            }
            ("SHOW", "MANIFEST") => {
                self.skip(2).eat("CACHE");
                Command::ShowManifest
            }
            ("SHOW", "TABLES") => {
                Command::ShowTables(self.skip(2).namespace_after(&["IN", "FROM"])?)
            }
            ("DESCRIBE" | "DESC", "TABLE") => Command::Describe(self.skip(2).table_ref()?),
            ("SUBSCRIBE", "TO") => self.skip(2).subscribe_to(),
            ("KILL", "LIVE") => self.skip(2).kill_live_query()?,
            ("CLUSTER", "SNAPSHOT") => {
                self.skip(2);
                Command::Cluster(ClusterCommand::Snapshot)
            }
            ("CLUSTER", "TRIGGER") => {
                self.skip(2).expect("ELECTION")?;
                Command::Cluster(ClusterCommand::TriggerElection(self.group_clause()?))
            }
            ("CLUSTER", "ADD") => {
                self.skip(2).expect("NODE")?;
                self.cluster_add()?
            }
            ("CLUSTER", "JOIN") => self.skip(2).cluster_add()?,
            ("CLUSTER", "REMOVE") => {
                self.skip(2).expect("NODE")?;
                Command::Cluster(ClusterCommand::RemoveNode(self.number("the node id")?))
            }
            ("CLUSTER", "TRANSFER") => {
                self.skip(2).expect("LEADER")?;
                let node = self.number("the node id")?;
                Command::Cluster(ClusterCommand::TransferLeader {
                    node,
                    group: self.group_clause()?,
                })
            }
            ("KILL", "QUERY") => self.skip(2).kill_query()?,
            ("KILL", "JOB") => Command::KillJob(self.skip(2).string()?),
            ("KILL", "TRANSACTION") => self.skip(2).kill_transaction()?,
            ("CREATE" | "DROP" | "CLEAR" | "ALTER", "TOPIC")
            | ("CONSUME", "FROM")
            | ("SHOW", "TOPICS")
            | ("DESCRIBE" | "DESC", "TOPIC") => Command::Topic(self.topic_command()?),
            ("ACK", _) => Command::Topic(self.topic_command()?),
            ("CREATE", "STORAGE") => self.skip(2).create_storage()?,
            ("DROP", "STORAGE") => {
                let if_exists = self.skip(2).eat_all(&["IF", "EXISTS"]);
                Command::DropStorage {
                    id: self.ident()?,
                    if_exists,
                }
            }
            ("STORAGE", "CHECK") => {
                let id = self.skip(2).ident()?;
                Command::StorageCheck {
                    id,
                    extended: self.eat("EXTENDED"),
                }
            }
            ("FLUSH", "TABLE") => Command::FlushTable(self.skip(2).table_ref()?),
            ("EXPORT", "USER") => {
                self.skip(2).expect("DATA")?;
                let user = if self.eat_all(&["FOR", "USER"]) {
                    Some(self.ident()?)
                } else {
                    None
                };
                Command::ExportUserData(user)
            }
            ("BACKUP", "DATABASE") => {
                self.skip(2).expect("TO")?;
                Command::Backup(if self.eat("STORAGE") {
                    let storage_id = self.ident()?;
                    self.expect("PATH")?;
                    crate::backup::BackupTarget::Storage {
                        storage_id,
                        path: self.string()?,
                    }
                } else {
                    crate::backup::BackupTarget::Folder(self.string()?.into())
                })
            }
            ("FLUSH", "TOPIC") => Command::Topic(TopicCommand::Flush(self.skip(2).table_ref()?)),
            ("STORAGE", "FLUSH") if w2 == "TOPIC" => {
                Command::Topic(TopicCommand::Flush(self.skip(3).table_ref()?))
            }
            ("STORAGE", verb @ ("FLUSH" | "COMPACT")) if w2 == "TABLE" => {
                let table = self.skip(3).table_ref()?;
                match verb {
                    "FLUSH" => Command::FlushTable(table),
                    _ => Command::CompactTable(table),
                }
            }
            ("STORAGE", verb @ ("FLUSH" | "COMPACT")) if w2 == "ALL" => {
                let ns = self.skip(3).namespace_after(&["IN"])?;
                match verb {
                    "FLUSH" => Command::FlushAll(ns),
                    _ => Command::CompactAll(ns),
                }
            }
            ("STORAGE", verb) => {
                return Err(KalamError::InvalidSql(format!(
                    "expected STORAGE {verb} TABLE ns.t, STORAGE {verb} ALL [IN ns] or \
                     STORAGE FLUSH TOPIC ns.t"
                )));
            }
            ("CREATE", "TABLE") => self.skip(2).create_table(None)?,
            ("CREATE", w) if table_type_word(w).is_some() && w2 == "TABLE" => {
                self.skip(3).create_table(table_type_word(w))?
            }
            ("ALTER", "TABLE") => self.skip(2).alter_table()?,
            ("ALTER", "USER" | "SHARED" | "STREAM") if w2 == "TABLE" => {
                self.skip(3).alter_table()?
            }
            ("DROP", "TABLE") => self.skip(2).drop_table(None)?,
            ("DROP", w @ ("USER" | "SHARED" | "STREAM")) if w2 == "TABLE" => {
                self.skip(3).drop_table(table_type_word(w))?
            }
            ("CREATE", "USER") => self.skip(2).create_user()?,
            ("DROP", "USER") => {
                let if_exists = self.skip(2).eat_all(&["IF", "EXISTS"]);
                Command::DropUser {
                    name: self.ident()?,
                    if_exists,
                }
            }
            ("ALTER", "USER") => self.skip(2).alter_user()?,
            _ => {
                let mut stmt = self.p.parse_statement().map_err(invalid)?;
                crate::json_ops::bind_json_arrows(&mut stmt);
                Command::Sql(Box::new(stmt))
            }
        })
    }

    /// `SUBSCRIBE TO <query>`: the query as written, not re-rendered tokens (it is checked
    /// when answered, see `subscribe.rs`).
    fn subscribe_to(&mut self) -> Command {
        let rest = self.rest_text().trim().trim_end_matches(';').trim_end();
        while self.p.next_token().token != Token::EOF {}
        Command::SubscribeTo(rest.to_string())
    }

    /// `KILL LIVE QUERY 'live_id'`, after `KILL LIVE`.
    fn kill_live_query(&mut self) -> Result<Command> {
        if !self.eat("QUERY") {
            return Err(KalamError::InvalidSql(
                "expected KILL LIVE QUERY 'live_id'".into(),
            ));
        }
        Ok(Command::KillLiveQuery(self.string()?))
    }

    /// `KILL QUERY <query_id>` (a number, bare or quoted), after `KILL QUERY`.
    fn kill_query(&mut self) -> Result<Command> {
        let bad = || KalamError::InvalidSql("expected KILL QUERY <query_id>".into());
        let id = match self.p.next_token().token {
            Token::Number(n, _) | Token::SingleQuotedString(n) => n,
            _ => return Err(bad()),
        };
        Ok(Command::KillQuery(id.trim().parse().map_err(|_| bad())?))
    }

    /// `id [RPC] 'ip:port' [API] 'url'` of `CLUSTER ADD NODE` / `CLUSTER JOIN`.
    fn cluster_add(&mut self) -> Result<Command> {
        let node = self.number("the node id")?;
        self.eat("RPC");
        let rpc_addr = self.string()?;
        self.eat("API");
        let api_url = self.string()?;
        Ok(Command::Cluster(ClusterCommand::AddNode {
            node,
            rpc_addr,
            api_url,
        }))
    }

    /// `GROUP g` when present.
    fn group_clause(&mut self) -> Result<Option<u64>> {
        if self.eat("GROUP") {
            Ok(Some(self.number("the group id")?))
        } else {
            Ok(None)
        }
    }

    /// A non-negative integer.
    fn number(&mut self, what: &str) -> Result<u64> {
        match self.p.next_token().token {
            Token::Number(n, _) => n.parse().map_err(|_| {
                KalamError::InvalidSql(format!("{what} must be a whole number, not {n}"))
            }),
            other => Err(KalamError::InvalidSql(format!(
                "expected {what} (a number) near '{other}'"
            ))),
        }
    }

    /// `WITH (NAME = value, …)` when present: upper-cased names, values as text.
    fn with_options(&mut self) -> Result<Vec<(String, String)>> {
        let mut out = Vec::new();
        if !self.eat("WITH") {
            return Ok(out);
        }
        if !self.p.consume_token(&Token::LParen) {
            return Err(KalamError::InvalidSql(format!(
                "expected ( near {}",
                self.near()
            )));
        }
        loop {
            let name = self.ident()?.to_ascii_uppercase();
            if !self.p.consume_token(&Token::Eq) {
                return Err(KalamError::InvalidSql(format!(
                    "expected = near {}",
                    self.near()
                )));
            }
            let value = match self.p.next_token().token {
                Token::Number(n, _) => n,
                Token::SingleQuotedString(s) | Token::DoubleQuotedString(s) => s,
                Token::Word(w) => w.value,
                other => {
                    return Err(KalamError::InvalidSql(format!(
                        "expected a value for {name} near '{other}'"
                    )));
                }
            };
            out.push((name, value));
            if self.p.consume_token(&Token::RParen) {
                return Ok(out);
            }
            if !self.p.consume_token(&Token::Comma) {
                return Err(KalamError::InvalidSql(format!(
                    "expected , or ) near {}",
                    self.near()
                )));
            }
        }
    }

    /// A topic statement, from its first word.
    fn topic_command(&mut self) -> Result<TopicCommand> {
        let w0 = self.word_at(0).unwrap_or_default();
        if w0 == "SHOW" {
            return Ok(TopicCommand::Show(
                self.skip(2).namespace_after(&["IN", "FROM"])?,
            ));
        }
        if w0 == "ACK" {
            let topic = self.skip(1).table_ref()?;
            self.expect("GROUP")?;
            let group = self.string()?;
            let partition = if self.eat("PARTITION") {
                self.number("PARTITION")? as u32
            } else {
                0
            };
            self.expect("UPTO")?;
            self.eat("OFFSET");
            let upto = self.number("the offset")?;
            return Ok(TopicCommand::Ack {
                topic,
                group,
                partition,
                upto,
            });
        }
        if w0 == "CONSUME" {
            let topic = self.skip(2).table_ref()?;
            let (mut group, mut partition, mut start, mut limit) =
                (None, 0, crate::topics::Start::Latest, 100);
            loop {
                if self.eat("GROUP") {
                    group = Some(self.string()?);
                } else if self.eat("PARTITION") {
                    partition = self.number("PARTITION")? as u32;
                } else if self.eat("FROM") {
                    start = if self.eat("EARLIEST") {
                        crate::topics::Start::Earliest
                    } else if self.eat("LATEST") {
                        crate::topics::Start::Latest
                    } else {
                        self.eat("OFFSET");
                        crate::topics::Start::Offset(self.number("the start offset")?)
                    };
                } else if self.eat("LIMIT") {
                    limit = self.number("LIMIT")?;
                } else {
                    break;
                }
            }
            return Ok(TopicCommand::Consume {
                topic,
                group,
                partition,
                start,
                limit,
            });
        }
        let topic_of = |p: &mut Self| p.skip(2).table_ref();
        Ok(match w0.as_str() {
            "CREATE" => {
                let if_not_exists = self.skip(2).eat_all(&["IF", "NOT", "EXISTS"]);
                let topic = self.table_ref()?;
                let partitions = if self.eat("PARTITIONS") {
                    self.number("PARTITIONS")? as u32
                } else {
                    1
                };
                TopicCommand::Create {
                    topic,
                    if_not_exists,
                    partitions,
                    options: self.with_options()?,
                }
            }
            "DROP" => {
                let if_exists = self.skip(2).eat_all(&["IF", "EXISTS"]);
                TopicCommand::Drop {
                    topic: self.table_ref()?,
                    if_exists,
                }
            }
            "CLEAR" => TopicCommand::Clear(topic_of(self)?),
            "DESCRIBE" | "DESC" => TopicCommand::Describe(topic_of(self)?),
            _ => {
                let topic = topic_of(self)?;
                let add = self.eat("ADD");
                if !add && !self.eat("DROP") {
                    return Err(KalamError::InvalidSql(
                        "expected ALTER TOPIC t ADD SOURCE … or DROP SOURCE …".into(),
                    ));
                }
                self.expect("SOURCE")?;
                let table = self.table_ref()?;
                let op = if self.eat("ON") {
                    let op = self.ident()?.to_ascii_lowercase();
                    if !matches!(op.as_str(), "insert" | "update" | "delete") {
                        return Err(KalamError::InvalidSql(format!(
                            "expected ON INSERT, UPDATE or DELETE, not {op}"
                        )));
                    }
                    Some(op)
                } else {
                    None
                };
                if !add {
                    return Ok(TopicCommand::DropSource { topic, table, op });
                }
                let op = op.ok_or_else(|| {
                    KalamError::InvalidSql("ADD SOURCE needs ON INSERT, UPDATE or DELETE".into())
                })?;
                let filter = if self.eat("WHERE") {
                    let e = self
                        .p
                        .parse_expr()
                        .map_err(|e| KalamError::InvalidSql(e.to_string()))?;
                    Some(e.to_string())
                } else {
                    None
                };
                let mut payload = "full".to_string();
                for (name, value) in self.with_options()? {
                    match name.as_str() {
                        "PAYLOAD" => payload = value.to_ascii_lowercase(),
                        other => {
                            return Err(KalamError::InvalidSql(format!(
                                "unknown ADD SOURCE option {other} (PAYLOAD is known)"
                            )));
                        }
                    }
                }
                if !matches!(payload.as_str(), "key" | "full" | "diff") {
                    return Err(KalamError::InvalidSql(format!(
                        "PAYLOAD must be 'key', 'full' or 'diff', not '{payload}'"
                    )));
                }
                TopicCommand::AddSource {
                    topic,
                    table,
                    op,
                    payload,
                    filter,
                }
            }
        })
    }

    /// `KILL TRANSACTION <id>` (a number, bare or quoted), after `KILL TRANSACTION`.
    fn kill_transaction(&mut self) -> Result<Command> {
        match self.p.next_token().token {
            Token::Number(n, _) | Token::SingleQuotedString(n) => Ok(Command::KillTransaction(n)),
            _ => Err(KalamError::InvalidSql(
                "expected KILL TRANSACTION <transaction_id>".into(),
            )),
        }
    }

    /// `CREATE STORAGE id TYPE 'kind' [KEY 'value' …]`, after `CREATE STORAGE`.
    fn create_storage(&mut self) -> Result<Command> {
        let id = self.ident()?;
        self.expect("TYPE")?;
        let storage_type = self.string()?.to_ascii_lowercase();
        let mut options = Vec::new();
        while !matches!(self.p.peek_token().token, Token::EOF | Token::SemiColon) {
            let key = self.word_at(0).ok_or_else(|| {
                KalamError::InvalidSql(format!("expected a storage option near {}", self.near()))
            })?;
            self.skip(1);
            options.push((key, self.string()?));
        }
        Ok(Command::CreateStorage {
            id,
            storage_type,
            options,
        })
    }

    /// `CREATE [USER|SHARED|STREAM] TABLE …` after `TABLE`: the rest is sqlparser's, and
    /// PostgreSQL's `USING <access method>` after the column list is accepted and ignored
    /// (before or after `WITH (…)`).
    fn create_table(&mut self, prefix_type: Option<TableType>) -> Result<Command> {
        let mut stmt = self
            .p
            .parse_create_table(false, false, None, false)
            .map_err(invalid)?;
        if self.eat("USING") {
            self.ident()?;
            if matches!(stmt.table_options, CreateTableOptions::None) && self.peek_is(0, "WITH") {
                let options = self.p.parse_options(Keyword::WITH).map_err(invalid)?;
                stmt.table_options = CreateTableOptions::With(options);
            }
        }
        Ok(Command::CreateTable {
            prefix_type,
            stmt: Box::new(stmt),
        })
    }

    /// `ALTER [USER|SHARED|STREAM] TABLE ns.t <change>`, after `TABLE`.
    fn alter_table(&mut self) -> Result<Command> {
        let table = self.table_ref()?;
        let change = if self.peek_is(0, "SET") && !self.peek_is(1, "TBLPROPERTIES") {
            self.skip(1).alter_set_option()?
        } else {
            let op = self.p.parse_alter_table_operation().map_err(invalid)?;
            if self.p.peek_token().token == Token::Comma {
                return Err(KalamError::InvalidSql(
                    "ALTER TABLE takes one change per statement".into(),
                ));
            }
            alter_change(op)?
        };
        Ok(Command::AlterTable { table, change })
    }

    /// `SET ACCESS_LEVEL [=] 'x'` / `SET ACCESS LEVEL x` / `SET TTL_SECONDS [=] n` /
    /// `SET FLUSH_POLICY [=] 'p'`, after the `SET`.
    fn alter_set_option(&mut self) -> Result<AlterChange> {
        let key = if self.eat_all(&["ACCESS", "LEVEL"]) {
            "ACCESS_LEVEL".to_string()
        } else {
            let key = self.word_at(0).ok_or_else(|| {
                KalamError::InvalidSql(format!("expected an option after SET near {}", self.near()))
            })?;
            self.skip(1);
            key
        };
        let _ = self.p.consume_token(&Token::Eq);
        let value = match self.p.peek_token().token {
            Token::Number(n, _) => {
                self.skip(1);
                n
            }
            _ => self.string()?,
        };
        Ok(AlterChange::SetOption(key, value))
    }

    /// `DROP [USER|SHARED|STREAM] TABLE [IF EXISTS] ns.t`, after `TABLE`.
    fn drop_table(&mut self, table_type: Option<TableType>) -> Result<Command> {
        let if_exists = self.eat_all(&["IF", "EXISTS"]);
        Ok(Command::DropTable {
            table: self.table_ref()?,
            table_type,
            if_exists,
        })
    }

    /// `CREATE USER name WITH PASSWORD 'pw' | WITH OAUTH PROVIDER 'p' SUBJECT 's' [ROLE 'r']
    /// [EMAIL 'e']`, after `CREATE USER`. Upstream's `WITH OAUTH '{"provider": …,
    /// "subject": …}'` is accepted too.
    fn create_user(&mut self) -> Result<Command> {
        let name = self.ident()?;
        self.expect("WITH")?;
        let login = if self.eat("OAUTH") {
            if self.eat("PROVIDER") {
                let provider = self.string()?;
                self.expect("SUBJECT")?;
                UserLogin::OAuth {
                    provider,
                    subject: self.string()?,
                }
            } else {
                let text = self.string()?;
                let json: serde_json::Value = serde_json::from_str(&text).map_err(|e| {
                    KalamError::InvalidSql(format!("WITH OAUTH needs a JSON object: {e}"))
                })?;
                let field = |k: &str| {
                    json.get(k)
                        .and_then(|v| v.as_str())
                        .map(str::to_string)
                        .ok_or_else(|| {
                            KalamError::InvalidSql(format!(
                                "WITH OAUTH JSON needs a \"{k}\" string"
                            ))
                        })
                };
                UserLogin::OAuth {
                    provider: field("provider")?,
                    subject: field("subject")?,
                }
            }
        } else {
            self.expect("PASSWORD")?;
            UserLogin::Password(self.string()?)
        };
        let (mut role, mut email) = (None, None);
        loop {
            if self.eat("ROLE") {
                role = Some(self.string()?);
            } else if self.eat("EMAIL") {
                email = Some(self.string()?);
            } else {
                break;
            }
        }
        Ok(Command::CreateUser {
            name,
            login,
            role,
            email,
        })
    }

    /// `ALTER USER name SET PASSWORD|ROLE|EMAIL 'value'`, after `ALTER USER`.
    fn alter_user(&mut self) -> Result<Command> {
        let name = self.ident()?;
        self.expect("SET")?;
        let change = if self.eat("PASSWORD") {
            UserChange::Password(self.string()?)
        } else if self.eat("ROLE") {
            UserChange::Role(self.string()?)
        } else if self.eat("EMAIL") {
            UserChange::Email(self.string()?)
        } else {
            return Err(KalamError::InvalidSql(format!(
                "expected PASSWORD, ROLE or EMAIL near {}",
                self.near()
            )));
        };
        Ok(Command::AlterUser { name, change })
    }
}

fn invalid(e: ParserError) -> KalamError {
    KalamError::InvalidSql(e.to_string())
}

/// One column change of `ALTER TABLE`, as KalamDB makes it.
fn alter_change(op: Op) -> Result<AlterChange> {
    match op {
        Op::AddColumn {
            column_def,
            column_position: None,
            ..
        } => Ok(AlterChange::AddColumn(Box::new(column_def))),
        Op::DropColumn { column_names, .. } if column_names.len() == 1 => {
            Ok(AlterChange::DropColumn(column_name(&column_names[0])))
        }
        Op::RenameColumn {
            old_column_name,
            new_column_name,
        } => Ok(AlterChange::RenameColumn(
            column_name(&old_column_name),
            column_name(&new_column_name),
        )),
        Op::ModifyColumn {
            col_name,
            data_type,
            options,
            column_position: None,
        } => modify_column(&col_name, &data_type, options),
        Op::AlterColumn { column_name: c, op } => alter_column(column_name(&c), op),
        Op::SetTblProperties { table_properties } if table_properties.len() == 1 => {
            set_table_property(&table_properties[0])
        }
        other => unsupported_change(other.to_string()),
    }
}

/// A column name of an `ALTER TABLE` change, folded.
fn column_name(i: &Ident) -> String {
    fold(&i.value, i.quote_style.is_some())
}

/// The error of an `ALTER TABLE` change KalamDB does not make.
fn unsupported_change(what: String) -> Result<AlterChange> {
    Err(KalamError::InvalidSql(format!(
        "Unsupported ALTER TABLE change: {what}"
    )))
}

/// `MODIFY [COLUMN] c type [NOT NULL|NULL]`: a type change, and maybe a nullability one.
fn modify_column(
    col_name: &Ident,
    data_type: &DataType,
    options: Vec<ColumnOption>,
) -> Result<AlterChange> {
    let mut nullable = None;
    for o in options {
        match o {
            ColumnOption::NotNull => nullable = Some(false),
            ColumnOption::Null => nullable = Some(true),
            other => return unsupported_change(format!("column option {other}")),
        }
    }
    Ok(AlterChange::SetType(
        column_name(col_name),
        data_type.to_string(),
        nullable,
    ))
}

/// `ALTER COLUMN c SET|DROP NOT NULL`, `SET|DROP DEFAULT`, `[SET DATA] TYPE t`.
fn alter_column(column: String, op: Col) -> Result<AlterChange> {
    match op {
        Col::SetNotNull => Ok(AlterChange::SetNullable(column, false)),
        Col::DropNotNull => Ok(AlterChange::SetNullable(column, true)),
        Col::SetDefault { value } => Ok(AlterChange::SetDefault(column, Some(Box::new(value)))),
        Col::DropDefault => Ok(AlterChange::SetDefault(column, None)),
        Col::SetDataType {
            data_type,
            using: None,
            ..
        } => Ok(AlterChange::SetType(column, data_type.to_string(), None)),
        other => unsupported_change(other.to_string()),
    }
}

/// `SET TBLPROPERTIES (key = value)`: one table option.
fn set_table_property(option: &SqlOption) -> Result<AlterChange> {
    match option {
        SqlOption::KeyValue { key, value } => {
            let v = match value {
                Expr::Value(v) => match &v.value {
                    SqlValue::SingleQuotedString(s) => s.clone(),
                    other => other.to_string(),
                },
                other => other.to_string(),
            };
            Ok(AlterChange::SetOption(key.value.to_ascii_uppercase(), v))
        }
        other => unsupported_change(other.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn own_statements() {
        for sql in [
            "CLUSTER ADD NODE 4 RPC '127.0.0.1:9104' API 'http://127.0.0.1:8084'",
            "cluster join 4 '127.0.0.1:9104' 'http://127.0.0.1:8084'",
        ] {
            assert!(
                matches!(
                    parse_statement(sql).unwrap(),
                    Command::Cluster(ClusterCommand::AddNode { node: 4, ref rpc_addr, ref api_url })
                        if rpc_addr == "127.0.0.1:9104" && api_url == "http://127.0.0.1:8084"
                ),
                "{sql}"
            );
        }
        assert!(matches!(
            parse_statement("CLUSTER REMOVE NODE 2").unwrap(),
            Command::Cluster(ClusterCommand::RemoveNode(2))
        ));
        assert!(parse_statement("CLUSTER REMOVE 2").is_err());
        assert!(matches!(
            parse_statement("CREATE NAMESPACE IF NOT EXISTS App").unwrap(),
            Command::CreateNamespace { ref name, if_not_exists: true } if name == "app"
        ));
        assert!(matches!(
            parse_statement("drop namespace app cascade;").unwrap(),
            Command::DropNamespace {
                cascade: true,
                if_exists: false,
                ..
            }
        ));
        assert!(matches!(
            parse_statement("SHOW TABLES IN app").unwrap(),
            Command::ShowTables(Some(_))
        ));
        assert!(matches!(
            parse_statement("CREATE USER TABLE app.t (id BIGINT PRIMARY KEY)").unwrap(),
            Command::CreateTable {
                prefix_type: Some(TableType::User),
                ..
            }
        ));
        assert!(matches!(
            parse_statement("CREATE USER bob WITH PASSWORD 'secret123' ROLE 'dba'").unwrap(),
            Command::CreateUser { ref role, .. } if role.as_deref() == Some("dba")
        ));
        assert!(matches!(
            parse_statement("CREATE TABLE app.t (id INT PRIMARY KEY) WITH (TYPE = 'SHARED', ACCESS_LEVEL = 'PUBLIC')")
                .unwrap(),
            Command::CreateTable { prefix_type: None, .. }
        ));
        assert!(matches!(
            parse_statement("SELECT 1").unwrap(),
            Command::Sql(_)
        ));
        assert!(parse_statement("CREATE NAMESPACE").is_err());
        assert!(parse_statement("SHOW NAMESPACES extra").is_err());
        assert_eq!(
            execute_as("execute as user 'alice' (SELECT (1))").unwrap(),
            Some(("alice".to_string(), "SELECT (1)".to_string()))
        );
        assert_eq!(execute_as("SELECT 1").unwrap(), None);
        assert!(execute_as("EXECUTE AS USER 'alice' ()").is_err());
        assert!(execute_as("EXECUTE AS USER alice SELECT 1").is_err());
        assert!(matches!(
            parse_statement("ALTER USER bob SET ROLE 'dba'").unwrap(),
            Command::AlterUser { change: UserChange::Role(ref r), .. } if r == "dba"
        ));
        assert!(parse_statement("ALTER USER bob SET COLOR 'red'").is_err());
        assert_eq!(
            leading_words("  -- c\n/* x */ select\tFROM", 3),
            vec!["SELECT", "FROM"]
        );
        assert!(matches!(
            parse_statement("/* hi */ SHOW NAMESPACES").unwrap(),
            Command::ShowNamespaces
        ));
    }

    #[test]
    fn one_tokenization_serves_every_part() {
        // The type word is skipped, not cut out of the text: a column may be named `user`.
        let Command::CreateTable { stmt, prefix_type } = parse_statement(
            "CREATE USER TABLE app.t (id BIGINT PRIMARY KEY, \"user\" TEXT DEFAULT CURRENT_USER())",
        )
        .unwrap() else {
            panic!("not a CREATE TABLE")
        };
        assert_eq!(prefix_type, Some(TableType::User));
        assert_eq!(stmt.columns.len(), 2);
        assert!(
            stmt.columns[1].to_string().contains("CURRENT_USER"),
            "{stmt}"
        );
        assert!(matches!(
            parse_statement("ALTER SHARED TABLE app.t ADD COLUMN n INT").unwrap(),
            Command::AlterTable {
                change: AlterChange::AddColumn(_),
                ..
            }
        ));
        assert!(matches!(
            parse_statement("ALTER TABLE app.t SET ACCESS LEVEL public").unwrap(),
            Command::AlterTable { change: AlterChange::SetOption(ref k, ref v), .. }
                if k == "ACCESS_LEVEL" && v == "public"
        ));
        let err = parse_statement("ALTER TABLE app.t ADD COLUMN a INT, ADD COLUMN b INT")
            .unwrap_err()
            .to_string();
        assert!(err.contains("one change"), "{err}");
        // SUBSCRIBE TO keeps the query as written, across lines and non-ASCII text.
        assert!(matches!(
            parse_statement("SUBSCRIBE TO\n  SELECT * FROM app.t WHERE name = 'é\u{1F600}' ;").unwrap(),
            Command::SubscribeTo(ref q) if q == "SELECT * FROM app.t WHERE name = 'é\u{1F600}'"
        ));
        // A number glued to a word reaches the naming rules whole.
        assert!(matches!(
            parse_statement("CREATE NAMESPACE 1abc").unwrap(),
            Command::CreateNamespace { ref name, .. } if name == "1abc"
        ));
        assert!(parse_statement("SELECT 1; SELECT 2").is_err());
        assert!(parse_statement("SELECT CURRENT_USER()").is_ok());
    }
}
