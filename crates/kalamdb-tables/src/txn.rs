//! What transactions need from table storage: a snapshot of both tiers as of one `_seq`
//! ([`TxSnapshot`]), reads through it with a transaction's staged versions laid over
//! ([`TxRead`]), and the atomic, conflict-checked commit of staged versions across scopes
//! ([`TableStore::commit_transaction`]).
//!
//! **Snapshot.** Versions get their `_seq` inside the commit gate (see [`crate::writer`]), so
//! a RocksDB snapshot taken inside the gate, with the next `_seq` as its bound, holds every
//! version up to the bound and none after. The cold tier is read as it is now, less every
//! version past the bound: a version flushed after the snapshot was in the hot tier when it
//! was taken (the snapshot still holds it), and a later one is filtered out. What could go
//! wrong is a compaction merging away an older version the snapshot still needs; so a
//! compaction leaves a scope alone while a snapshot older than the newest version it would
//! merge is open ([`TableStore::oldest_snapshot`]).
//!
//! **Staging.** A transaction's versions of one scope ([`ScopeStage`]) are kept encoded, as
//! the hot tier would hold them, under provisional `_seq`s (newer than the snapshot), so a
//! scan inside the transaction reads them through the same hot-tier reader as committed rows.
//!
//! **Commit.** Takes the writer locks of every staged scope (in one global order, so two
//! commits cannot deadlock), refuses the commit if any staged key has a committed version
//! newer than the snapshot (first committer wins; this also catches a concurrent insert of
//! the same primary key), then seals every version with its final `_seq` into one atomic batch
//! inside the commit gate, and hands each scope's change events to the listener afterwards.

use crate::changes::ChangeEvent;
use crate::rows::{Scope, StoredRow, row_key};
use crate::snapshots::{Overlay, TxRead, TxSnapshot};
use crate::store::TableStore;
use crate::writer::{Cells, Staged, seal};
use kalamdb_catalog::error::{KalamError, Result};
use kalamdb_catalog::schema_registry::CachedTable;
use kalamdb_store::StorageSnapshot;
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

/// A transaction's staged versions of one scope of one table; see the module doc.
#[derive(Debug, Clone)]
pub struct ScopeStage {
    table: Arc<CachedTable>,
    scope: Scope,
    /// Full hot-tier keys -> encoded versions (provisional `_seq`s).
    rows: Arc<BTreeMap<Vec<u8>, Vec<u8>>>,
    /// The committed version each staged key replaces (as first read), for change events.
    olds: HashMap<Vec<u8>, Option<StoredRow>>,
    bytes: usize,
}

impl ScopeStage {
    /// Nothing staged yet in `scope` of `table`.
    pub fn new(table: Arc<CachedTable>, scope: Scope) -> Self {
        Self {
            table,
            scope,
            rows: Arc::default(),
            olds: HashMap::new(),
            bytes: 0,
        }
    }

    /// The table (the definition the versions were staged against).
    pub fn table(&self) -> &Arc<CachedTable> {
        &self.table
    }

    /// The scope.
    pub fn scope(&self) -> &Scope {
        &self.scope
    }

    /// Keys staged.
    pub fn len(&self) -> usize {
        self.rows.len()
    }

    /// Whether nothing is staged.
    pub fn is_empty(&self) -> bool {
        self.rows.is_empty()
    }

    /// Bytes the staged versions take (keys and encoded rows).
    pub fn bytes(&self) -> usize {
        self.bytes
    }
}

impl TableStore {
    /// Takes a snapshot of both tiers (inside the commit gate; see the module doc).
    pub async fn begin_snapshot(&self) -> TxSnapshot {
        let _gate = self.locks.commit_gate().await;
        let seq = self.seq.next_id();
        TxSnapshot {
            hot: Arc::clone(&self.backend).owned_snapshot(),
            seq,
            _open: Arc::new(self.open_snapshots.open(seq)),
        }
    }

    /// The bound of the oldest transaction snapshot open, if any: compactions leave alone
    /// scopes with versions newer than it.
    pub fn oldest_snapshot(&self) -> Option<i64> {
        self.open_snapshots.oldest()
    }

    /// How a transaction with `snapshot` reads `stage`'s scope (`None`: nothing staged there).
    pub fn tx_read(&self, snapshot: &TxSnapshot, stage: Option<&ScopeStage>) -> Arc<TxRead> {
        let hot: Arc<dyn StorageSnapshot + Send + Sync> = match stage {
            Some(s) if !s.is_empty() => Arc::new(Overlay {
                base: Arc::clone(&snapshot.hot),
                partition: s.table.partitions.rows.clone(),
                rows: Arc::clone(&s.rows),
            }),
            _ => Arc::clone(&snapshot.hot),
        };
        Arc::new(TxRead {
            hot,
            max_seq: snapshot.seq,
        })
    }

