//! A compiled subscription query: table, projection and WHERE, shared by every subscription
//! running the same query, so a change is filtered and encoded once per query, not once per
//! subscriber.

use crate::error::LiveError;
use datafusion::sql::sqlparser::ast::Expr;
use kalamdb_catalog::schema_registry::CachedTable;
use kalamdb_catalog::value::Value;
use kalamdb_commons::schema::{DELETED_COLUMN, SEQ_COLUMN};
use kalamdb_commons::ws::{ChangeType, Row};
use kalamdb_commons::{ErrorCode, TableDefinition};
use kalamdb_core::sql::encode::value_json;
use kalamdb_core::sql::row_filter::{Caller, Filter};
use kalamdb_tables::changes::{ChangeEvent, ChangeKind};
use kalamdb_tables::rows::StoredRow;
use serde_json::Value as Json;
use std::sync::Arc;

/// Most rows one `change` message carries.
const MAX_ROWS_PER_CHANGE: usize = 1000;

/// A query compiled against one table version.
#[derive(Debug)]
pub(crate) struct CompiledQuery {
    pub(crate) table: Arc<CachedTable>,
    /// Indexes into the table's columns, in projection order.
    pub(crate) columns: Vec<usize>,
    /// `SELECT *` (rows also carry `_deleted`).
    pub(crate) star: bool,
    pub(crate) filter: Option<Filter>,
    /// The WHERE clause as written, and the table version whose column names it uses: kept
    /// to compile it again after an ALTER TABLE ([`CompiledQuery::for_version`]).
    written: Option<(Expr, Arc<TableDefinition>)>,
    /// The WHERE clause names `CURRENT_USER()` or `CURRENT_ROLE()`: compiled per subscriber,
    /// not shared.
    pub(crate) per_user: bool,
}

/// Whether a WHERE clause names `CURRENT_USER()` or `CURRENT_ROLE()` (its compiled form is
/// per subscriber).
pub(crate) fn mentions_caller(filter: Option<&Expr>) -> bool {
    filter.is_some_and(|e| {
        let text = e.to_string().to_ascii_lowercase();
        text.contains("current_user") || text.contains("current_role")
    })
}

/// Whether a WHERE clause reads the clock (`NOW()`, `CURRENT_DATE` …): constant-folded when
/// compiled, so its compiled form belongs to one subscription, not shared with later ones.
pub(crate) fn mentions_clock(filter: Option<&Expr>) -> bool {
    filter.is_some_and(|e| {
        let text = e.to_string().to_ascii_lowercase();
        ["now", "current_", "localtime", "today"]
            .iter()
            .any(|f| text.contains(f))
    })
}

impl CompiledQuery {
    /// `columns` (indexes into the table's columns) of `table` where `filter` holds for
    /// `caller`.
    pub(crate) fn compile(
        table: Arc<CachedTable>,
        columns: Vec<usize>,
        star: bool,
        filter: Option<&Expr>,
        caller: Caller<'_>,
    ) -> Result<Self, LiveError> {
        let compiled = filter
            .map(|e| Filter::compile(e, &table.def, caller))
            .transpose()
            .map_err(|e| LiveError::new(e.code(), e.to_string()))?;
        let written = filter.map(|e| (e.clone(), Arc::clone(&table.def)));
        Ok(Self::assemble(table, columns, star, compiled, written))
    }

    fn assemble(
        table: Arc<CachedTable>,
        columns: Vec<usize>,
        star: bool,
        filter: Option<Filter>,
        written: Option<(Expr, Arc<TableDefinition>)>,
    ) -> Self {
        let per_user = mentions_caller(written.as_ref().map(|(e, _)| e));
        Self {
            table,
            columns,
            star,
            filter,
            written,
            per_user,
        }
    }

    /// The stored columns the query reads (projection and WHERE), by id.
    fn column_ids(&self) -> Vec<u32> {
        let def = &self.table.def;
        let mut used: Vec<u32> = self
            .columns
            .iter()
            .map(|&i| def.columns[i].column_id)
            .collect();
        if let Some(f) = &self.filter {
            f.column_ids(&mut used);
        }
        used
    }

