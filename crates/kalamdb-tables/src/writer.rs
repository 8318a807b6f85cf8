//! [`ScopeWriter`]: the write protocol of application tables, in one place.
//!
//! 1. Take the scope's writer lock (see [`crate::write_locks`]); it is held until the writer
//!    is committed or dropped, so a check and the write it guards are one step.
//! 2. Check that the caller's definition is still the current one (an `ALTER TABLE` between
//!    planning and the lock means [`KalamError::SchemaChanged`]: nothing was written, plan
//!    again).
//! 3. Stage versions: USER/SHARED versions replace the key's latest entry (an UPDATE is a full
//!    new version, a DELETE a tombstone), STREAM rows append to the log. Key checks read both
//!    tiers ([`ScopeWriter::current`]).
//! 4. Commit: inside the server-wide commit gate each version gets its `_seq` and the batch is
//!    written atomically, so `_seq` order is commit order across the whole server (a snapshot
//!    taken at the gate holds exactly the versions up to a `_seq`, which transactions rely
//!    on); then the automatic-flush counter is bumped, and the change events are handed to the
//!    listener while the lock is still held, so a live subscription sees every write either in
//!    its snapshot or as a change.
//!
//! Dropping a writer without committing writes nothing.
//!
//! On a replicated store (one whose commits wait for a Raft round trip) a keyed writer
//! ([`TableStore::keyed_writer`]: INSERT, STREAM appends, which read rows only by key)
//! releases the scope's lock as soon as its batch is submitted, so the writes of one scope
//! travel together instead of one round trip each; its ticket (see [`crate::write_locks`])
//! keeps its keys visible to the next writers' key checks and its change events in
//! submission order.

use crate::changes::{ChangeEvent, ChangeKind, ChangeListener};
use crate::rows::{Scope, StoredRow, log_key, row_key};
use crate::store::TableStore;
use crate::write_locks::{TableLocks, stripe_of};
use kalamdb_catalog::error::{KalamError, Result};
use kalamdb_catalog::schema_registry::CachedTable;
use kalamdb_catalog::value::Value;
use kalamdb_store::WriteBatch;
use std::sync::Arc;
use tokio::sync::OwnedMutexGuard;

/// A row's cells by column id.
pub type Cells = Vec<(u32, Value)>;

/// A version staged by a writer; it gets its `_seq` at commit, inside the commit gate.
#[derive(Debug, Clone)]
pub(crate) enum Staged {
    /// A new version of key `pk` (a tombstone when `deleted`); `old` is the version it
    /// replaces, for the change event.
    Put {
        pk: Vec<u8>,
        deleted: bool,
        cells: Cells,
        old: Option<StoredRow>,
    },
    /// A STREAM row appended to the log.
    Append(Cells),
    /// A STREAM log entry removed; `old` is its row when someone listens.
    Remove {
        key: Vec<u8>,
        old: Option<StoredRow>,
    },
}

/// Gives each of `staged` its `_seq` (call inside the commit gate) and adds it to `batch`;
/// with `events`, the change events too.
pub(crate) fn seal(
    store: &TableStore,
    table: &CachedTable,
    prefix: &[u8],
    staged: Vec<Staged>,
    batch: &mut WriteBatch,
    mut events: Option<&mut Vec<ChangeEvent>>,
) {
    for s in staged {
        match s {
            Staged::Put {
                pk,
                deleted,
                cells,
                old,
            } => {
                let row = StoredRow {
                    seq: store.seq.next_id(),
                    deleted,
                    cells,
                };
                batch.put(&table.partitions.rows, row_key(prefix, &pk), row.encode());
                if let Some(events) = events.as_deref_mut() {
                    let kind = match (deleted, &old) {
                        (true, _) => ChangeKind::Delete,
                        (false, Some(_)) => ChangeKind::Update,
                        (false, None) => ChangeKind::Insert,
                    };
                    events.push(ChangeEvent {
                        kind,
                        seq: row.seq,
                        new: (!deleted).then_some(row),
                        old,
                    });
                }
            }
            Staged::Append(cells) => {
                let row = StoredRow {
                    seq: store.seq.next_id(),
                    deleted: false,
                    cells,
                };
                batch.put(
                    &table.partitions.log,
                    log_key(prefix, row.seq),
                    row.encode(),
                );
                if let Some(events) = events.as_deref_mut() {
                    events.push(ChangeEvent {
                        kind: ChangeKind::Insert,
                        seq: row.seq,
                        new: Some(row),
                        old: None,
                    });
                }
            }
            Staged::Remove { key, old } => {
                batch.delete(&table.partitions.log, key);
                if let (Some(events), Some(old)) = (events.as_deref_mut(), old) {
                    events.push(ChangeEvent {
                        kind: ChangeKind::Delete,
                        seq: store.seq.next_id(),
                        new: None,
                        old: Some(old),
                    });
                }
            }
        }
    }
}

