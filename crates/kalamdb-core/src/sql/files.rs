//! FILE columns (`docs/protocol.md` §4.1): a multipart `POST /v1/api/sql` carries one INSERT or
//! UPDATE whose `FILE("name")` calls name its file parts. Each file is stored in the `f0001`
//! folder of the target table's scope folder (the caller's partition for USER tables), named
//! `{id}-{slug}.{ext}`, and its call is replaced by the file's reference, a FileRef JSON string
//! (`{"id","sub","name","size","mime","sha256"}`), before the statement is parsed. If the
//! statement fails, the stored files are deleted again. [`download`] serves them back with
//! the access rules of their rows.

use super::parse::{Command, TableRef, byte_offset, parse_statement};
use super::session::ExecCtx;
use crate::access;
use crate::app_context::AppContext;
use datafusion::sql::sqlparser::ast::{Statement, TableFactor, TableObject};
use datafusion::sql::sqlparser::dialect::GenericDialect;
use datafusion::sql::sqlparser::tokenizer::{Token, Tokenizer};
use kalamdb_catalog::error::{KalamError, Result};
use kalamdb_catalog::schema_registry::CachedTable;
use kalamdb_commons::{TableType, UserId};
use kalamdb_tables::rows::Scope;
use sha2::Digest;
use std::ops::Range;
use std::sync::Arc;

pub use kalamdb_tables::files::FILE_FOLDER;

/// One file part of a multipart request.
#[derive(Debug, Clone)]
pub struct Upload {
    /// The name `FILE("…")` refers to it by (the part is named `file:<placeholder>`).
    pub placeholder: String,
    /// The file's own name.
    pub name: String,
    /// Its content type.
    pub mime: String,
    /// Its content.
    pub bytes: Vec<u8>,
}

/// Files stored for one statement; [`Stored::discard`] deletes them when it fails.
#[derive(Debug)]
pub(crate) struct Stored {
    table: Arc<CachedTable>,
    scope: Scope,
    names: Vec<String>,
    /// Keep the sweep off the files until the statement has finished (dropped with this).
    _pending: Vec<kalamdb_tables::files::PendingFile>,
}

/// The `FILE("p")` / `FILE('p')` calls of `sql`: their byte ranges and placeholders.
fn file_calls(sql: &str) -> Result<Vec<(Range<usize>, String)>> {
    let tokens = Tokenizer::new(&GenericDialect {}, sql)
        .tokenize_with_location()
        .map_err(|e| KalamError::InvalidSql(e.to_string()))?;
    let significant: Vec<_> = tokens
        .iter()
        .filter(|t| !matches!(t.token, Token::Whitespace(_)))
        .collect();
    let mut calls = Vec::new();
    for w in significant.windows(4) {
        let is_file = matches!(&w[0].token, Token::Word(word) if word.quote_style.is_none() && word.value.eq_ignore_ascii_case("FILE"));
        let placeholder = match &w[2].token {
            Token::SingleQuotedString(s) => Some(s.clone()),
            Token::Word(word) if word.quote_style == Some('"') => Some(word.value.clone()),
            _ => None,
        };
        if let (true, Token::LParen, Some(p), Token::RParen) =
            (is_file, &w[1].token, placeholder, &w[3].token)
        {
            let start = byte_offset(sql, w[0].span.start.line, w[0].span.start.column);
            let end = byte_offset(sql, w[3].span.end.line, w[3].span.end.column);
            if let (Some(start), Some(end)) = (start, end) {
                calls.push((start..end, p));
            }
        }
    }
    Ok(calls)
}

/// Refuses `FILE("…")` in a request without files (a JSON body): `INVALID_INPUT`, as upstream
/// answers, instead of an unknown-function error. Tokenizes only a text where `file` is
/// followed by `(`.
pub(crate) fn refuse_file_calls(sql: &str) -> Result<()> {
    let b = sql.as_bytes();
    let ident = |c: u8| c.is_ascii_alphanumeric() || c == b'_';
    let mentions = (0..b.len().saturating_sub(4)).any(|i| {
        b[i..i + 4].eq_ignore_ascii_case(b"file")
            && (i == 0 || !ident(b[i - 1]))
            && b[i + 4..]
                .iter()
                .find(|c| !c.is_ascii_whitespace())
                .is_some_and(|c| *c == b'(')
    });
    if mentions && let Some((_, p)) = file_calls(sql)?.into_iter().next() {
        return Err(KalamError::BadRequest(format!(
            "FILE(\"{p}\") needs a multipart request with a part named file:{p}"
        )));
    }
    Ok(())
}

