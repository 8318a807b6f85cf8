//! [`TableStore`]: the one way into the rows of application tables.
//!
//! It owns both tiers (the hot store's table partitions and the [`ColdTier`]), the writer
//! locks and commit gate, the change listener and the automatic-flush counters, and offers
//! what the layers above need: a streaming scan plan, key lookups across tiers, a
//! `ScopeWriter` (writer.rs) that carries the whole write protocol, flushes, compactions and drops.
//! It is handed only what it uses (the hot store, the catalog, the schema registry, the
//! `_seq` generator); it never sees the server's context, SQL text or HTTP.

use crate::changes::{CaptureSlot, ChangeCapture, ChangeListener, ListenerSlot};
use crate::cold::ColdTier;
use crate::faults::Faults;
use crate::flush_scheduler::FlushScheduler;
use crate::rows::{Scope, StoredRow};
use crate::scan::key_range::KeyRanges;
use crate::scan::{BatchStream, ScanRequest, TableScanExec};
use crate::write_locks::{TableLocks, WriteLocks};
use kalamdb_catalog::catalog::Catalog;
use kalamdb_catalog::error::{KalamError, Result};
use kalamdb_catalog::partitions::TablePartitions;
use kalamdb_catalog::schema_registry::{CachedTable, SchemaRegistry};
use kalamdb_catalog::seq::SeqGenerator;
use kalamdb_commons::{TableDefinition, TableId, TableType};
use kalamdb_store::{StorageBackend, WriteBatch};
use std::path::Path;
use std::sync::Arc;

/// How the table storage layer is tuned (from `[storage]` of the server's configuration).
#[derive(Debug, Clone, Copy)]
pub struct TableStoreOptions {
    /// Bound of the decoded-segment cache, in bytes.
    pub segment_cache_bytes: u64,
    /// How long a compacted-away segment file stays readable for scans that planned it.
    pub superseded_file_grace_ms: u64,
    /// Segments of a scope that start a merge after a flush (below 2: never).
    pub compaction_trigger_segments: usize,
    /// How long tombstones survive a compaction (live-query resumes need them).
    pub tombstone_retention_secs: u64,
}

/// The storage of application tables; see the module doc.
#[derive(Debug)]
pub struct TableStore {
    pub(crate) backend: Arc<dyn StorageBackend>,
    pub(crate) registry: Arc<SchemaRegistry>,
    pub(crate) seq: Arc<SeqGenerator>,
    pub(crate) cold: Arc<ColdTier>,
    pub(crate) locks: WriteLocks,
    listener: ListenerSlot,
    capture: CaptureSlot,
    flushes: FlushScheduler,
    pub(crate) faults: Faults,
    pub(crate) options: TableStoreOptions,
    /// Transaction snapshots open now (see [`crate::snapshots`]).
    pub(crate) open_snapshots: crate::snapshots::OpenSnapshots,
    /// Held shared by whatever changes segment files or manifests (flushes, compactions,
    /// dropped data); a backup holds it alone while it copies them ([`Self::pause_file_changes`]).
    files_gate: crate::file_gate::FileGate,
}

impl TableStore {
    /// The store over `backend` and the storages of `catalog` (relative base directories
    /// taken from `root`, the data path).
    pub fn open(
        backend: Arc<dyn StorageBackend>,
        catalog: Catalog,
        registry: Arc<SchemaRegistry>,
        seq: Arc<SeqGenerator>,
        root: &Path,
        options: TableStoreOptions,
    ) -> Result<Self> {
        // A cluster member's manifests are records in its replicated store.
        let replicated = backend.defers_commits().then(|| Arc::clone(&backend));
        if replicated.is_some() {
            backend.create_partition(
                kalamdb_catalog::partitions::MANIFESTS_PARTITION,
                kalamdb_store::KeyLayout::Flat,
            )?;
        }
        let cold = Arc::new(ColdTier::open(
            catalog,
            root,
            options.segment_cache_bytes,
            replicated,
        )?);
        Ok(Self {
            backend,
            registry,
            seq,
            cold,
            locks: WriteLocks::default(),
            listener: ListenerSlot::default(),
            capture: CaptureSlot::default(),
            flushes: FlushScheduler::default(),
            faults: Faults::default(),
            options,
            open_snapshots: Default::default(),
            files_gate: crate::file_gate::FileGate::default(),
        })
    }

