//! One live subscription: its compiled query, its initial-load state, and how its rows and
//! changes are encoded for the wire.

use crate::filter::Filter;
use crate::manager::Connection;
use kalamdb_commons::schema::{DELETED_COLUMN, SEQ_COLUMN};
use kalamdb_commons::ws::{BatchControl, BatchStatus, ChangeType, Row, ServerMessage};
use kalamdb_commons::{TableId, UserId};
use kalamdb_core::changes::{ChangeEvent, ChangeKind};
use kalamdb_core::rows::StoredRow;
use kalamdb_core::schema_registry::CachedTable;
use kalamdb_core::sql::encode::value_json;
use parking_lot::Mutex;
use serde_json::Value as Json;
use std::collections::VecDeque;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Weak};

/// Most rows one `change` message carries.
const MAX_ROWS_PER_CHANGE: usize = 1000;

/// Where a subscription stands in its initial load.
#[derive(Debug, Default)]
pub(crate) struct LoadState {
    /// Initial load finished; changes go out as they come.
    pub(crate) ready: bool,
    /// Snapshot rows not sent yet, ascending `_seq`.
    pub(crate) pending: VecDeque<StoredRow>,
    /// Deletes found by a `from` resume, sent once the load is done.
    pub(crate) resumed_deletes: Vec<ChangeEvent>,
    /// Changes that arrived during the load.
    pub(crate) buffered: Vec<ChangeEvent>,
    /// Next batch number.
    pub(crate) batch_num: u32,
    /// Rows per batch.
    pub(crate) batch_size: usize,
    /// Largest `_seq` sent.
    pub(crate) last_seq: Option<i64>,
}

/// A live subscription.
#[derive(Debug)]
pub(crate) struct Subscription {
    /// The client's id.
    pub(crate) id: String,
    /// Server-wide id: `<connection>-<client id>`.
    pub(crate) live_id: String,
    pub(crate) conn: Weak<Connection>,
    pub(crate) user: UserId,
    pub(crate) table: Arc<CachedTable>,
    pub(crate) table_id: TableId,
    /// The user partition the subscription reads (USER/STREAM tables).
    pub(crate) routed_user: Option<UserId>,
    /// Indexes into the table's columns, in projection order.
    pub(crate) columns: Vec<usize>,
    pub(crate) star: bool,
    pub(crate) filter: Option<Arc<Filter>>,
    /// Only changes with a larger `_seq` are delivered (resume).
    pub(crate) from: Option<i64>,
    pub(crate) sql: String,
    pub(crate) options: String,
    pub(crate) created_at: i64,
    pub(crate) changes: AtomicU64,
    pub(crate) last_update: AtomicI64,
    pub(crate) state: Mutex<LoadState>,
}

impl Subscription {
    /// Whether a row version passes the WHERE clause.
    pub(crate) fn matches(&self, row: &StoredRow) -> bool {
        self.filter.as_ref().is_none_or(|f| f.matches(row))
    }

    /// The projected wire row of `row`, with `_seq` = `seq`.
    pub(crate) fn encode(&self, row: &StoredRow, seq: i64) -> Row {
        let def = &self.table.def;
        let mut out = Row::new();
        for &i in &self.columns {
            let c = &def.columns[i];
            out.insert(
                c.name.clone(),
                value_json(row.cell(c.column_id), &c.data_type),
            );
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
            let changed = old.cell(c.column_id) != new.cell(c.column_id);
            if c.primary_key || (projected && changed) {
                out.insert(
                    c.name.clone(),
                    value_json(old.cell(c.column_id), &c.data_type),
                );
            }
        }
        out.insert(SEQ_COLUMN.into(), Json::String(new.seq.to_string()));
        out
    }

    /// What a committed change means for this subscription, if it sees it: the change type
    /// and its new and old row.
    fn change_rows(&self, e: &ChangeEvent) -> Option<(ChangeType, Option<Row>, Option<Row>)> {
        if self.from.is_some_and(|from| e.seq <= from) {
            return None;
        }
        let new = e.new.as_ref().filter(|r| self.matches(r));
        let old = e.old.as_ref().filter(|r| !r.deleted && self.matches(r));
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

    /// Delivers committed changes: buffered while the initial load runs, sent otherwise.
    pub(crate) fn deliver(&self, events: &[ChangeEvent]) {
        let mut state = self.state.lock();
        if !state.ready {
            state.buffered.extend(events.iter().cloned());
            return;
        }
        self.send_changes(events.iter());
    }

    /// Sends changes in order; consecutive changes of one type (a multi-row statement) share
    /// one message of at most [`MAX_ROWS_PER_CHANGE`] rows.
    fn send_changes<'a>(&self, events: impl Iterator<Item = &'a ChangeEvent>) {
        let Some(conn) = self.conn.upgrade() else {
            return;
        };
        let mut pending: Option<(ChangeType, Vec<Row>, Vec<Row>)> = None;
        let flush = |p: &mut Option<(ChangeType, Vec<Row>, Vec<Row>)>| {
            if let Some((change_type, rows, old)) = p.take() {
                conn.send(&ServerMessage::Change {
                    subscription_id: self.id.clone(),
                    change_type,
                    rows: (!rows.is_empty()).then_some(rows),
                    old_values: (!old.is_empty()).then_some(old),
                });
            }
        };
        let mut seen = 0;
        for (kind, new, old) in events.filter_map(|e| self.change_rows(e)) {
            seen += 1;
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
        if seen > 0 {
            self.changes.fetch_add(seen, Ordering::Relaxed);
            self.last_update
                .store(chrono::Utc::now().timestamp_micros(), Ordering::Relaxed);
        }
    }

    /// Sends the next initial batch; when it is the last, the load becomes ready and the
    /// changes held meanwhile follow.
    pub(crate) fn send_next_batch(&self) {
        let Some(conn) = self.conn.upgrade() else {
            return;
        };
        let mut state = self.state.lock();
        if state.ready {
            return;
        }
        let n = state.batch_size.min(state.pending.len());
        let rows: Vec<Row> = state
            .pending
            .drain(..n)
            .map(|r| self.encode(&r, r.seq))
            .collect();
        if let Some(seq) = rows
            .last()
            .and_then(|r| r.get(SEQ_COLUMN))
            .and_then(|v| v.as_str())
            .and_then(|s| s.parse().ok())
        {
            state.last_seq = Some(seq);
        }
        let has_more = !state.pending.is_empty();
        let batch_control = BatchControl {
            batch_num: state.batch_num,
            has_more,
            status: batch_status(state.batch_num, has_more),
            last_seq_id: state.last_seq,
        };
        state.batch_num += 1;
        conn.send(&ServerMessage::InitialDataBatch {
            subscription_id: self.id.clone(),
            rows,
            batch_control,
        });
        if !has_more {
            self.finish_load(&mut state);
        }
    }

    /// Marks the load done and sends what waited for it.
    pub(crate) fn finish_load(&self, state: &mut LoadState) {
        state.ready = true;
        let resumed = std::mem::take(&mut state.resumed_deletes);
        let buffered = std::mem::take(&mut state.buffered);
        self.send_changes(resumed.iter().chain(buffered.iter()));
    }
}

/// `loading` for the first of several batches, `loading_batch` for later ones, `ready` last.
pub(crate) fn batch_status(batch_num: u32, has_more: bool) -> BatchStatus {
    match (has_more, batch_num) {
        (false, _) => BatchStatus::Ready,
        (true, 0) => BatchStatus::Loading,
        (true, _) => BatchStatus::LoadingBatch,
    }
}
