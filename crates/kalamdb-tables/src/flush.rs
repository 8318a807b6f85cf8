//! Flushing and compacting application tables: moving a scope's hot rows into a Parquet
//! segment and merging a scope's segments, each coordinated across both tiers (the cold tier
//! writes files and manifests, the hot tier drops what was flushed under the scope's lock).

use crate::cold::{
    CLEANUP_SLICE, COLD_YES, FlushStats, ManifestRecord, ScanSource, encode_scope, merge_segments,
    tiered_run_start,
};
use crate::faults::{FlushStep, PausePoint};
use crate::rows::Scope;
use crate::store::TableStore;
use kalamdb_catalog::error::{KalamError, Result};
use kalamdb_catalog::jobs::CancelFlag;
use kalamdb_catalog::partitions::MANIFESTS_PARTITION;
use kalamdb_catalog::schema_registry::{CachedTable, SchemaRegistry};
use kalamdb_commons::TableType;
use kalamdb_filestore::Manifest;
use kalamdb_store::{KvPair, StorageBackend, WriteBatch};
use std::sync::Arc;
use std::sync::atomic::Ordering;

impl TableStore {
    /// Flushes one scope; see the module doc.
    pub async fn flush_scope(&self, table: &Arc<CachedTable>, scope: &Scope) -> Result<FlushStats> {
        let loc = self.cold.locate(&table.def, Some(scope))?;
        let lock = self.cold.folder_lock(&loc);
        let _flushing = lock.lock().await;
        // The definition as of now (the caller's may predate an ALTER); gone: nothing to do.
        let Some(table) = &current(&self.registry, table)? else {
            return Ok(FlushStats::default());
        };
        let prefix = scope.prefix();
        self.cold.check_shared(&table.def, &loc)?;
        if !self.leads(table, &prefix) {
            return Ok(FlushStats::elsewhere());
        }

        let started = std::time::Instant::now();
        let manifest = self.cold.manifest(&table.def, &loc).await?;
        // Files left by an interrupted flush (or a dropped incarnation) are removed by the
        // first flush of the folder in this process, and again after a flush of it failed.
        let sweep_key = format!("{}@{}", loc.key, table.def.created_at);
        if !self.cold.swept.contains(&sweep_key) {
            let removed = loc
                .files
                .remove_strays(&loc.dir, &manifest, self.cold.stray_age())
                .await?;
            if removed > 0 {
                tracing::info!(dir = %loc.dir, removed, "removed files left by an interrupted flush");
            }
            self.cold.swept.insert(sweep_key.clone());
        }
        self.faults
            .pause(PausePoint::FlushBeforeRead, &table.def.table_id())
            .await;
        // Snapshot scan, decode and Parquet encoding are CPU work: the background thread.
        let job = {
            let backend = Arc::clone(&self.backend);
            let table = Arc::clone(table);
            let prefix = prefix.clone();
            let (dir, id) = (loc.dir.clone(), format!("{:019}", self.seq.next_id()));
            move || encode_scope(backend.as_ref(), &table, &prefix, &dir, id)
        };
        let Some((stored, segment, timing)) = crate::background::run(job).await?? else {
            return Ok(FlushStats::default());
        };
        // Rows are encoded with `table`'s columns: valid only if no ALTER committed before the
        // snapshot (nothing is written yet; the caller retries).
        if current(&self.registry, table)?.map(|t| t.def.version) != Some(table.def.version) {
            return Err(KalamError::SchemaChanged(table.def.table_id().to_string()));
        }
        let encoded = started.elapsed();
        if !self.leads(table, &prefix)
            || !self.cold.still_current(&table.def, &loc, &manifest).await?
        {
            // The leadership moved meanwhile (perhaps away and back: another member's
            // flush of the scope changed its manifest). The next flush does it.
            return Ok(FlushStats::elsewhere());
        }
        table.cold_state.store(COLD_YES, Ordering::SeqCst);
        let committed: Result<(FlushStats, Option<ManifestRecord>)> = async {
            let meta = loc.files.put_segment(&loc.dir, segment).await?;
            self.faults.flush_step(FlushStep::SegmentWritten)?;
            let stats = FlushStats {
                rows: meta.row_count,
                bytes: meta.bytes,
                segments: 1,
                elsewhere: 0,
            };
            let mut next = manifest.manifest.clone();
            next.version = 1;
            next.table_created_at = table.def.created_at;
            next.segments.push(meta);
            let record = self.cold.commit_manifest(&loc, next).await?;
            Ok((stats, record))
        }
        .await;
        if committed.is_err() {
            self.cold.swept.remove(&sweep_key); // a segment file may be left behind
        }
        // In a cluster the manifest's record rides in the first cleanup batch: it makes the
        // segment part of the scope on every member, atomically with the hot versions it
        // replaces (each batch is upkeep: its deletions are moves, not changes).
        let (stats, record) = committed?;
        let written = started.elapsed();
        self.faults.flush_step(FlushStep::ManifestCommitted)?;

        // Drop the flushed versions from the hot tier, unless a writer replaced them since:
        // under the scope's lock, walk the scope again beside the flushed list and delete each
        // run of consecutive entries that are byte-for-byte the flushed ones (one range
        // tombstone per run; keys written since break the runs). The walk goes in slices of
        // CLEANUP_SLICE flushed entries, each under the lock on its own, so writers of the
        // scope wait for one slice at most, not for the whole scope.
        let locks = self.locks.table(&table.def.table_id());
        let partition = &table.partitions.rows;
        // The flushed key span, compacted after the cleanup (below).
        let span = match (stored.first(), stored.last()) {
            (Some((first, _)), Some((last, _))) => {
                let mut end = last.to_vec();
                end.push(0); // the smallest key after `last`
                Some((first.to_vec(), end))
            }
            _ => None,
        };
        let mut flushed = stored.into_iter().peekable();
        let mut first = true;
        while let Some((start, _)) = flushed.peek() {
            let start = start.clone();
            let _guard = locks.scope(scope).await;
            let mut batch = WriteBatch::upkeep();
            let mut run: Option<KvPair> = None; // (first key, last key)
            let end_run = |run: &mut Option<KvPair>, batch: &mut WriteBatch| {
                if let Some((first, last)) = run.take() {
                    if first == last {
                        batch.delete(partition, first.into_vec());
                    } else {
                        let mut to = last.into_vec();
                        to.push(0); // the smallest key after `last`
                        batch.delete_range(partition, first.into_vec(), to);
                    }
                }
            };
            let mut taken = 0;
            let mut sliced = false;
            for item in self.backend.scan(partition, &prefix, Some(&start))? {
                let (key, value) = item?;
                if taken >= CLEANUP_SLICE {
                    sliced = true; // the next slice starts at the next flushed key
                    break;
                }
                while flushed.next_if(|(k, _)| *k < key).is_some() {
                    taken += 1;
                }
                let same = flushed.next_if(|(k, v)| *k == key && *v == value).is_some();
                taken += usize::from(same);
                match (&mut run, same) {
                    (Some((_, last)), true) => *last = key,
                    (None, true) => run = Some((key.clone(), key)),
                    (_, false) => end_run(&mut run, &mut batch),
                }
                if flushed.peek().is_none() {
                    break;
                }
            }
            end_run(&mut run, &mut batch);
            if !sliced {
                // The scope ended: flushed keys past its end are gone already.
                flushed.by_ref().for_each(drop);
            }
            if let Some((key, value)) = record.as_ref().filter(|_| first) {
                batch.put(MANIFESTS_PARTITION, key.clone(), value.clone());
            }
            if !batch.is_empty() {
                // A failed first batch leaves this member's cached manifest ahead of its
                // store: harmless (the segment's rows are still hot here, reads merge them),
                // and a timed-out batch may still commit.
                self.write_maintenance(batch).await?;
            }
            first = false;
        }
        // The cleanup left one range deletion per slice over the flushed versions. Until a
        // compaction drops them, every hot scan of the scope walks over the deleted versions
        // (a cold LIMIT 10 or key-range read paid for the whole flushed span: 6.8 ms at 10M
        // rows in 4 segments), so the flushed span is compacted now, off the async runtime.
        // Versions an open snapshot still needs are kept by RocksDB until it is released.
        // Only an optimisation: the flush is complete without it (and a table dropped meanwhile
        // has no partition left), so a failure is logged, not returned.
        if let Some((from, to)) = span {
            let backend = Arc::clone(&self.backend);
            let name = partition.clone();
            let compacted =
                crate::background::run(move || backend.compact_range(&name, &from, &to)).await;
            match compacted {
                Ok(Ok(())) => {}
                Ok(Err(e)) => {
                    tracing::debug!(partition = %partition, error = %e, "compaction after a table flush failed")
                }
                Err(e) => {
                    tracing::debug!(partition = %partition, error = %e, "compaction after a table flush did not run")
                }
            }
        }
        tracing::info!(
            dir = %loc.dir,
            rows = stats.rows,
            bytes = stats.bytes,
            read_ms = timing[0].as_millis() as u64,
            arrow_ms = timing[1].as_millis() as u64,
            parquet_ms = timing[2].as_millis() as u64,
            put_ms = (written - encoded).as_millis() as u64,
            total_ms = started.elapsed().as_millis() as u64,
            "flushed a scope"
        );
        Ok(stats)
    }