    /// The hot store (shared with the catalog).
    pub fn backend(&self) -> &Arc<dyn StorageBackend> {
        &self.backend
    }

    /// The cold tier: storages, manifests, segment caches.
    pub fn cold(&self) -> &Arc<ColdTier> {
        &self.cold
    }

    /// The writer locks of one table, striped by scope. Held by writers (see
    /// [`TableStore::writer`]) and by a live subscription while it registers, so a write is
    /// either in the subscription's snapshot or delivered to it, never both or neither.
    pub fn table_locks(&self, id: &TableId) -> Arc<TableLocks> {
        self.locks.table(id)
    }

    /// This engine's failure and pause points (set by tests; see [`crate::faults`]).
    pub fn faults(&self) -> &Faults {
        &self.faults
    }

    /// The counters behind automatic flushes.
    pub fn flushes(&self) -> &FlushScheduler {
        &self.flushes
    }

    /// Registers the listener of committed changes; only the first call takes effect.
    pub fn set_change_listener(&self, listener: Arc<dyn ChangeListener>) {
        let _ = self.listener.set(listener);
    }

    /// Registers the change capture (topics); only the first call takes effect.
    pub fn set_change_capture(&self, capture: Arc<dyn ChangeCapture>) {
        let _ = self.capture.set(capture);
    }

    /// The change capture of `table`, when its changes are captured.
    pub fn capture_of(&self, table: &TableId) -> Option<&Arc<dyn ChangeCapture>> {
        self.capture.get().filter(|c| c.captures(table))
    }

    /// The listener of committed changes, if one is registered.
    pub fn change_listener(&self) -> Option<&Arc<dyn ChangeListener>> {
        self.listener.get()
    }

    /// Plans a streaming scan (no row is read until it executes).
    pub async fn scan(&self, request: ScanRequest) -> Result<TableScanExec> {
        TableScanExec::plan(request, Arc::clone(&self.backend), Arc::clone(&self.cold)).await
    }

    /// Every current version of `scope` (tombstones included when `keep_tombstones`), both
    /// tiers merged in key order, all columns; with `after_seq`, versions at or before it may
    /// be left out. Returns once the hot tier's snapshot is taken:
    /// a caller holding the scope's writer lock until then (a live subscription registering)
    /// sees every write either in these rows or afterwards, never both. The rows are read as
    /// the stream is polled, a batch at a time.
    pub async fn snapshot_scope(
        &self,
        table: &Arc<CachedTable>,
        scope: &Scope,
        keep_tombstones: bool,
        after_seq: Option<i64>,
    ) -> Result<BatchStream> {
        let request = ScanRequest {
            table: Arc::clone(table),
            scope: scope.clone(),
            ranges: KeyRanges::all(),
            filters: Vec::new(),
            projection: None,
            limit: None,
            keep_tombstones,
            after_seq,
            view: None,
        };
        crate::scan::read_now(request, Arc::clone(&self.backend), Arc::clone(&self.cold)).await
    }

    /// The latest version of each primary key (`pks`, encoded keys) of `scope`, across both
    /// tiers, tombstones included.
    pub async fn get(
        &self,
        table: &CachedTable,
        scope: &Scope,
        pks: &[Vec<u8>],
    ) -> Result<Vec<Option<StoredRow>>> {
        self.cold
            .current_versions(&*self.backend, table, scope, pks, None)
            .await
            .map_err(|e| gone(e, table))
    }