    /// This query over `table`, a later version of its table (after ALTER TABLE): the same
    /// columns by id under their current names and types (`SELECT *` takes every current
    /// column), the WHERE clause compiled again so literals take the widened types. `Err`
    /// names a column the query reads that no longer exists.
    pub(crate) fn for_version(
        &self,
        table: Arc<CachedTable>,
        caller: Caller<'_>,
    ) -> Result<Self, LiveError> {
        let (old, new) = (&self.table.def, &table.def);
        let name_of = |id: u32| {
            old.columns
                .iter()
                .find(|c| c.column_id == id)
                .map_or_else(|| id.to_string(), |c| c.name.clone())
        };
        let position = |id: u32| new.columns.iter().position(|c| c.column_id == id);
        if let Some(gone) = self
            .column_ids()
            .into_iter()
            .find(|&id| position(id).is_none())
        {
            return Err(LiveError::new(
                ErrorCode::SubscriptionFailed,
                format!(
                    "Column '{}' of {} was dropped; this subscription has ended",
                    name_of(gone),
                    new.table_id()
                ),
            ));
        }
        let columns = if self.star {
            (0..new.columns.len()).collect()
        } else {
            self.columns
                .iter()
                .filter_map(|&i| position(old.columns[i].column_id))
                .collect()
        };
        let filter = match &self.written {
            None => None,
            Some((expr, as_written)) => {
                // The current columns under the names the clause was written with; columns
                // added since get a name no SQL identifier can spell.
                let mut renamed = (**new).clone();
                for c in &mut renamed.columns {
                    c.name = match as_written
                        .columns
                        .iter()
                        .find(|w| w.column_id == c.column_id)
                    {
                        Some(w) => w.name.clone(),
                        None => format!("\0{}", c.column_id),
                    };
                }
                Some(
                    Filter::compile(expr, &renamed, caller)
                        .map_err(|e| LiveError::new(e.code(), e.to_string()))?,
                )
            }
        };
        let written = self.written.clone();
        Ok(Self::assemble(table, columns, self.star, filter, written))
    }

    /// For each of `events`, whether its new and its old row pass the WHERE clause (judged
    /// in one batch each).
    fn passes(&self, events: &[&ChangeEvent]) -> Vec<(bool, bool)> {
        let Some(filter) = &self.filter else {
            return vec![(true, true); events.len()];
        };
        let judge = |side: fn(&ChangeEvent) -> Option<&StoredRow>| {
            let rows: Vec<&StoredRow> = events.iter().filter_map(|e| side(e)).collect();
            let mut verdicts = filter.mask(&rows).into_iter();
            events
                .iter()
                .map(|e| side(e).is_some() && verdicts.next().unwrap_or(false))
                .collect::<Vec<_>>()
        };
        let new = judge(|e| e.new.as_ref());
        let old = judge(|e| e.old.as_ref());
        new.into_iter().zip(old).collect()
    }

    /// For each of `rows`, whether it passes the WHERE clause.
    pub(crate) fn mask(&self, rows: &[&StoredRow]) -> Vec<bool> {
        match &self.filter {
            Some(f) => f.mask(rows),
            None => vec![true; rows.len()],
        }
    }

    /// Column `i` of `row`: a row read before an ALTER TABLE added the column (a snapshot
    /// row sent after the ALTER) reads the column's missing value, as queries do.
    fn cell<'a>(&'a self, row: &'a StoredRow, i: usize) -> &'a Value {
        let c = &self.table.def.columns[i];
        let missing = c.added_at_seq.is_some_and(|added| row.seq < added)
            && !row.cells.iter().any(|(id, _)| *id == c.column_id);
        match &self.table.missing_values()[i] {
            Some(v) if missing => v,
            _ => row.cell(c.column_id),
        }
    }

    /// The projected wire row of `row`, with `_seq` = `seq`.
    pub(crate) fn encode(&self, row: &StoredRow, seq: i64) -> Row {
        let def = &self.table.def;
        let mut out = Row::new();
        for &i in &self.columns {
            let c = &def.columns[i];
            out.insert(c.name.clone(), value_json(self.cell(row, i), &c.data_type));
        }
        out.insert(SEQ_COLUMN.into(), Json::String(seq.to_string()));
        if self.star {
            out.insert(DELETED_COLUMN.into(), Json::Bool(false));
        }
        out
    }

    /// For an update: the primary key and the projected columns whose value changed, with
    /// `_seq` = the update's (every row of a change carries the change's `_seq`, so clients
    /// that drop replayed rows by `_seq` keep it).
    fn encode_changed(&self, old: &StoredRow, new: &StoredRow) -> Row {
        let def = &self.table.def;
        let mut out = Row::new();
        for (i, c) in def.columns.iter().enumerate() {
            let projected = self.columns.contains(&i);
            let changed = self.cell(old, i) != self.cell(new, i);
            if c.primary_key || (projected && changed) {
                out.insert(c.name.clone(), value_json(self.cell(old, i), &c.data_type));
            }
        }
        out.insert(SEQ_COLUMN.into(), Json::String(new.seq.to_string()));
        out
    }