    /// Merges every segment of `scope` into one, keeping the latest version of each key and
    /// dropping superseded versions and the tombstones with `_seq` up to
    /// `keep_tombstones_after` (the hot tier only holds newer versions, so nothing older can
    /// resurface; younger tombstones stay for live-query resumes). The new manifest replaces
    /// the old in one atomic put; the old files are deleted after it. Returns the number of
    /// segments before and after.
    pub async fn compact_scope(
        &self,
        table: &Arc<CachedTable>,
        scope: &Scope,
        new_id: i64,
        keep_tombstones_after: i64,
        tiered: Option<usize>,
    ) -> Result<(usize, usize)> {
        let loc = self.cold.locate(&table.def, Some(scope))?;
        let lock = self.cold.folder_lock(&loc);
        let _busy = lock.lock().await;
        // The definition as of now: segments are conformed to it, and no segment can appear
        // while the lock is held, so an ALTER during the merge loses nothing.
        let Some(table) = &current(&self.registry, table)? else {
            return Ok((0, 0));
        };
        self.cold.check_shared(&table.def, &loc)?;
        if !self.leads(table, &scope.prefix()) {
            return Ok((0, 0)); // the leader of the scope's group compacts it
        }
        let manifest = self.cold.manifest(&table.def, &loc).await?;
        let before = manifest.segments.len();
        if before == 0 {
            return Ok((0, 0));
        }
        let start = match tiered {
            None => 0,
            Some(trigger) => {
                let rows: Vec<u64> = manifest.segments.iter().map(|s| s.row_count).collect();
                match tiered_run_start(&rows, trigger) {
                    Some(start) => start,
                    None => return Ok((before, before)),
                }
            }
        };
        // A transaction's snapshot older than a version of the run may still need the versions
        // the merge would drop: the scope waits for a later compaction (see crate::txn).
        if let Some(oldest) = self.oldest_snapshot()
            && manifest.segments[start..]
                .iter()
                .any(|s| s.max_seq > oldest)
        {
            tracing::debug!(table = %table.def.table_id(), "compaction deferred: a transaction snapshot is open");
            return Ok((before, before));
        }
        // Older segments stay: their keys may have been deleted by a tombstone of the run, so
        // a partial merge keeps every tombstone.
        let keep_tombstones_after = if start == 0 {
            keep_tombstones_after
        } else {
            i64::MIN
        };
        let mut sources = Vec::with_capacity(before - start);
        for seg in &manifest.segments[start..] {
            sources.push(self.cold.arrow_segment(table, &loc, seg).await?);
        }
        let droppable = |s: &ScanSource| {
            (s.deleted.iter().zip(&s.seqs)).any(|(d, seq)| *d && *seq <= keep_tombstones_after)
        };
        if before == 1 && !droppable(&sources[0]) {
            // Nothing to merge, but the files of versions the hot tier replaced may be garbage.
            let mut refs = std::collections::HashSet::new();
            crate::files::batch_refs(table, &sources[0].batch, &mut refs);
            drop(sources);
            self.sweep_files(table, scope, refs).await?;
            return Ok((1, 1));
        }
        let mut next = Manifest {
            version: 1,
            table_created_at: table.def.created_at,
            segments: manifest.segments[..start].to_vec(),
        };
        // Merging and encoding are CPU work: the background thread.
        let job = {
            let table = Arc::clone(table);
            let dir = loc.dir.clone();
            move || {
                let id = format!("{new_id:019}");
                merge_segments(&table, &sources, keep_tombstones_after, &dir, id)
            }
        };
        let mut file_ids = std::collections::HashSet::new();
        if let Some((segment, ids)) = crate::background::run(job).await?? {
            next.segments
                .push(loc.files.put_segment(&loc.dir, segment).await?);
            file_ids = ids;
        }
        if !self.leads(table, &scope.prefix())
            || !self.cold.still_current(&table.def, &loc, &manifest).await?
        {
            return Ok((before, before)); // see flush_scope; the new file is a stray
        }
        if let Some((key, value)) = self.cold.commit_manifest(&loc, next.clone()).await? {
            // A cluster: the new manifest reaches every member through the scope's group
            // (failed, this member's cache is ahead of its store; see flush_scope).
            let mut batch = WriteBatch::new();
            batch.put(MANIFESTS_PARTITION, key, value);
            self.write_maintenance(batch).await?;
        }
        // The merged-away files: a reader that took the old manifest a moment ago may still
        // open them, so they go after a grace period (a stop before that leaves strays, which
        // the next process's first flush of the folder removes).
        let superseded: Vec<String> = manifest
            .segments
            .iter()
            .filter(|s| !next.segments.iter().any(|n| n.file == s.file))
            .map(|s| s.file.clone())
            .collect();
        self.cold
            .footers
            .retain(|(d, f), _| *d != loc.key || !superseded.contains(f));
        let grace = self.options.superseded_file_grace_ms;
        if grace == 0 {
            for f in &superseded {
                loc.files.remove_file(&loc.dir, f).await?;
            }
        } else {
            let (files, dir) = (loc.files.clone(), loc.dir.clone());
            let gate = self.file_gate().changing_owned();
            tokio::spawn(async move {
                tokio::time::sleep(std::time::Duration::from_millis(grace)).await;
                // A file change like any other: a backup copying the files goes first.
                let _files = gate.await;
                for f in &superseded {
                    if let Err(e) = files.remove_file(&dir, f).await {
                        tracing::warn!(dir = %dir, file = %f, error = %e, "cannot remove a compacted segment");
                    }
                }
            });
        }
        // After a full merge the new segment holds every kept version the cold tier has.
        if start == 0 {
            self.sweep_files(table, scope, file_ids).await?;
        }
        Ok((before, next.segments.len()))
    }