    /// Builds a batch with `build` inside the commit gate (where versions get their `_seq`,
    /// see the `writer` module) and writes it; counts each table's rows for automatic flushes.
    pub(crate) async fn commit(
        &self,
        tables: &[(&CachedTable, u64)],
        build: impl FnOnce(&mut WriteBatch),
    ) -> Result<()> {
        if !self.backend.defers_commits() {
            // A local store: written under the gate, no wait after it.
            let _gate = self.locks.commit_gate().await;
            let mut batch = WriteBatch::new();
            build(&mut batch);
            return self.built(tables, self.backend.write(batch));
        }
        let pending = self.submit(tables, build).await?;
        pending.wait().await.map_err(|e| self.failed(tables, e))
    }

    /// Builds a batch with `build` inside the commit gate and submits it to a store that
    /// defers commits ([`StorageBackend::submit`]); the caller waits for it.
    pub(crate) async fn submit(
        &self,
        tables: &[(&CachedTable, u64)],
        build: impl FnOnce(&mut WriteBatch),
    ) -> Result<Box<dyn kalamdb_store::Pending>> {
        let _gate = self.locks.commit_gate().await;
        let mut batch = WriteBatch::new();
        build(&mut batch);
        // Ordered under the gate; a replicated store commits after it is released (the
        // caller still holds its scopes' locks, or a ticket, until the write is visible).
        self.built(tables, self.backend.submit(batch))
    }

    /// Ends a commit's step under the gate: tells the change capture how its batch fared and
    /// counts the written rows.
    fn built<T>(
        &self,
        tables: &[(&CachedTable, u64)],
        outcome: std::result::Result<T, kalamdb_store::StoreError>,
    ) -> Result<T> {
        if let Some(capture) = self.capture.get() {
            capture.finished(outcome.is_ok());
        }
        let done = outcome.map_err(|e| self.failed(tables, e))?;
        self.count_written(tables);
        Ok(done)
    }

    /// A store error of a commit of `tables`, as the statement's error.
    fn failed(&self, tables: &[(&CachedTable, u64)], e: kalamdb_store::StoreError) -> KalamError {
        match tables.first() {
            Some((table, _)) => gone(e.into(), table),
            None => e.into(),
        }
    }

    /// Counts written rows for automatic flushes; called under the commit gate: concurrent
    /// writers of a USER table would otherwise contend on the counter map's lock (measured:
    /// ~6 µs per row, in parked threads).
    fn count_written(&self, tables: &[(&CachedTable, u64)]) {
        for (table, rows) in tables {
            if table.def.table_type != TableType::Stream {
                self.flushes.wrote(&table.def.table_id(), *rows);
            }
        }
    }

    /// Writes a batch that is not a table's (direct topic publishing) the way table writes
    /// are: built by `build` inside the commit gate, ordered with every other commit.
    pub async fn commit_other(&self, build: impl FnOnce(&mut WriteBatch)) -> Result<()> {
        self.commit(&[], build).await
    }

    /// Forgets a dropped table's writer locks and flush counter.
    pub fn forget(&self, id: &TableId) {
        self.locks.forget(id);
        self.flushes.forget(id);
    }

    /// Stops flushes, compactions and removals of dropped data (each waits) until the guard
    /// is dropped, so the segment files and manifests stay as they are: a backup copies them.
    /// The guard is owned, so a backup's blocking copy keeps it even if the request that
    /// started it goes away.
    pub async fn pause_file_changes(&self) -> tokio::sync::OwnedRwLockWriteGuard<()> {
        self.files_gate.pause().await
    }

    /// The gate itself, for pauses another cluster member's backup asks for
    /// ([`crate::file_gate::FileGate::hold`]).
    pub fn file_gate(&self) -> &crate::file_gate::FileGate {
        &self.files_gate
    }

