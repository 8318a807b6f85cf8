//! Recognises KalamDB's own statements; everything else is parsed by sqlparser.
//!
//! Own statements: `CREATE|DROP NAMESPACE`, `USE [NAMESPACE]`, `SET NAMESPACE`,
//! `SHOW NAMESPACES|TABLES|STORAGES`, `DESCRIBE|DESC TABLE`, `CREATE [USER|SHARED|STREAM] TABLE`
//! (the type word is taken off before sqlparser sees the rest), `DROP [..] TABLE`,
//! `CREATE USER … WITH PASSWORD … [ROLE …] [EMAIL …]`, `DROP USER`. Unquoted identifiers are
//! folded to lower case, as DataFusion does.

use datafusion::sql::sqlparser::ast::{
    AlterColumnOperation as Col, AlterTableOperation as Op, ColumnOption, CreateTable, DataType,
    Expr, Ident, ObjectName, ObjectNamePart, ObjectType, SqlOption, Statement, Value as SqlValue,
};
use datafusion::sql::sqlparser::dialect::GenericDialect;
use datafusion::sql::sqlparser::parser::Parser;
use datafusion::sql::sqlparser::tokenizer::{Token, Tokenizer};
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
    /// `SUBSCRIBE TO <select> [OPTIONS (…)]` (the text after `TO`)
    SubscribeTo(String),
    /// `KILL LIVE QUERY 'live_id'`
    KillLiveQuery(String),
    /// `STORAGE FLUSH TABLE [ns.]t` (also `FLUSH TABLE [ns.]t`)
    FlushTable(TableRef),
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
    StorageCheck(String),
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
    /// `CREATE USER u WITH PASSWORD 'p' [ROLE r] [EMAIL 'e']`
    CreateUser {
        /// Id.
        name: String,
        /// Password.
        password: String,
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

/// Folds an unquoted identifier to lower case.
pub fn fold(value: &str, quoted: bool) -> String {
    if quoted {
        value.to_string()
    } else {
        value.to_ascii_lowercase()
    }
}

/// Token cursor for the hand-parsed statements.
struct Cursor {
    toks: Vec<Token>,
    pos: usize,
}

impl Cursor {
    fn new(sql: &str) -> Result<Self> {
        let raw = Tokenizer::new(&GenericDialect {}, sql)
            .tokenize()
            .map_err(|e| KalamError::InvalidSql(e.to_string()))?;
        let mut toks: Vec<Token> = Vec::with_capacity(raw.len());
        let mut prev_was_number = false;
        for t in raw {
            // `1abc` tokenizes as a number then a word; glue them so the identifier rules can
            // say what is wrong with the name.
            if let (true, Token::Word(w)) = (prev_was_number, &t)
                && let Some(Token::Number(n, _)) = toks.last()
            {
                let glued = Token::make_word(&format!("{n}{}", w.value), None);
                *toks.last_mut().expect("checked") = glued;
                prev_was_number = false;
                continue;
            }
            prev_was_number = matches!(t, Token::Number(..));
            if !matches!(t, Token::Whitespace(_) | Token::EOF | Token::SemiColon) {
                toks.push(t);
            }
        }
        Ok(Self { toks, pos: 0 })
    }

    fn word_at(&self, i: usize) -> Option<String> {
        match self.toks.get(i) {
            Some(Token::Word(w)) if w.quote_style.is_none() => Some(w.value.to_ascii_uppercase()),
            _ => None,
        }
    }

    fn peek_is(&self, offset: usize, w: &str) -> bool {
        self.word_at(self.pos + offset).as_deref() == Some(w)
    }

    fn eat(&mut self, w: &str) -> bool {
        if self.peek_is(0, w) {
            self.pos += 1;
            true
        } else {
            false
        }
    }

    fn eat_all(&mut self, words: &[&str]) -> bool {
        if words.iter().enumerate().all(|(i, w)| self.peek_is(i, w)) {
            self.pos += words.len();
            true
        } else {
            false
        }
    }

    fn expect(&mut self, w: &str) -> Result<()> {
        if self.eat(w) {
            Ok(())
        } else {
            Err(KalamError::InvalidSql(format!(
                "expected {w} near {}",
                self.near()
            )))
        }
    }

    fn near(&self) -> String {
        self.toks
            .get(self.pos)
            .map(|t| format!("'{t}'"))
            .unwrap_or_else(|| "end of statement".into())
    }

    /// An identifier or a quoted name.
    fn ident(&mut self) -> Result<String> {
        let out = match self.toks.get(self.pos) {
            Some(Token::Word(w)) => fold(&w.value, w.quote_style.is_some()),
            Some(Token::SingleQuotedString(s)) => s.clone(),
            // Let the identifier rules explain why `1abc` is not a name.
            Some(Token::Number(n, _)) => n.clone(),
            _ => {
                return Err(KalamError::InvalidSql(format!(
                    "expected a name near {}",
                    self.near()
                )));
            }
        };
        self.pos += 1;
        Ok(out)
    }

    /// A string literal (or bare word).
    fn string(&mut self) -> Result<String> {
        let out = match self.toks.get(self.pos) {
            Some(Token::SingleQuotedString(s)) | Some(Token::DoubleQuotedString(s)) => s.clone(),
            Some(Token::Word(w)) => w.value.clone(),
            _ => {
                return Err(KalamError::InvalidSql(format!(
                    "expected a string near {}",
                    self.near()
                )));
            }
        };
        self.pos += 1;
        Ok(out)
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
        if self.toks.get(self.pos) == Some(&Token::Period) {
            self.pos += 1;
            let table = self.ident()?;
            Ok(TableRef {
                namespace: Some(first),
                table,
            })
        } else {
            Ok(TableRef {
                namespace: None,
                table: first,
            })
        }
    }

    /// Moves to token `pos` (past a statement's leading words).
    fn skip_to(&mut self, pos: usize) -> &mut Self {
        self.pos = pos;
        self
    }

    fn done(&self) -> Result<()> {
        if self.pos == self.toks.len() {
            Ok(())
        } else {
            Err(KalamError::InvalidSql(format!(
                "unexpected {}",
                self.near()
            )))
        }
    }
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

    /// Whether the statement creates, drops or alters a catalog object (see
    /// [`crate::app_context::AppContext::ddl_lock`]).
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
            | ("SHOW", "NAMESPACES" | "STORAGES" | "TABLES")
            | ("DESCRIBE" | "DESC", "TABLE")
            | ("KILL", "LIVE" | "JOB" | "QUERY")
            | ("FLUSH", "TABLE")
            | ("STORAGE", "FLUSH" | "COMPACT" | "CHECK")
            | ("SUBSCRIBE", "TO")
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
        Command::CreateStorage { id, .. } => ("CREATE_STORAGE", id),
        Command::DropStorage { id, .. } => ("DROP_STORAGE", id),
        Command::FlushTable(table) => {
            let ns = table.namespace.map(|n| n + ".").unwrap_or_default();
            ("FLUSH_TABLE", format!("{ns}{}", table.table))
        }
        Command::FlushAll(ns) => ("FLUSH_ALL", ns.unwrap_or_default()),
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

/// Parses one statement.
pub fn parse_statement(sql: &str) -> Result<Command> {
    if !is_own_statement(&leading_words(sql, 2)) {
        return parse_standard(sql);
    }
    let mut c = Cursor::new(sql)?;
    let w0 = c.word_at(0).unwrap_or_default();
    let w1 = c.word_at(1).unwrap_or_default();
    let w2 = c.word_at(2).unwrap_or_default();
    let cmd = match (w0.as_str(), w1.as_str()) {
        ("CREATE", "NAMESPACE") => create_namespace(&mut c)?,
        ("DROP", "NAMESPACE") => drop_namespace(&mut c)?,
        ("USE", _) | ("SET", "NAMESPACE") => use_namespace(&mut c)?,
        ("SHOW", "NAMESPACES") => {
            c.skip_to(2);
            Command::ShowNamespaces
        }
        ("SHOW", "STORAGES") => {
            c.skip_to(2);
            Command::ShowStorages
        }
        ("SUBSCRIBE", "TO") => subscribe_to(&mut c, sql),
        ("KILL", "LIVE") => kill_live_query(&mut c)?,
        ("CREATE", "STORAGE") => create_storage(&mut c)?,
        ("DROP", "STORAGE") => drop_storage(&mut c)?,
        ("STORAGE", "CHECK") => storage_check(&mut c)?,
        ("KILL", "QUERY") => kill_query(&mut c)?,
        ("KILL", "JOB") => Command::KillJob(c.skip_to(2).string()?),
        ("FLUSH", "TABLE") => Command::FlushTable(c.skip_to(2).table_ref()?),
        ("STORAGE", verb @ ("FLUSH" | "COMPACT")) if w2 == "TABLE" => storage_table(&mut c, verb)?,
        ("STORAGE", verb @ ("FLUSH" | "COMPACT")) if w2 == "ALL" => storage_all(&mut c, verb)?,
        ("STORAGE", verb) => {
            return Err(KalamError::InvalidSql(format!(
                "expected STORAGE {verb} TABLE ns.t or STORAGE {verb} ALL [IN ns]"
            )));
        }
        ("SHOW", "TABLES") => Command::ShowTables(c.skip_to(2).namespace_after(&["IN", "FROM"])?),
        ("DESCRIBE" | "DESC", "TABLE") => Command::Describe(c.skip_to(2).table_ref()?),
        ("CREATE", "TABLE") => return create_table(sql, None),
        ("CREATE", w) if table_type_word(w).is_some() && w2 == "TABLE" => {
            return create_typed_table(sql, w);
        }
        ("ALTER", "TABLE") | ("ALTER", "USER" | "SHARED" | "STREAM")
            if w1 == "TABLE" || w2 == "TABLE" =>
        {
            alter_table(&mut c, &w1)?
        }
        ("DROP", "TABLE") | ("DROP", "USER" | "SHARED" | "STREAM")
            if w1 == "TABLE" || w2 == "TABLE" =>
        {
            drop_table(&mut c, &w1)?
        }
        ("CREATE", "USER") => create_user(&mut c)?,
        ("DROP", "USER") => drop_user(&mut c)?,
        ("ALTER", "USER") => alter_user(&mut c)?,
        _ => return parse_standard(sql),
    };
    c.done()?;
    Ok(cmd)
}

/// `CREATE NAMESPACE [IF NOT EXISTS] ns`.
fn create_namespace(c: &mut Cursor) -> Result<Command> {
    c.pos = 2;
    let if_not_exists = c.eat_all(&["IF", "NOT", "EXISTS"]);
    let name = c.ident()?;
    Ok(Command::CreateNamespace {
        name,
        if_not_exists,
    })
}

/// `DROP NAMESPACE [IF EXISTS] ns [CASCADE]`.
fn drop_namespace(c: &mut Cursor) -> Result<Command> {
    c.pos = 2;
    let if_exists = c.eat_all(&["IF", "EXISTS"]);
    let name = c.ident()?;
    let cascade = c.eat("CASCADE");
    Ok(Command::DropNamespace {
        name,
        if_exists,
        cascade,
    })
}

/// `USE [NAMESPACE] ns` / `SET NAMESPACE ns`.
fn use_namespace(c: &mut Cursor) -> Result<Command> {
    c.pos = 1;
    c.eat("NAMESPACE");
    Ok(Command::Use(c.ident()?))
}

/// `SUBSCRIBE TO <query>`: the query as written after the two leading words, not
/// re-rendered tokens.
fn subscribe_to(c: &mut Cursor, sql: &str) -> Command {
    c.pos = c.toks.len();
    // ASCII upper-casing keeps byte offsets.
    let upper = sql.to_ascii_uppercase();
    let after = upper
        .find("SUBSCRIBE")
        .and_then(|at| upper[at..].find("TO").map(|to| at + to + 2))
        .unwrap_or(sql.len());
    let rest = sql[after..].trim().trim_end_matches(';').trim_end();
    Command::SubscribeTo(rest.to_string())
}

/// `KILL LIVE QUERY 'live_id'`.
fn kill_live_query(c: &mut Cursor) -> Result<Command> {
    c.pos = 2;
    if !c.eat("QUERY") {
        return Err(KalamError::InvalidSql(
            "expected KILL LIVE QUERY 'live_id'".into(),
        ));
    }
    Ok(Command::KillLiveQuery(c.string()?))
}

/// `KILL QUERY <query_id>` (a number, bare or quoted).
fn kill_query(c: &mut Cursor) -> Result<Command> {
    c.pos = 2;
    let bad = || KalamError::InvalidSql("expected KILL QUERY <query_id>".into());
    let id = match c.toks.get(c.pos) {
        Some(Token::Number(n, _)) => n.clone(),
        Some(Token::SingleQuotedString(s)) => s.clone(),
        _ => return Err(bad()),
    };
    c.pos += 1;
    Ok(Command::KillQuery(id.trim().parse().map_err(|_| bad())?))
}

/// `CREATE STORAGE id TYPE 'kind' [KEY 'value' …]`.
fn create_storage(c: &mut Cursor) -> Result<Command> {
    c.pos = 2;
    let id = c.ident()?;
    c.expect("TYPE")?;
    let storage_type = c.string()?.to_ascii_lowercase();
    let mut options = Vec::new();
    while c.pos < c.toks.len() {
        let key = c.word_at(c.pos).ok_or_else(|| {
            KalamError::InvalidSql(format!("expected a storage option near {}", c.near()))
        })?;
        c.pos += 1;
        options.push((key, c.string()?));
    }
    Ok(Command::CreateStorage {
        id,
        storage_type,
        options,
    })
}

/// `DROP STORAGE [IF EXISTS] id`.
fn drop_storage(c: &mut Cursor) -> Result<Command> {
    c.pos = 2;
    let if_exists = c.eat_all(&["IF", "EXISTS"]);
    Ok(Command::DropStorage {
        id: c.ident()?,
        if_exists,
    })
}

/// `STORAGE CHECK id [EXTENDED]`.
fn storage_check(c: &mut Cursor) -> Result<Command> {
    c.pos = 2;
    let id = c.ident()?;
    c.eat("EXTENDED");
    Ok(Command::StorageCheck(id))
}

/// `STORAGE FLUSH|COMPACT TABLE ns.t`.
fn storage_table(c: &mut Cursor, verb: &str) -> Result<Command> {
    c.pos = 3;
    let table = c.table_ref()?;
    Ok(if verb == "FLUSH" {
        Command::FlushTable(table)
    } else {
        Command::CompactTable(table)
    })
}

/// `STORAGE FLUSH|COMPACT ALL [IN ns]`.
fn storage_all(c: &mut Cursor, verb: &str) -> Result<Command> {
    c.pos = 3;
    let ns = c.namespace_after(&["IN"])?;
    Ok(if verb == "FLUSH" {
        Command::FlushAll(ns)
    } else {
        Command::CompactAll(ns)
    })
}

/// `CREATE USER|SHARED|STREAM TABLE …`: the type word is taken out and sqlparser parses the
/// standard rest.
fn create_typed_table(sql: &str, w: &str) -> Result<Command> {
    let upper = sql.to_ascii_uppercase();
    let at = upper.find(w).expect("word is in the text");
    let rest = format!("{}{}", &sql[..at], &sql[at + w.len()..]);
    create_table(&rest, table_type_word(w))
}

/// `ALTER [USER|SHARED|STREAM] TABLE ns.t <change>`; `w1` is the word after `ALTER`.
fn alter_table(c: &mut Cursor, w1: &str) -> Result<Command> {
    c.pos = if w1 == "TABLE" { 2 } else { 3 };
    let table = c.table_ref()?;
    let rest_at = c.pos;
    let change = if c.eat("SET") && !c.peek_is(0, "TBLPROPERTIES") {
        alter_set_option(c)?
    } else {
        let change = alter_change(&text_from(c, rest_at))?;
        c.pos = c.toks.len();
        change
    };
    Ok(Command::AlterTable { table, change })
}

/// `DROP [USER|SHARED|STREAM] TABLE [IF EXISTS] ns.t`; `w1` is the word after `DROP`.
fn drop_table(c: &mut Cursor, w1: &str) -> Result<Command> {
    c.pos = if w1 == "TABLE" { 2 } else { 3 };
    let table_type = table_type_word(w1);
    let if_exists = c.eat_all(&["IF", "EXISTS"]);
    let table = c.table_ref()?;
    Ok(Command::DropTable {
        table,
        table_type,
        if_exists,
    })
}

/// `CREATE USER name WITH PASSWORD 'pw' [ROLE 'r'] [EMAIL 'e']`.
fn create_user(c: &mut Cursor) -> Result<Command> {
    c.pos = 2;
    let name = c.ident()?;
    c.expect("WITH")?;
    c.expect("PASSWORD")?;
    let password = c.string()?;
    let mut role = None;
    let mut email = None;
    loop {
        if c.eat("ROLE") {
            role = Some(c.string()?);
        } else if c.eat("EMAIL") {
            email = Some(c.string()?);
        } else {
            break;
        }
    }
    Ok(Command::CreateUser {
        name,
        password,
        role,
        email,
    })
}

/// `DROP USER [IF EXISTS] name`.
fn drop_user(c: &mut Cursor) -> Result<Command> {
    c.pos = 2;
    let if_exists = c.eat_all(&["IF", "EXISTS"]);
    Ok(Command::DropUser {
        name: c.ident()?,
        if_exists,
    })
}

/// `ALTER USER name SET PASSWORD|ROLE|EMAIL 'value'`.
fn alter_user(c: &mut Cursor) -> Result<Command> {
    c.pos = 2;
    let name = c.ident()?;
    c.expect("SET")?;
    let change = if c.eat("PASSWORD") {
        UserChange::Password(c.string()?)
    } else if c.eat("ROLE") {
        UserChange::Role(c.string()?)
    } else if c.eat("EMAIL") {
        UserChange::Email(c.string()?)
    } else {
        return Err(KalamError::InvalidSql(format!(
            "expected PASSWORD, ROLE or EMAIL near {}",
            c.near()
        )));
    };
    Ok(Command::AlterUser { name, change })
}

/// Parses a standard statement with sqlparser.
fn parse_standard(sql: &str) -> Result<Command> {
    let sql = normalize_current_user(sql)?;
    let mut stmts = Parser::parse_sql(&GenericDialect {}, &sql)
        .map_err(|e| KalamError::InvalidSql(e.to_string()))?;
    if stmts.len() != 1 {
        return Err(KalamError::InvalidSql(
            "expected exactly one statement".into(),
        ));
    }
    Ok(Command::Sql(Box::new(stmts.remove(0))))
}

/// Rewrites `CURRENT_USER()` (KalamDB's spelling) to `CURRENT_USER` (the SQL keyword form
/// sqlparser accepts), outside quotes and comments.
pub fn normalize_current_user(sql: &str) -> Result<std::borrow::Cow<'_, str>> {
    let needle = b"CURRENT_USER";
    if !sql
        .as_bytes()
        .windows(needle.len())
        .any(|w| w.eq_ignore_ascii_case(needle))
    {
        return Ok(std::borrow::Cow::Borrowed(sql));
    }
    let toks = Tokenizer::new(&GenericDialect {}, sql)
        .tokenize()
        .map_err(|e| KalamError::InvalidSql(e.to_string()))?;
    let mut out = String::with_capacity(sql.len());
    let mut i = 0;
    while i < toks.len() {
        let is_cu = matches!(&toks[i], Token::Word(w) if w.quote_style.is_none() && w.value.eq_ignore_ascii_case("CURRENT_USER"));
        if is_cu {
            let mut j = i + 1;
            while matches!(toks.get(j), Some(Token::Whitespace(_))) {
                j += 1;
            }
            if toks.get(j) == Some(&Token::LParen) {
                let mut k = j + 1;
                while matches!(toks.get(k), Some(Token::Whitespace(_))) {
                    k += 1;
                }
                if toks.get(k) == Some(&Token::RParen) {
                    out.push_str("CURRENT_USER");
                    i = k + 1;
                    continue;
                }
            }
        }
        out.push_str(&toks[i].to_string());
        i += 1;
    }
    Ok(std::borrow::Cow::Owned(out))
}

/// `SET ACCESS_LEVEL [=] 'x'` / `SET ACCESS LEVEL x` / `SET TTL_SECONDS [=] n` /
/// `SET FLUSH_POLICY [=] 'p'`, after the `SET`.
fn alter_set_option(c: &mut Cursor) -> Result<AlterChange> {
    let key = match c.word_at(c.pos) {
        Some(w) if w == "ACCESS" && c.peek_is(1, "LEVEL") => {
            c.pos += 2;
            "ACCESS_LEVEL".to_string()
        }
        Some(w) => {
            c.pos += 1;
            w
        }
        None => {
            return Err(KalamError::InvalidSql(format!(
                "expected an option after SET near {}",
                c.near()
            )));
        }
    };
    if c.toks.get(c.pos) == Some(&Token::Eq) {
        c.pos += 1;
    }
    let value = match c.toks.get(c.pos) {
        Some(Token::Number(n, _)) => {
            c.pos += 1;
            n.clone()
        }
        _ => c.string()?,
    };
    c.done()?;
    Ok(AlterChange::SetOption(key, value))
}

/// The SQL text of the tokens of `c` from `at` on (re-rendered: tokens carry no offsets).
fn text_from(c: &Cursor, at: usize) -> String {
    c.toks[at..]
        .iter()
        .map(|t| t.to_string())
        .collect::<Vec<_>>()
        .join(" ")
}

/// One column change, parsed by sqlparser from the text after the table name.
fn alter_change(rest: &str) -> Result<AlterChange> {
    let sql = format!("ALTER TABLE t {rest}");
    let mut stmts = Parser::parse_sql(&GenericDialect {}, &sql)
        .map_err(|e| KalamError::InvalidSql(e.to_string()))?;
    let Some(Statement::AlterTable(mut alter)) = stmts.pop() else {
        return Err(KalamError::InvalidSql(
            "expected one ALTER TABLE change".into(),
        ));
    };
    if alter.operations.len() != 1 {
        return Err(KalamError::InvalidSql(
            "ALTER TABLE takes one change per statement".into(),
        ));
    }
    match alter.operations.remove(0) {
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

/// Parses a `CREATE TABLE` (the type word taken out) with sqlparser.
fn create_table(sql: &str, prefix_type: Option<TableType>) -> Result<Command> {
    let sql = normalize_current_user(sql)?;
    let mut stmts = Parser::parse_sql(&GenericDialect {}, &sql)
        .map_err(|e| KalamError::InvalidSql(e.to_string()))?;
    match (stmts.len(), stmts.pop()) {
        (1, Some(Statement::CreateTable(ct))) => Ok(Command::CreateTable {
            prefix_type,
            stmt: Box::new(ct),
        }),
        _ => Err(KalamError::InvalidSql(
            "expected one CREATE TABLE statement".into(),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn own_statements() {
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
}