    /// Deletes the files of `scope` no kept row version refers to; `cold_refs` are the ids
    /// the scope's only segment refers to (after a full compaction). Called under the scope's
    /// folder lock. Returns how many were deleted.
    pub(crate) async fn sweep_files(
        &self,
        table: &Arc<CachedTable>,
        scope: &Scope,
        mut refs: std::collections::HashSet<String>,
    ) -> Result<usize> {
        if self.cold.replicated() {
            // Another member may be storing an upload for a statement it has not committed
            // yet (pending uploads are each node's own): a cluster keeps the files.
            return Ok(0);
        }
        let loc = self.cold.locate(&table.def, Some(scope))?;
        let dir = format!("{}/{}", loc.dir, crate::files::FILE_FOLDER);
        let listed = loc.files.file_names(&dir).await?;
        if listed.is_empty() {
            return Ok(0);
        }
        let pending = self.cold.pending_files.of(&loc.key);
        // Decoding every hot row of the scope is CPU work: the background thread.
        let hot = {
            let (backend, table, prefix) =
                (Arc::clone(&self.backend), Arc::clone(table), scope.prefix());
            crate::background::run(move || -> Result<std::collections::HashSet<String>> {
                let mut ids = std::collections::HashSet::new();
                let snapshot = backend.snapshot();
                for item in snapshot.scan(&table.partitions.rows, &prefix, None)? {
                    let (_, v) = item?;
                    crate::files::row_refs(&table, &crate::rows::StoredRow::decode(&v)?, &mut ids);
                }
                Ok(ids)
            })
            .await??
        };
        refs.extend(hot);
        let doomed = crate::files::unreferenced(listed, &pending, &refs);
        for name in &doomed {
            loc.files.remove_file(&dir, name).await?;
        }
        if !doomed.is_empty() {
            tracing::debug!(dir = %dir, deleted = doomed.len(), "deleted unreferenced files");
        }
        Ok(doomed.len())
    }