    /// The version of each of `pks` a transaction reading through `view` sees (a tombstone
    /// included), as [`TableStore::get`] answers outside transactions.
    pub async fn get_in(
        &self,
        view: &TxRead,
        table: &CachedTable,
        scope: &Scope,
        pks: &[Vec<u8>],
    ) -> Result<Vec<Option<StoredRow>>> {
        self.cold
            .current_versions(&*view.hot, table, scope, pks, Some(view.max_seq))
            .await
    }

    /// Stages a version of key `pk` in `stage`; `old` is the version the transaction saw
    /// (kept from the first time the key is staged). Returns the bytes added.
    pub fn stage(
        &self,
        stage: &mut ScopeStage,
        pk: &[u8],
        deleted: bool,
        cells: Cells,
        old: Option<StoredRow>,
    ) -> usize {
        let row = StoredRow {
            seq: self.seq.next_id(),
            deleted,
            cells,
        };
        let key = row_key(&stage.scope.prefix(), pk);
        let value = row.encode();
        let (key_len, added) = (key.len(), key.len() + value.len());
        stage.olds.entry(pk.to_vec()).or_insert(old);
        if let Some(replaced) = Arc::make_mut(&mut stage.rows).insert(key, value) {
            stage.bytes = stage.bytes.saturating_sub(key_len + replaced.len());
        }
        stage.bytes += added;
        added
    }

    /// Commits the staged versions of one transaction whose snapshot is `snapshot_seq`; see
    /// the module doc. Returns the rows written. Fails with
    /// [`KalamError::TransactionConflict`] (nothing written) when another write of a staged
    /// key committed after the snapshot.
    pub async fn commit_transaction(
        &self,
        snapshot_seq: i64,
        stages: Vec<ScopeStage>,
    ) -> Result<usize> {
        let stages: Vec<ScopeStage> = stages.into_iter().filter(|s| !s.is_empty()).collect();
        if stages.is_empty() {
            return Ok(0);
        }
        let _held = self
            .locks
            .scopes_owned(stages.iter().map(|s| (s.table.def.table_id(), &s.scope)))
            .await;
        let mut sealed = Vec::with_capacity(stages.len());
        for s in &stages {
            let id = s.table.def.table_id();
            let current = self.registry.require(&id)?;
            if current.def.version != s.table.def.version
                || current.def.created_at != s.table.def.created_at
            {
                return Err(KalamError::TransactionConflict(format!(
                    "{id} was altered or recreated while the transaction ran"
                )));
            }
            let prefix = s.scope.prefix();
            let pks: Vec<Vec<u8>> = s.rows.keys().map(|k| k[prefix.len()..].to_vec()).collect();
            let now = self.get(&s.table, &s.scope, &pks).await?;
            if now.iter().flatten().any(|r| r.seq > snapshot_seq) {
                return Err(KalamError::TransactionConflict(format!(
                    "a row of {id} this transaction writes was changed by another write after \
                     the transaction began; run it again"
                )));
            }
            let mut staged = Vec::with_capacity(s.rows.len());
            for (pk, value) in pks.into_iter().zip(s.rows.values()) {
                let row = StoredRow::decode(value)?;
                let old = s.olds.get(&pk).cloned().flatten();
                staged.push(Staged::Put {
                    pk,
                    deleted: row.deleted,
                    cells: row.cells,
                    old,
                });
            }
            let listener = self
                .change_listener()
                .filter(|l| l.wants(&id, s.scope.user()));
            let capture = self.capture_of(&id);
            sealed.push((s, prefix, staged, listener, capture));
        }
        let counts: Vec<(&CachedTable, u64)> = stages
            .iter()
            .map(|s| (&*s.table, s.rows.len() as u64))
            .collect();
        let mut events: Vec<Vec<ChangeEvent>> = vec![Vec::new(); sealed.len()];
        let mut rows = 0;
        let parts: Vec<_> = sealed
            .iter_mut()
            .map(|(s, prefix, staged, listener, capture)| {
                (
                    s,
                    prefix,
                    std::mem::take(staged),
                    listener.is_some(),
                    *capture,
                )
            })
            .collect();
        self.commit(&counts, |batch| {
            for ((s, prefix, staged, listening, capture), events) in
                parts.into_iter().zip(&mut events)
            {
                rows += staged.len();
                let wanted = listening || capture.is_some();
                seal(
                    self,
                    &s.table,
                    prefix,
                    staged,
                    batch,
                    wanted.then_some(&mut *events),
                );
                if let Some(c) = capture {
                    c.capture(&s.table, s.scope.user(), events, batch);
                }
            }
        })
        .await?;
        // Published under the locks, in commit order, as a single writer's are.
        for ((s, _, _, listener, _), events) in sealed.into_iter().zip(events) {
            if let Some(l) = listener {
                l.publish(&s.table, s.scope.user(), events);
            }
        }
        Ok(rows)
    }
}