/// An open write of one table scope; see the module doc.
pub struct ScopeWriter<'a> {
    store: &'a TableStore,
    table: &'a CachedTable,
    scope: &'a Scope,
    prefix: Vec<u8>,
    staged: Vec<Staged>,
    listener: Option<&'a Arc<dyn ChangeListener>>,
    capture: Option<&'a Arc<dyn crate::changes::ChangeCapture>>,
    locks: Arc<TableLocks>,
    /// A keyed writer on a store that defers commits (see the module doc).
    keyed: bool,
    /// The table's current definition (the same as `table`), owned for a keyed commit's tail.
    current: Arc<CachedTable>,
    lock: OwnedMutexGuard<()>,
}

impl std::fmt::Debug for ScopeWriter<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ScopeWriter")
            .field("table", &self.table.def.table_id())
            .field("scope", &self.scope)
            .field("staged", &self.staged.len())
            .finish()
    }
}

impl TableStore {
    /// Opens a write of `scope` of `table`: waits for the scope's writer lock, then checks
    /// that `table` is still the current definition (else [`KalamError::SchemaChanged`], and
    /// the caller plans again). Nothing is visible until [`ScopeWriter::commit`].
    pub async fn writer<'a>(
        &'a self,
        table: &'a CachedTable,
        scope: &'a Scope,
    ) -> Result<ScopeWriter<'a>> {
        ScopeWriter::open(self, table, scope, false).await
    }

    /// Opens a write of `scope` of `table` that reads rows only by key, through
    /// [`ScopeWriter::current`] (INSERT, STREAM appends): on a replicated store it does not
    /// wait for the scope's earlier writes to become visible, except those of the keys it
    /// looks up, and its commit lets the next writer in once its batch is submitted (see the
    /// module doc). On a local store it is [`Self::writer`].
    pub async fn keyed_writer<'a>(
        &'a self,
        table: &'a CachedTable,
        scope: &'a Scope,
    ) -> Result<ScopeWriter<'a>> {
        ScopeWriter::open(self, table, scope, self.backend.defers_commits()).await
    }
}

impl<'a> ScopeWriter<'a> {
    async fn open(
        store: &'a TableStore,
        table: &'a CachedTable,
        scope: &'a Scope,
        keyed: bool,
    ) -> Result<Self> {
        let id = table.def.table_id();
        let locks = store.locks.table(&id);
        let lock = if keyed {
            locks.scope_keyed(scope).await
        } else {
            locks.scope_owned(scope).await
        };
        let current = store.registry.require(&id)?;
        if current.def.version != table.def.version
            || current.def.created_at != table.def.created_at
        {
            return Err(KalamError::SchemaChanged(id.to_string()));
        }
        // Asked under the lock, for the same reason the events are published under it.
        let listener = store
            .change_listener()
            .filter(|l| l.wants(&id, scope.user()));
        Ok(Self {
            store,
            table,
            scope,
            prefix: scope.prefix(),
            staged: Vec::new(),
            listener,
            capture: store.capture_of(&id),
            locks,
            keyed,
            current,
            lock,
        })
    }

    /// Whether a change listener wants this write's events (building old versions for
    /// them costs a read; skip it when nobody listens).
    pub fn listened(&self) -> bool {
        self.listener.is_some() || self.capture.is_some()
    }

    /// The latest version of each encoded primary key, across both tiers (tombstones
    /// included), as of now: nobody else can write the scope while this writer is open.
    pub async fn current(&self, pks: &[Vec<u8>]) -> Result<Vec<Option<StoredRow>>> {
        if self.keyed {
            let keys: Vec<Vec<u8>> = pks.iter().map(|pk| row_key(&self.prefix, pk)).collect();
            let stripe = stripe_of(self.scope);
            if self.locks.in_flight(stripe, keys.iter().map(Vec::as_slice)) {
                self.locks.settle(stripe).await;
            }
        }
        self.store.get(self.table, self.scope, pks).await
    }