    /// Compacts every scope of a table that has segments; returns (segments before, after).
    /// Stops between scopes when `cancel` is set.
    pub async fn compact_table(
        &self,
        table: &Arc<CachedTable>,
        cancel: &CancelFlag,
    ) -> Result<(usize, usize)> {
        let _files = self.file_changes().await;
        let retention_ms = self.options.tombstone_retention_secs.saturating_mul(1000);
        let keep_tombstones_after = kalamdb_catalog::seq::min_seq_at_unix_millis(
            chrono::Utc::now().timestamp_millis()
                - i64::try_from(retention_ms).unwrap_or(i64::MAX / 2),
        );
        let scopes = match table.def.table_type {
            TableType::Shared => vec![Scope::Shared],
            TableType::Stream => Vec::new(),
            _ => self.cold.user_scopes(&table.def).await?,
        };
        let (mut before, mut after) = (0, 0);
        for scope in scopes {
            if cancel.is_set() {
                break;
            }
            let (b, a) = self
                .compact_scope(
                    table,
                    &scope,
                    self.seq.next_id(),
                    keep_tombstones_after,
                    None,
                )
                .await?;
            before += b;
            after += a;
        }
        Ok((before, after))
    }

    /// Flushes every scope of a table that has hot rows; stops between scopes when `cancel`
    /// is set.
    pub async fn flush_table(
        &self,
        table: &Arc<CachedTable>,
        cancel: &CancelFlag,
    ) -> Result<FlushStats> {
        let mut stats = FlushStats::default();
        if table.def.table_type == TableType::Stream {
            return Ok(stats); // STREAM rows expire by TTL; they are never flushed
        }
        let _files = self.file_changes().await;
        for scope in hot_scopes(&*self.backend, table)? {
            if cancel.is_set() {
                break;
            }
            stats += kalamdb_catalog::retry_on_schema_change!(self.flush_scope(table, &scope))?;
            let trigger = self.options.compaction_trigger_segments;
            if trigger >= 2 {
                self.compact_scope(table, &scope, self.seq.next_id(), 0, Some(trigger))
                    .await?;
            }
        }
        Ok(stats)
    }
}