    /// What a committed change means for this query, given whether its new and its old row
    /// pass the WHERE clause: its type and new and old row.
    fn change_rows(
        &self,
        e: &ChangeEvent,
        (new_passes, old_passes): (bool, bool),
    ) -> Option<(ChangeType, Option<Row>, Option<Row>)> {
        let new = e.new.as_ref().filter(|_| new_passes);
        let old = e.old.as_ref().filter(|r| !r.deleted && old_passes);
        Some(match (e.kind, old, new) {
            (ChangeKind::Update, Some(o), Some(n)) => (
                ChangeType::Update,
                Some(self.encode(n, n.seq)),
                Some(self.encode_changed(o, n)),
            ),
            (ChangeKind::Insert | ChangeKind::Update, _, Some(n)) => {
                (ChangeType::Insert, Some(self.encode(n, n.seq)), None)
            }
            (ChangeKind::Update | ChangeKind::Delete, Some(o), None) => {
                (ChangeType::Delete, None, Some(self.encode(o, e.seq)))
            }
            _ => return None,
        })
    }

    /// The `change` messages `events` make for this query, without their subscription id:
    /// consecutive changes of one type share a message. Returns the bodies (see [`message`])
    /// and how many row changes they hold.
    pub(crate) fn change_bodies<'a>(
        &self,
        events: impl Iterator<Item = &'a ChangeEvent>,
        after_seq: Option<i64>,
    ) -> (Vec<String>, u64) {
        let mut bodies = Vec::new();
        let mut pending: Option<(ChangeType, Vec<Row>, Vec<Row>)> = None;
        let mut flush = |p: &mut Option<(ChangeType, Vec<Row>, Vec<Row>)>| {
            if let Some((kind, rows, old)) = p.take() {
                bodies.push(body(kind, rows, old));
            }
        };
        let mut count = 0;
        let visible: Vec<&ChangeEvent> = events
            .filter(|e| after_seq.is_none_or(|from| e.seq > from))
            .collect();
        let passes = self.passes(&visible);
        let changes = visible
            .iter()
            .zip(passes)
            .filter_map(|(e, p)| self.change_rows(e, p));
        for (kind, new, old) in changes {
            count += 1;
            let same = pending
                .as_ref()
                .is_some_and(|(k, r, o)| *k == kind && r.len().max(o.len()) < MAX_ROWS_PER_CHANGE);
            if !same {
                flush(&mut pending);
                pending = Some((kind, Vec::new(), Vec::new()));
            }
            if let Some((_, rows, olds)) = pending.as_mut() {
                rows.extend(new);
                olds.extend(old);
            }
        }
        flush(&mut pending);
        (bodies, count)
    }
}

impl CompiledQuery {
    /// `delete` messages for rows the client may hold but that are gone from the result
    /// (resume): not filtered, each with the `_seq` of the change that removed it.
    pub(crate) fn delete_bodies(&self, rows: &[(StoredRow, i64)]) -> Vec<String> {
        rows.chunks(MAX_ROWS_PER_CHANGE)
            .map(|chunk| {
                let old = chunk.iter().map(|(r, seq)| self.encode(r, *seq)).collect();
                body(ChangeType::Delete, Vec::new(), old)
            })
            .collect()
    }
}

fn body(kind: ChangeType, rows: Vec<Row>, old: Vec<Row>) -> String {
    let mut fields = serde_json::Map::new();
    fields.insert(
        "change_type".into(),
        serde_json::to_value(kind).unwrap_or(Json::Null),
    );
    if !rows.is_empty() {
        fields.insert(
            "rows".into(),
            Json::Array(rows.into_iter().map(Json::Object).collect()),
        );
    }
    if !old.is_empty() {
        fields.insert(
            "old_values".into(),
            Json::Array(old.into_iter().map(Json::Object).collect()),
        );
    }
    // `{"change_type":…}` -> `"change_type":…}`: the message head goes in front.
    let text = Json::Object(fields).to_string();
    text[1..].to_string()
}

/// A complete `change` message: `{"type":"change","subscription_id":<id>,<body>`.
pub(crate) fn message(subscription_id: &str, body: &str) -> String {
    let id = Json::String(subscription_id.to_string()).to_string();
    let mut out = String::with_capacity(40 + id.len() + body.len());
    out.push_str("{\"type\":\"change\",\"subscription_id\":");
    out.push_str(&id);
    out.push(',');
    out.push_str(body);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use kalamdb_commons::ws::ServerMessage;

    #[test]
    fn shared_bodies_make_the_same_message_serde_would() {
        let text = message(
            "s\"1",
            &body(ChangeType::Delete, Vec::new(), vec![Row::new()]),
        );
        let parsed: ServerMessage = serde_json::from_str(&text).unwrap();
        assert_eq!(
            parsed,
            ServerMessage::Change {
                subscription_id: "s\"1".into(),
                change_type: ChangeType::Delete,
                rows: None,
                old_values: Some(vec![Row::new()]),
            }
        );
    }
}