/// The table an INSERT or UPDATE writes.
fn written_table(sql: &str) -> Result<TableRef> {
    let not_dml = || {
        KalamError::BadRequest(
            "a request with files holds one INSERT or UPDATE that uses them".into(),
        )
    };
    let Command::Sql(stmt) = parse_statement(sql)? else {
        return Err(not_dml());
    };
    match *stmt {
        Statement::Insert(ins) => match ins.table {
            TableObject::TableName(name) => TableRef::from_object_name(&name),
            _ => Err(not_dml()),
        },
        Statement::Update(up) => match &up.table.relation {
            TableFactor::Table { name, .. } => TableRef::from_object_name(name),
            _ => Err(not_dml()),
        },
        _ => Err(not_dml()),
    }
}

/// Stores `uploads` for the one statement `sql` and returns the statement with each
/// `FILE("…")` replaced by its file's reference.
pub(crate) async fn store_uploads(
    app: &AppContext,
    ctx: &ExecCtx,
    sql: &str,
    uploads: Vec<Upload>,
) -> Result<(String, Stored)> {
    let limits = &app.config().limits;
    if uploads.len() > limits.max_files_per_request {
        return Err(KalamError::BadRequest(format!(
            "{} files in one request; the limit is {} (limits.max_files_per_request)",
            uploads.len(),
            limits.max_files_per_request
        )));
    }
    let calls = file_calls(sql)?;
    for (_, p) in &calls {
        if !uploads.iter().any(|u| &u.placeholder == p) {
            return Err(KalamError::BadRequest(format!(
                "FILE(\"{p}\") has no part named file:{p}"
            )));
        }
    }
    for u in &uploads {
        if !calls.iter().any(|(_, p)| *p == u.placeholder) {
            return Err(KalamError::BadRequest(format!(
                "the part file:{} is not used by a FILE(\"{}\") of the statement",
                u.placeholder, u.placeholder
            )));
        }
        if u.bytes.len() > limits.max_file_bytes {
            return Err(KalamError::BadRequest(format!(
                "file '{}' is {} bytes; the limit is {} (limits.max_file_bytes)",
                u.name,
                u.bytes.len(),
                limits.max_file_bytes
            )));
        }
    }
    let (table, scope) = target(app, ctx, &written_table(sql)?)?;
    let mut stored = Stored {
        table,
        scope,
        names: Vec::new(),
        _pending: Vec::new(),
    };
    let mut refs = Vec::new();
    for u in uploads {
        let id = app.seq().next_id().to_string();
        let stored_name = stored_name(&id, &u.name);
        let file_ref = serde_json::json!({
            "id": id,
            "sub": FILE_FOLDER,
            "name": u.name,
            "size": u.bytes.len(),
            "mime": u.mime,
            "sha256": hex(&sha2::Sha256::digest(&u.bytes)),
        });
        let cold = app.tables().cold();
        let pending = cold
            .put_file(
                &stored.table.def,
                &stored.scope,
                FILE_FOLDER,
                &stored_name,
                u.bytes,
            )
            .await?;
        stored._pending.push(pending);
        stored.names.push(stored_name);
        refs.push((u.placeholder, file_ref.to_string()));
    }
    let mut out = String::with_capacity(sql.len());
    let mut at = 0;
    for (range, p) in calls {
        out.push_str(&sql[at..range.start]);
        let json = refs
            .iter()
            .find(|(q, _)| *q == p)
            .map(|(_, j)| j.as_str())
            .unwrap_or_default();
        out.push('\'');
        out.push_str(&json.replace('\'', "''"));
        out.push('\'');
        at = range.end;
    }
    out.push_str(&sql[at..]);
    Ok((out, stored))
}

impl Stored {
    /// Deletes the files again (their statement failed).
    pub(crate) async fn discard(self, app: &AppContext) {
        for name in &self.names {
            let deleted = app
                .tables()
                .cold()
                .delete_file(&self.table.def, &self.scope, FILE_FOLDER, name)
                .await;
            if let Err(e) = deleted {
                tracing::warn!(file = %name, error = %e, "cannot delete the file of a failed statement");
            }
        }
    }
}

/// The table and scope a statement of `ctx` writes, checked as DML checks it (`dml::target`);
/// STREAM tables hold no files.
fn target(app: &AppContext, ctx: &ExecCtx, tref: &TableRef) -> Result<(Arc<CachedTable>, Scope)> {
    let (table, scope) = super::dml::target(app, ctx, tref)?;
    if table.def.table_type == TableType::Stream {
        return Err(KalamError::BadRequest(
            "FILE columns live in USER and SHARED tables".into(),
        ));
    }
    Ok((table, scope))
}