    /// Stages a new version of key `pk`: `old` is the version it replaces (for the change
    /// event), `None` for a new key.
    pub fn put(&mut self, pk: &[u8], deleted: bool, cells: Cells, old: Option<StoredRow>) {
        self.staged.push(Staged::Put {
            pk: pk.to_vec(),
            deleted,
            cells,
            old: if self.listened() { old } else { None },
        });
    }

    /// Stages a STREAM-table row: appended to the log under its own `_seq`, no key check.
    pub fn append(&mut self, cells: Cells) {
        self.staged.push(Staged::Append(cells));
    }

    /// Stages the removal of STREAM-table log entries by `_seq` (a hard delete).
    pub fn remove_logged(&mut self, seqs: &[i64]) -> Result<()> {
        let log = &self.table.partitions.log;
        let keys: Vec<Vec<u8>> = seqs.iter().map(|s| log_key(&self.prefix, *s)).collect();
        let mut olds: Vec<Option<StoredRow>> = vec![None; keys.len()];
        if self.listened() {
            let found = self.store.backend.multi_get(log, &keys)?;
            for (slot, bytes) in olds.iter_mut().zip(found) {
                if let Some(bytes) = bytes {
                    let mut row = StoredRow::decode(&bytes)?;
                    self.table.backfill(row.seq, &mut row.cells);
                    *slot = Some(row);
                }
            }
        }
        for (key, old) in keys.into_iter().zip(olds) {
            self.staged.push(Staged::Remove { key, old });
        }
        Ok(())
    }

    /// Versions (or log removals) staged so far.
    pub fn staged(&self) -> usize {
        self.staged.len()
    }

    /// Writes everything staged as one atomic batch and publishes the changes; releases the
    /// scope's lock after that (a keyed writer on a replicated store: once the batch is
    /// submitted, see the module doc).
    pub async fn commit(self) -> Result<()> {
        if self.keyed {
            return self.commit_keyed().await;
        }
        let rows = self.staged.len() as u64;
        let mut events = Vec::new();
        let listening = self.listened();
        let (table, prefix, capture, user) =
            (self.table, &self.prefix, self.capture, self.scope.user());
        self.store
            .commit(&[(table, rows)], |batch| {
                seal(
                    self.store,
                    table,
                    prefix,
                    self.staged,
                    batch,
                    listening.then_some(&mut events),
                );
                if let Some(c) = capture {
                    c.capture(table, user, &events, batch);
                }
            })
            .await?;
        if let Some(l) = self.listener {
            l.publish(self.table, self.scope.user(), events);
        }
        Ok(())
    }

    /// [`Self::commit`] of a keyed writer on a replicated store: submits, takes the stripe's
    /// next ticket (a failed submit takes none), lets the next writer of the scope in, and
    /// hands the rest to a task of its own, so that a request dropped half way cannot finish
    /// the ticket before the write is visible here: the task waits for the write and the
    /// previous ticket, publishes, then finishes the ticket.
    async fn commit_keyed(self) -> Result<()> {
        let Self {
            store,
            table,
            scope,
            prefix,
            staged,
            listener,
            capture,
            locks,
            current,
            lock,
            ..
        } = self;
        let rows = staged.len() as u64;
        let listening = listener.is_some() || capture.is_some();
        let keys = staged
            .iter()
            .filter_map(|s| match s {
                Staged::Put { pk, .. } => Some(row_key(&prefix, pk)),
                _ => None,
            })
            .collect();
        let mut events = Vec::new();
        let pending = store
            .submit(&[(table, rows)], |batch| {
                seal(
                    store,
                    table,
                    &prefix,
                    staged,
                    batch,
                    listening.then_some(&mut events),
                );
                if let Some(c) = capture {
                    c.capture(table, scope.user(), &events, batch);
                }
            })
            .await?;
        let mut ticket = locks.ticket(stripe_of(scope), keys);
        drop(lock);
        let (listener, scope) = (listener.cloned(), scope.clone());
        let tail = tokio::spawn(async move {
            let written = pending.wait().await;
            ticket.previous_finished().await;
            if written.is_ok()
                && let Some(l) = listener
            {
                l.publish(&current, scope.user(), events);
            }
            drop(ticket);
            written
        });
        match tail.await {
            Ok(written) => written.map_err(|e| crate::store::gone(e.into(), table)),
            Err(e) => Err(KalamError::Internal(format!(
                "a write's commit task failed: {e}"
            ))),
        }
    }
}
