//! One live subscription: who and where it sends to, its compiled query (shared with
//! identical subscriptions), and its initial-load state.

use crate::compiled::{CompiledQuery, message};
use crate::error::LiveError;
use crate::outbox::Outbox;
use kalamdb_commons::schema::SEQ_COLUMN;
use kalamdb_commons::ws::{BatchControl, BatchStatus, Row, ServerMessage};
use kalamdb_commons::{TableId, UserId};
use kalamdb_tables::changes::ChangeEvent;
use kalamdb_tables::rows::StoredRow;
use parking_lot::{Mutex, RwLock};
use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Weak};

/// Where a subscription stands in its initial load.
#[derive(Debug, Default)]
pub(crate) struct LoadState {
    /// Initial load finished; changes go out as they come.
    pub(crate) ready: bool,
    /// Snapshot rows not sent yet, ascending `_seq`.
    pub(crate) pending: VecDeque<StoredRow>,
    /// For a `from` resume: rows deleted, or changed so they no longer match, since then
    /// (with the `_seq` of that change); sent as deletes once the load is done.
    pub(crate) resumed_deletes: Vec<(StoredRow, i64)>,
    /// Changes that arrived during the load.
    pub(crate) buffered: Vec<ChangeEvent>,
    /// Next batch number.
    pub(crate) batch_num: u32,
    /// Rows per batch.
    pub(crate) batch_size: usize,
    /// Largest `_seq` sent.
    pub(crate) last_seq: Option<i64>,
}

/// Changes held for one subscription during its initial load; beyond this its connection is
/// treated as too slow and closed.
const MAX_BUFFERED: usize = 100_000;

/// Change bodies computed once per compiled query during one publish. Each entry holds its
/// query, so no other query can take its address while the cache lives.
pub(crate) type BodyCache =
    HashMap<*const CompiledQuery, (Arc<CompiledQuery>, Arc<(Vec<String>, u64)>)>;

/// A live subscription.
#[derive(Debug)]
pub(crate) struct Subscription {
    /// The client's id.
    pub(crate) id: String,
    /// Server-wide id: `<connection>-<client id>`.
    pub(crate) live_id: String,
    pub(crate) conn: Weak<Outbox>,
    pub(crate) user: UserId,
    pub(crate) table_id: TableId,
    /// The user partition the subscription reads (USER/STREAM tables).
    pub(crate) routed_user: Option<UserId>,
    /// Replaced when an ALTER TABLE makes a new table version ([`Subscription::query`]).
    pub(crate) query: RwLock<Arc<CompiledQuery>>,
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
    /// The compiled query for the table's current version.
    pub(crate) fn query(&self) -> Arc<CompiledQuery> {
        Arc::clone(&self.query.read())
    }

    /// Delivers committed changes: buffered while the initial load runs, sent otherwise.
    /// Subscriptions sharing a compiled query share the encoded bodies through `cache`. A
    /// change the wire cannot carry is an error; the caller ends the subscription. Returns how
    /// many messages were queued.
    pub(crate) fn deliver(
        &self,
        events: &[ChangeEvent],
        cache: &mut BodyCache,
    ) -> Result<u64, LiveError> {
        let query = self.query();
        let mut state = self.state.lock();
        if !state.ready {
            if state.buffered.len() + events.len() > MAX_BUFFERED {
                // The client is not fetching its initial batches: treat it as too slow.
                if let Some(conn) = self.conn.upgrade() {
                    conn.overflow_now();
                }
                return Ok(0);
            }
            state.buffered.extend(events.iter().cloned());
            return Ok(0);
        }
        let bodies = if self.from.is_some() {
            Arc::new(query.change_bodies(events.iter(), self.from))
        } else {
            let key = Arc::as_ptr(&query);
            let (_, bodies) = cache.entry(key).or_insert_with(|| {
                let bodies = Arc::new(query.change_bodies(events.iter(), None));
                (Arc::clone(&query), bodies)
            });
            Arc::clone(bodies)
        };
        Ok(self.send_bodies(&bodies.0, bodies.1))
    }

    /// Queues `bodies` (holding `count` row changes); returns how many messages it queued.
    fn send_bodies(&self, bodies: &[String], count: u64) -> u64 {
        let Some(conn) = self.conn.upgrade() else {
            return 0;
        };
        for body in bodies {
            conn.send_text(message(&self.id, body).into());
        }
        if count > 0 {
            self.changes.fetch_add(count, Ordering::Relaxed);
            self.last_update
                .store(chrono::Utc::now().timestamp_micros(), Ordering::Relaxed);
        }
        bodies.len() as u64
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
        let query = self.query();
        let rows: Vec<Row> = state
            .pending
            .drain(..n)
            .map(|r| query.encode(&r, r.seq))
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
        let query = self.query();
        let resumed = std::mem::take(&mut state.resumed_deletes);
        if !resumed.is_empty() {
            let n = resumed.len() as u64;
            self.send_bodies(&query.delete_bodies(&resumed), n);
        }
        let buffered = std::mem::take(&mut state.buffered);
        let (bodies, count) = query.change_bodies(buffered.iter(), self.from);
        self.send_bodies(&bodies, count);
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