impl TableStore {
    /// Whether this node flushes and compacts `table`'s scope `prefix`: always on one
    /// server; in a cluster, on the leader of the scope's group once it applied what its
    /// predecessors committed (its manifest is then the scope's latest).
    fn leads(&self, table: &CachedTable, prefix: &[u8]) -> bool {
        !self.cold.replicated() || self.backend.leads(&table.partitions.rows, prefix)
    }

    /// Writes a batch of the flush's own (no new rows): ordered under the commit gate, and
    /// waited for after it.
    async fn write_maintenance(&self, batch: WriteBatch) -> Result<()> {
        let pending = {
            let _gate = self.locks.commit_gate().await;
            self.backend.submit(batch)?
        };
        Ok(pending.wait().await?)
    }
}

/// The current definition of `table`'s incarnation; `None` when it was dropped.
fn current(registry: &SchemaRegistry, table: &CachedTable) -> Result<Option<Arc<CachedTable>>> {
    Ok(registry
        .get(&table.def.table_id())?
        .filter(|t| t.def.created_at == table.def.created_at))
}

/// The scopes of a table that have hot rows.
fn hot_scopes(backend: &dyn StorageBackend, table: &CachedTable) -> Result<Vec<Scope>> {
    if table.def.table_type == TableType::Shared {
        return Ok(vec![Scope::Shared]);
    }
    let mut users = Vec::new();
    let mut last: Option<Vec<u8>> = None;
    for item in backend.scan(&table.partitions.rows, b"", None)? {
        let (key, _) = item?;
        let Some(end) = key.iter().position(|b| *b == 0) else {
            continue;
        };
        if last.as_deref() != Some(&key[..end]) {
            let user = String::from_utf8_lossy(&key[..end]).into_owned();
            users.push(Scope::User(kalamdb_commons::UserId::new(user)));
            last = Some(key[..end].to_vec());
        }
    }
    Ok(users)
}