/// `{id}-{slug}.{ext}` (`{id}.{ext}` without a slug): the slug keeps the name's ASCII letters
/// and digits (lower case), spaces, `_` and `-` become `-`, at most 50 kept; the extension is
/// the lower-cased text after the last dot when it is 1-10 letters or digits, else `bin`.
pub fn stored_name(id: &str, name: &str) -> String {
    let (stem, ext) = match name.rsplit_once('.') {
        Some((stem, ext))
            if !ext.is_empty()
                && ext.len() <= 10
                && ext.chars().all(|c| c.is_ascii_alphanumeric()) =>
        {
            (stem, ext.to_ascii_lowercase())
        }
        Some((stem, _)) => (stem, "bin".to_string()),
        None => (name, "bin".to_string()),
    };
    let mut slug = String::new();
    let mut kept = 0;
    for c in stem.chars() {
        if kept == 50 {
            break;
        }
        if c.is_ascii_alphanumeric() {
            slug.push(c.to_ascii_lowercase());
            kept += 1;
        } else if matches!(c, ' ' | '_' | '-') && !slug.ends_with('-') {
            slug.push('-');
            kept += 1;
        }
    }
    let slug = slug.trim_matches('-');
    if slug.is_empty() {
        format!("{id}.{ext}")
    } else {
        format!("{id}-{slug}.{ext}")
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// A downloaded file: its bytes and content type.
#[derive(Debug)]
pub struct Download {
    /// The content.
    pub bytes: Vec<u8>,
    /// Guessed from the name's extension.
    pub mime: String,
}

/// `GET /v1/files/{namespace}/{table}/{sub}/{stored_name}[?user_id=]`: a file of the caller's
/// partition (USER tables; dba/system may name another user), or of a SHARED table the caller
/// may read.
pub async fn download(
    app: &AppContext,
    identity: &crate::auth::Identity,
    table: &TableRef,
    sub: &str,
    name: &str,
    user_id: Option<&str>,
) -> Result<Download> {
    let plain = |s: &str| {
        !s.is_empty()
            && !s.starts_with('.')
            && s.chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
    };
    let not_found = || KalamError::NotFound {
        kind: "File",
        name: format!("{sub}/{name}"),
    };
    if !plain(sub) || !plain(name) {
        return Err(not_found());
    }
    let id = kalamdb_commons::TableId::new(
        kalamdb_commons::NamespaceId::new(table.namespace.clone().unwrap_or_default()),
        kalamdb_commons::TableName::new(&table.table),
    );
    let table = app.schema_registry().require(&id)?;
    let scope = match table.def.table_type {
        TableType::Shared => {
            access::check_shared_read(identity, &table.def)?;
            Scope::Shared
        }
        TableType::User => match user_id {
            Some(u) if u != identity.user_id.as_str() => {
                if !identity.role.is_admin() {
                    return Err(KalamError::PermissionDenied(
                        "only dba and system may read another user's files".into(),
                    ));
                }
                Scope::User(UserId::new(u))
            }
            _ => Scope::User(identity.user_id.clone()),
        },
        _ => return Err(not_found()),
    };
    let bytes = app
        .tables()
        .cold()
        .get_file(&table.def, &scope, sub, name)
        .await?
        .ok_or_else(not_found)?;
    let mime = mime_guess::from_path(name)
        .first_or_octet_stream()
        .essence_str()
        .to_string();
    Ok(Download { bytes, mime })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stored_names_follow_the_sdk() {
        assert_eq!(stored_name("123", "My Photo.PNG"), "123-my-photo.png");
        assert_eq!(stored_name("7", "a__b  c.tar.gz"), "7-a-b-ctar.gz");
        assert_eq!(stored_name("7", "noext"), "7-noext.bin");
        assert_eq!(stored_name("7", "...."), "7.bin");
        assert_eq!(stored_name("7", "x.toolongextension"), "7-x.bin");
    }

    #[test]
    fn file_calls_are_found_by_token() {
        let sql =
            "INSERT INTO app.d (id, a, b) VALUES (1, FILE(\"one\"), file ( 'two' )) -- FILE('no')";
        let calls = file_calls(sql).unwrap();
        let found: Vec<(&str, &str)> = calls
            .iter()
            .map(|(r, p)| (&sql[r.clone()], p.as_str()))
            .collect();
        assert_eq!(
            found,
            vec![("FILE(\"one\")", "one"), ("file ( 'two' )", "two")]
        );
    }
}
