//! A subscription's initial load: the rows it starts with, gathered from a table snapshot
//! (or a system table's feed) as they are read, keeping only what will be sent; its batch
//! size; and the ack that opens it.

use crate::compiled::CompiledQuery;
use crate::error::LiveError;
use crate::subscription::{Subscription, batch_status};
use futures::StreamExt;
use kalamdb_catalog::error::KalamError;
use kalamdb_catalog::schema_registry::CachedTable;
use kalamdb_commons::wire::SchemaField;
use kalamdb_commons::ws::{BatchControl, ServerMessage, SubscriptionOptions};
use kalamdb_core::sql::encode::schema_fields;
use kalamdb_tables::rows::{StoredRow, rows_of_batch};
use kalamdb_tables::scan::BatchStream;
use std::cmp::Reverse;
use std::collections::{BinaryHeap, VecDeque};
use std::sync::Arc;

/// Rows per initial batch when the client does not say.
const DEFAULT_BATCH_SIZE: usize = 1000;

/// A subscription's initial rows, gathered as its scan yields them: the live rows that match
/// (only the newest `last_rows` of them by `_seq` are kept, so a "last 100" load holds 100),
/// and, when resuming after a `_seq`, the rows changed since that no longer match or were
/// deleted (sent as deletes). Memory follows what will be sent, not the table.
pub(crate) struct InitialRows {
    query: Arc<CompiledQuery>,
    from: Option<i64>,
    last_rows: Option<usize>,
    live: BinaryHeap<Reverse<BySeq>>,
    gone: Vec<(StoredRow, i64)>,
}

/// A row ordered by its `_seq`.
struct BySeq(StoredRow);

impl PartialEq for BySeq {
    fn eq(&self, other: &Self) -> bool {
        self.0.seq == other.0.seq
    }
}
impl Eq for BySeq {}
impl PartialOrd for BySeq {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for BySeq {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.0.seq.cmp(&other.0.seq)
    }
}

impl InitialRows {
    fn new(query: Arc<CompiledQuery>, opts: &SubscriptionOptions) -> Self {
        Self {
            query,
            from: opts.from,
            // A resume sends every change since its point, never only the last ones.
            last_rows: opts.last_rows.filter(|_| opts.from.is_none()),
            live: BinaryHeap::new(),
            gone: Vec::new(),
        }
    }

    /// The initial rows among `rows` (a system table's current rows).
    pub(crate) fn of_rows(
        query: Arc<CompiledQuery>,
        opts: &SubscriptionOptions,
        rows: Vec<StoredRow>,
    ) -> Self {
        let mut initial = Self::new(query, opts);
        initial.push_all(rows);
        initial
    }

    /// The initial rows of a table snapshot, read a batch at a time.
    pub(crate) async fn of_snapshot(
        query: Arc<CompiledQuery>,
        opts: &SubscriptionOptions,
        table: &CachedTable,
        mut batches: BatchStream,
    ) -> Result<Self, KalamError> {
        let mut initial = Self::new(query, opts);
        while let Some(batch) = batches.next().await {
            initial.push_all(rows_of_batch(table, &batch?)?);
        }
        Ok(initial)
    }

    /// Takes `rows`, the WHERE clause judged on all of them at once.
    fn push_all(&mut self, rows: Vec<StoredRow>) {
        let refs: Vec<&StoredRow> = rows.iter().collect();
        let matched = self.query.mask(&refs);
        for (row, matched) in rows.into_iter().zip(matched) {
            self.push(row, matched);
        }
    }

    /// Takes `row`, which passes the WHERE clause when `matched`.
    fn push(&mut self, row: StoredRow, matched: bool) {
        if self.from.is_some_and(|from| row.seq <= from) {
            return;
        }
        if !row.deleted && matched {
            self.live.push(Reverse(BySeq(row)));
            if self.last_rows.is_some_and(|n| self.live.len() > n) {
                self.live.pop(); // the oldest
            }
        } else if self.from.is_some() {
            let seq = row.seq;
            self.gone.push((
                StoredRow {
                    deleted: false,
                    ..row
                },
                seq,
            ));
        }
    }

    /// The rows to send, oldest first, and the deletes of a resume, oldest first.
    pub(crate) fn finish(self) -> (VecDeque<StoredRow>, Vec<(StoredRow, i64)>) {
        let mut live: Vec<StoredRow> = self.live.into_iter().map(|Reverse(r)| r.0).collect();
        live.sort_by_key(|r| r.seq);
        let mut gone = self.gone;
        gone.sort_by_key(|(_, seq)| *seq);
        (live.into(), gone)
    }
}

/// The rows per initial batch; `last_rows` must fit in one.
pub(crate) fn batch_size_of(opts: &SubscriptionOptions) -> Result<usize, LiveError> {
    let batch_size = opts.batch_size.unwrap_or(DEFAULT_BATCH_SIZE).max(1);
    if opts.last_rows.is_some_and(|n| n > batch_size) {
        return Err(LiveError::unsupported(format!(
            "last_rows must not exceed batch_size ({batch_size})"
        )));
    }
    Ok(batch_size)
}

/// The columns the ack announces: the subscription's, in the table schema's types.
pub(crate) fn ack_schema(sub: &Subscription) -> Vec<SchemaField> {
    let query = sub.query();
    let table = &query.table;
    let schema = &table.schema;
    let indices: Vec<usize> = query
        .columns
        .iter()
        .filter_map(|&i| schema.index_of(&table.def.columns[i].name).ok())
        .collect();
    match schema.project(&indices) {
        Ok(projected) => schema_fields(&projected),
        Err(_) => Vec::new(),
    }
}

/// The `subscription_ack` of `sub` (batch 0).
pub(crate) fn ack(sub: &Subscription, schema: Vec<SchemaField>, has_more: bool) -> ServerMessage {
    ServerMessage::SubscriptionAck {
        subscription_id: sub.id.clone(),
        total_rows: 0,
        batch_control: BatchControl {
            batch_num: 0,
            has_more,
            status: batch_status(0, has_more),
            last_seq_id: None,
        },
        schema,
    }
}