    /// Held shared while segment files or manifests change (also by other writers of the
    /// storages' files: topic and system-table flushes).
    pub async fn file_changes(&self) -> tokio::sync::RwLockReadGuard<'_, ()> {
        self.files_gate.changing().await
    }

    /// Removes every row of a dropped table incarnation: its hot partition and its segments.
    /// The caller has removed the definition; a failure leaves it to be retried.
    pub async fn remove_table_data(&self, def: &TableDefinition) -> Result<()> {
        let _files = self.files_gate.changing().await;
        self.backend
            .drop_partition(TablePartitions::of(def).used())?;
        self.cold.drop_table(def).await
    }

    /// Removes `scope`'s rows of table `def` from both tiers (its user was dropped).
    pub async fn remove_scope_data(&self, def: &TableDefinition, scope: &Scope) -> Result<()> {
        let _files = self.files_gate.changing().await;
        let from = scope.prefix();
        // The prefix ends with a 0 separator: the next byte bounds every key of the scope.
        let mut to = from.clone();
        if let Some(last) = to.last_mut() {
            *last += 1;
        }
        {
            // Released before the files go: a flush holds the folder lock while it waits for
            // this scope lock, so holding both here in the other order could deadlock.
            let locks = self.locks.table(&def.table_id());
            let _writers_wait = locks.scope(scope).await;
            let mut batch = WriteBatch::new();
            batch.delete_range(TablePartitions::of(def).used(), from, to);
            // A cluster's record of the scope's manifest goes with its rows (members forget
            // the folder as they apply it; the files go below).
            if def.table_type == TableType::User
                && let Some(key) = self.cold.record_key(def, scope)?
            {
                batch.delete(kalamdb_catalog::partitions::MANIFESTS_PARTITION, key);
            }
            self.backend.write(batch)?;
        }
        if def.table_type == TableType::User {
            self.cold.drop_scope(def, scope).await?;
        }
        Ok(())
    }

    /// Deletes rows of STREAM table `def` older than its TTL; returns how many were removed.
    /// A cluster member removes those of the scopes whose groups it leads, one batch per
    /// scope (a batch is one group's entry).
    pub fn evict_expired(&self, def: &TableDefinition) -> Result<usize> {
        let cutoff = crate::rows::stream_cutoff_seq(def);
        let log = TablePartitions::of(def).log;
        let per_scope = self.cold.replicated();
        let mut batch = WriteBatch::upkeep();
        let mut removed = 0;
        // The scope (`<user id>\0`) of the keys being read, and whether this node evicts it.
        let mut scope: Option<(Vec<u8>, bool)> = None;
        for item in self.backend.scan(&log, b"", None)? {
            let (key, _) = item?;
            if per_scope {
                let end = key.iter().position(|b| *b == 0).map_or(0, |i| i + 1);
                if scope.as_ref().map(|(s, _)| s.as_slice()) != Some(&key[..end]) {
                    removed +=
                        self.write_eviction(std::mem::replace(&mut batch, WriteBatch::upkeep()))?;
                    scope = Some((key[..end].to_vec(), self.backend.leads(&log, &key)));
                }
                if scope.as_ref().is_some_and(|(_, mine)| !mine) {
                    continue;
                }
            }
            if crate::rows::seq_of_log_key(&key).is_some_and(|seq| seq < cutoff) {
                batch.delete(&log, key.to_vec());
            }
        }
        Ok(removed + self.write_eviction(batch)?)
    }

    /// Writes one batch of [`Self::evict_expired`]; how many rows it removed.
    fn write_eviction(&self, batch: WriteBatch) -> Result<usize> {
        let removed = batch.len();
        if !batch.is_empty() {
            self.backend.write(batch)?;
        }
        Ok(removed)
    }
}

/// A missing partition under a statement means the table was dropped meanwhile.
pub(crate) fn gone(e: KalamError, table: &CachedTable) -> KalamError {
    match e {
        KalamError::Store(kalamdb_store::StoreError::PartitionNotFound(_)) => {
            KalamError::NotFound {
                kind: "Table",
                name: table.def.table_id().to_string(),
            }
        }
        other => other,
    }
}
