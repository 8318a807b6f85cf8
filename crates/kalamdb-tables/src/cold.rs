//! The cold tier of USER and SHARED tables: flushing a scope's hot rows into a Parquet segment,
//! and reading rows back so that every reader sees one table across both tiers.
//!
//! **Flush** of one scope (a SHARED table, or one user's partition of a USER table): read the
//! scope's latest versions (tombstones included) from a RocksDB snapshot, write them as one
//! segment sorted by primary key, append the segment to the scope's manifest, and only then
//! delete from RocksDB the versions that are still the ones flushed (a write that raced the
//! flush keeps its newer version hot). A crash before the manifest commit leaves a stray file
//! that nobody reads; a crash after it leaves versions in both tiers with the same `_seq`,
//! which reads resolve to one row and the next flush writes again.
//!
//! **Reads** take the hot snapshot first and the manifest second: a flush commits its
//! manifest before deleting hot versions, so a reader never misses a row that moved. Per key
//! the version with the largest `_seq` wins; a winning tombstone hides the key, including rows
//! in older segments.
//!
//! Scans stream segments (`scan`); key lookups and compactions use decoded
//! segments (Arrow columns with their rows' keys), which are immutable and so cached, bounded
//! in bytes (`[storage] segment_cache_mb`). Manifests and segment footers are cached too:
//! this server is the only writer of its storage, or, on a cluster member, the manifests are
//! records its Raft groups replicate (only a scope's leader flushes it; replicas take each
//! record before the deletions it covers are written: [`ColdTier::replicated_manifest`]).

use crate::rows::{Scope, StoredRow, row_key};
use dashmap::DashMap;
use datafusion::arrow::array::{
    Array, ArrayRef, AsArray, RecordBatch, RecordBatchOptions, new_null_array,
};
use datafusion::arrow::compute::{cast, concat, interleave};
use datafusion::arrow::datatypes::Int64Type;
use datafusion::parquet::arrow::arrow_reader::ArrowReaderMetadata;
use datafusion::scalar::ScalarValue;
use kalamdb_catalog::catalog::{Catalog, StorageRecord};
use kalamdb_catalog::error::{KalamError, Result};
use kalamdb_catalog::partitions::{MANIFESTS_PARTITION, TablePartitions, manifest_key};
use kalamdb_catalog::schema_registry::CachedTable;
use kalamdb_catalog::value::coerce;
use kalamdb_commons::schema::{DELETED_COLUMN, SEQ_COLUMN};
use kalamdb_commons::{TableDefinition, TableType};
use kalamdb_filestore::{COLUMN_ID_KEY, EncodedSegment, FileStore, Manifest, SegmentInfo};
use kalamdb_store::{KvPair, StorageBackend, StorageRead};
use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

/// When a table's hot rows are flushed: after `rows` rows written, or `interval_secs` after
/// the first unflushed write, whichever comes first.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FlushPolicy {
    /// Rows written since the last flush.
    pub rows: Option<u64>,
    /// Seconds since the first write after the last flush.
    pub interval_secs: Option<u64>,
}

impl FlushPolicy {
    /// Parses `rows:N`, `interval:S` or both, comma-separated.
    pub fn parse(text: &str) -> Result<Self> {
        let bad = || {
            KalamError::InvalidSql(format!(
                "Invalid FLUSH_POLICY '{text}': use 'rows:N', 'interval:S' or 'rows:N,interval:S'"
            ))
        };
        let mut policy = Self {
            rows: None,
            interval_secs: None,
        };
        for part in text.split(',') {
            let (k, v) = part.trim().split_once(':').ok_or_else(bad)?;
            let n: u64 = v.trim().parse().map_err(|_| bad())?;
            match k.trim().to_ascii_lowercase().as_str() {
                // Upstream's limits.
                "rows" if (1..=999_999).contains(&n) => policy.rows = Some(n),
                "interval" if (1..=86_399).contains(&n) => policy.interval_secs = Some(n),
                _ => return Err(bad()),
            }
        }
        Ok(policy)
    }

    /// Whether a table with `rows` unflushed rows, the oldest written `age` ago, is due.
    pub fn due(&self, rows: u64, age: std::time::Duration) -> bool {
        rows > 0
            && (self.rows.is_some_and(|n| rows >= n)
                || self.interval_secs.is_some_and(|s| age.as_secs() >= s))
    }
}

const COLD_UNKNOWN: u8 = 0;
const COLD_NO: u8 = 1;
pub(crate) const COLD_YES: u8 = 2;

/// Decoded segments by (folder key, segment id, schema version), weighed in bytes.
type SegmentCache = quick_cache::sync::Cache<(String, String, u32), Arc<ScanSource>, SourceWeight>;

/// Weighs a decoded segment by the bytes it holds.
#[derive(Debug, Clone)]
struct SourceWeight;

impl quick_cache::Weighter<(String, String, u32), Arc<ScanSource>> for SourceWeight {
    fn weight(&self, _key: &(String, String, u32), src: &Arc<ScanSource>) -> u64 {
        let keys: usize = src.keys.iter().map(|k| k.len() + 24).sum();
        (src.batch.get_array_memory_size() + keys + src.seqs.len() * 9) as u64
    }
}

/// What the segment cache holds and how it serves (see [`ColdTier::segment_cache`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SegmentCacheStats {
    /// Bytes of decoded segments held.
    pub bytes: u64,
    /// The bound in bytes.
    pub capacity: u64,
    /// Segments held.
    pub segments: usize,
    /// Reads served from the cache.
    pub hits: u64,
    /// Reads that decoded a segment.
    pub misses: u64,
}

/// One source of a merged scan: rows in primary-key order as Arrow columns of the table's
/// schema, with each row's key and `_seq`.
#[derive(Debug)]
pub(crate) struct ScanSource {
    pub(crate) batch: RecordBatch,
    keys: Vec<Vec<u8>>,
    pub(crate) seqs: Vec<i64>,
    pub(crate) deleted: Vec<bool>,
}

/// What one flush wrote.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct FlushStats {
    /// Row versions written (tombstones included).
    pub rows: u64,
    /// Bytes of Parquet written.
    pub bytes: u64,
    /// Segments written (one per non-empty scope).
    pub segments: u64,
    /// Scopes left to the cluster members that lead their groups (they flush them).
    pub elsewhere: u64,
}

impl FlushStats {
    /// A scope another member flushes.
    pub(crate) fn elsewhere() -> Self {
        Self {
            elsewhere: 1,
            ..Self::default()
        }
    }
}

impl std::ops::AddAssign for FlushStats {
    fn add_assign(&mut self, o: Self) {
        self.rows += o.rows;
        self.bytes += o.bytes;
        self.segments += o.segments;
        self.elsewhere += o.elsewhere;
    }
}

/// The cold tier: every storage of `system.storages` this server can open (filesystem today).
#[derive(Debug)]
pub struct ColdTier {
    catalog: Catalog,
    /// Base of storages with a relative `base_directory` (the data path).
    root: PathBuf,
    placements: DashMap<String, Arc<Placement>>,
    pub(crate) manifests: DashMap<String, Arc<ScopeManifest>>,
    /// Whose each manifest key is: (namespace, table, scope), for `system.manifest`.
    owners: DashMap<String, ManifestOwner>,
    /// Scope folders (and table incarnations) whose stray files this process removed already.
    pub(crate) swept: dashmap::DashSet<String>,
    /// Segments as Arrow, conformed to a schema version, for key lookups and compactions:
    /// bounded in bytes, least recently used out first (scans stream and never fill it).
    arrow_segments: SegmentCache,
    cache_hits: AtomicU64,
    cache_misses: AtomicU64,
    /// One flush at a time per scope folder.
    flush_locks: DashMap<String, Arc<tokio::sync::Mutex<()>>>,
    /// Segment footers (row groups and their statistics) by (folder key, file): small, and
    /// what every streaming read of a segment starts from.
    pub(crate) footers: DashMap<(String, String), ArrowReaderMetadata>,
    /// Uploaded files whose statement has not finished (see [`crate::files`]).
    pub(crate) pending_files: crate::files::PendingFiles,
    /// A cluster member's store, where manifests are records committed through the Raft
    /// groups of their rows (docs/cluster.md §7); `None` on one server, whose manifests live
    /// beside their segments.
    replicated: Option<Arc<dyn StorageBackend>>,
}

/// The segments of one scope as a scan finds them: where they are and their key ranges.
#[derive(Debug)]
pub struct ScopeSegments {
    /// The storage holding them.
    pub files: FileStore,
    /// Their folder.
    pub dir: String,
    /// The folder's cache key.
    pub key: String,
    manifest: Arc<ScopeManifest>,
}

impl ScopeSegments {
    /// The segments, oldest first.
    pub fn segments(&self) -> &[kalamdb_filestore::SegmentMeta] {
        &self.manifest.segments
    }

    /// `(min_key, max_key)` of each segment.
    pub fn key_ranges(&self) -> &[(Vec<u8>, Vec<u8>)] {
        &self.manifest.key_ranges
    }
}

/// Whose a scope folder is.
#[derive(Debug, Clone)]
pub struct ManifestOwner {
    /// Namespace of the table.
    pub namespace: String,
    /// The table.
    pub table: String,
    /// `shared`, or the user id of a USER table's partition.
    pub scope: String,
}

/// A manifest held in memory ([`ColdTier::cached_manifests`]).
#[derive(Debug, Clone)]
pub struct CachedManifest {
    /// Its cache key: storage id and folder.
    pub key: String,
    /// Whose it is.
    pub owner: ManifestOwner,
    /// Its contents.
    pub manifest: Manifest,
}

/// A scope's manifest, with its segments' key ranges decoded once.
#[derive(Debug)]
pub(crate) struct ScopeManifest {
    pub(crate) manifest: Manifest,
    /// `(min_key, max_key)` of each segment, in manifest order.
    key_ranges: Vec<(Vec<u8>, Vec<u8>)>,
}

impl ScopeManifest {
    pub(crate) fn new(manifest: Manifest) -> Arc<Self> {
        let key_ranges = manifest
            .segments
            .iter()
            .map(|s| (unhex(&s.min_key), unhex(&s.max_key)))
            .collect();
        Arc::new(Self {
            manifest,
            key_ranges,
        })
    }
}

impl std::ops::Deref for ScopeManifest {
    type Target = Manifest;
    fn deref(&self) -> &Manifest {
        &self.manifest
    }
}

/// One storage: its files and how it names folders.
#[derive(Debug)]
struct Placement {
    id: String,
    files: FileStore,
    shared_template: String,
    user_template: String,
    /// Whether every member of a cluster reads the same files: an object store, or a folder
    /// at an absolute path (a shared mount). A relative folder is under each node's own data
    /// path.
    shared: bool,
}

impl Placement {
    fn of(record: &StorageRecord, root: &Path) -> Result<Self> {
        let files = kalamdb_catalog::storages::open(record, root)?;
        Ok(Self {
            id: record.storage_id.clone(),
            shared: record.storage_type != "filesystem"
                || Path::new(&record.base_directory).is_absolute(),
            files,
            shared_template: record.shared_tables_template.clone(),
            user_template: record.user_tables_template.clone(),
        })
    }

    /// The folder of `scope` of `def` by the storage's templates; `None`: the table's folder
    /// (a USER table's user template up to its `{userId}` part).
    fn dir(&self, def: &TableDefinition, scope: Option<&Scope>) -> String {
        let fill = |t: &str| {
            t.replace("{namespace}", def.namespace.as_str())
                .replace("{tableName}", def.name.as_str())
        };
        match (def.table_type, scope) {
            (TableType::Shared, _) | (_, Some(Scope::Shared)) => fill(&self.shared_template),
            (_, Some(Scope::User(u))) => fill(&self.user_template).replace("{userId}", u.as_str()),
            (_, None) => {
                let t = fill(&self.user_template);
                let cut = t.rfind('/').unwrap_or(0);
                t[..cut].to_string()
            }
        }
    }

    /// The user whose folder is `name`, a folder of a USER table's folder (the last segment
    /// of the user template, `{userId}` with what surrounds it).
    fn user_of(&self, name: &str) -> Option<String> {
        let last = self.user_template.rsplit('/').next()?;
        let (before, after) = last.split_once("{userId}")?;
        let user = name.strip_prefix(before)?.strip_suffix(after)?;
        (!user.is_empty()).then(|| user.to_string())
    }
}

/// One scope's (or table's) folder on its storage; `key` names it in caches.
#[derive(Debug, Clone)]
pub(crate) struct Location {
    pub(crate) files: FileStore,
    pub(crate) dir: String,
    pub(crate) key: String,
    /// The key of the scope's manifest record in a cluster ([`MANIFESTS_PARTITION`]); `None`
    /// for a table's own folder.
    record: Option<Vec<u8>>,
    /// Whether every member reads the storage's files (see `Placement::shared`).
    shared: bool,
}

impl ColdTier {
    /// The cold tier over the storages of `catalog`; relative base directories are taken
    /// from `root` (the data path).
    /// Decoded segments are cached up to `segment_cache_bytes`.
    /// `replicated`: a cluster member's store, which keeps the manifests (see the field).
    pub fn open(
        catalog: Catalog,
        root: &Path,
        segment_cache_bytes: u64,
        replicated: Option<Arc<dyn StorageBackend>>,
    ) -> Result<Self> {
        // One shard: a whole segment may weigh a large part of the bound.
        let options = quick_cache::OptionsBuilder::new()
            .estimated_items_capacity(256)
            .weight_capacity(segment_cache_bytes)
            .shards(1)
            .build()
            .map_err(|e| KalamError::Internal(format!("segment cache: {e:?}")))?;
        Ok(Self {
            catalog,
            root: root.to_path_buf(),
            placements: DashMap::new(),
            manifests: DashMap::new(),
            owners: DashMap::new(),
            swept: dashmap::DashSet::new(),
            arrow_segments: SegmentCache::with_options(
                options,
                SourceWeight,
                Default::default(),
                Default::default(),
            ),
            cache_hits: AtomicU64::new(0),
            cache_misses: AtomicU64::new(0),
            flush_locks: DashMap::new(),
            footers: DashMap::new(),
            pending_files: Default::default(),
            replicated,
        })
    }

    /// Whether manifests are replicated records (a cluster member).
    pub(crate) fn replicated(&self) -> bool {
        self.replicated.is_some()
    }

    fn placement(&self, storage_id: &str) -> Result<Arc<Placement>> {
        if let Some(p) = self.placements.get(storage_id) {
            return Ok(Arc::clone(p.value()));
        }
        let record = self
            .catalog
            .storage(storage_id)?
            .ok_or_else(|| KalamError::NotFound {
                kind: "Storage",
                name: storage_id.to_string(),
            })?;
        let placement = Arc::new(Placement::of(&record, &self.root)?);
        self.placements
            .insert(storage_id.to_string(), Arc::clone(&placement));
        Ok(placement)
    }

    /// Probes storage `storage_id` (see [`FileStore::probe`]).
    pub async fn probe(&self, storage_id: &str, name: &str) -> Result<kalamdb_filestore::Probe> {
        Ok(self.placement(storage_id)?.files.probe(name).await)
    }

    /// The files of storage `storage_id`.
    pub fn files(&self, storage_id: &str) -> Result<FileStore> {
        Ok(self.placement(storage_id)?.files.clone())
    }

    /// Forgets what was opened of a storage (dropped or changed).
    pub fn forget_storage(&self, storage_id: &str) {
        self.placements.remove(storage_id);
    }

    /// Where `scope` of `def` keeps its files; `None` for the table's own folder.
    /// The lock one flush or compaction of `loc`'s folder holds at a time.
    pub(crate) fn folder_lock(&self, loc: &Location) -> Arc<tokio::sync::Mutex<()>> {
        Arc::clone(self.flush_locks.entry(loc.key.clone()).or_default().value())
    }

    pub(crate) fn locate(&self, def: &TableDefinition, scope: Option<&Scope>) -> Result<Location> {
        let p = self.placement(def.storage_id.as_str())?;
        let dir = p.dir(def, scope);
        let key = format!("{}:{dir}", p.id);
        let record = match (def.table_type, scope) {
            _ if !self.replicated() => None,
            (TableType::Shared, _) => Some(Vec::new()),
            (_, Some(s)) => Some(s.prefix()),
            (_, None) => None,
        }
        .map(|prefix| manifest_key(&TablePartitions::of(def).rows, &prefix));
        let scope = match (def.table_type, scope) {
            (TableType::Shared, _) | (_, Some(Scope::Shared)) => Some("shared"),
            (_, Some(Scope::User(u))) => Some(u.as_str()),
            (_, None) => None,
        };
        if let Some(scope) = scope
            && !self.owners.contains_key(&key)
        {
            let owner = ManifestOwner {
                namespace: def.namespace.to_string(),
                table: def.name.to_string(),
                scope: scope.to_string(),
            };
            self.owners.insert(key.clone(), owner);
        }
        Ok(Location {
            files: p.files.clone(),
            key,
            dir,
            record,
            shared: p.shared,
        })
    }

    /// Writes an uploaded file of a FILE column into the `sub` folder of `scope`'s folder
    /// (beside the segments, out of reach of the stray-segment sweep, which only looks at the
    /// folder's own files). The file sweep leaves it alone while the returned guard lives: hold
    /// it until the statement that refers to the file has committed or failed.
    pub async fn put_file(
        &self,
        def: &TableDefinition,
        scope: &Scope,
        sub: &str,
        name: &str,
        bytes: Vec<u8>,
    ) -> Result<crate::files::PendingFile> {
        let loc = self.locate(def, Some(scope))?;
        // Pending before it exists: a sweep that lists it then sees it pending.
        let pending = self.pending_files.hold(&loc.key, name);
        loc.files
            .put_file(&format!("{}/{sub}", loc.dir), name, bytes)
            .await?;
        Ok(pending)
    }

    /// An uploaded file of `scope`; `None` when there is none by that name.
    pub async fn get_file(
        &self,
        def: &TableDefinition,
        scope: &Scope,
        sub: &str,
        name: &str,
    ) -> Result<Option<Vec<u8>>> {
        let loc = self.locate(def, Some(scope))?;
        Ok(loc
            .files
            .get_file(&format!("{}/{sub}", loc.dir), name)
            .await?)
    }

    /// Deletes an uploaded file of `scope` (absent is fine).
    pub async fn delete_file(
        &self,
        def: &TableDefinition,
        scope: &Scope,
        sub: &str,
        name: &str,
    ) -> Result<()> {
        let loc = self.locate(def, Some(scope))?;
        Ok(loc
            .files
            .remove_file(&format!("{}/{sub}", loc.dir), name)
            .await?)
    }

    /// The users of a USER table that have a folder on its storage.
    pub(crate) async fn user_scopes(&self, def: &TableDefinition) -> Result<Vec<Scope>> {
        let p = self.placement(def.storage_id.as_str())?;
        let dir = p.dir(def, None);
        Ok(p.files
            .child_dirs(&dir)
            .await?
            .into_iter()
            .filter_map(|name| p.user_of(&name))
            .map(|u| Scope::User(kalamdb_commons::UserId::new(u)))
            .collect())
    }

    /// The manifests held in memory (read or written since start), with whose they are.
    pub fn cached_manifests(&self) -> Vec<CachedManifest> {
        self.manifests
            .iter()
            .filter_map(|m| {
                let owner = self.owners.get(m.key())?.clone();
                Some(CachedManifest {
                    key: m.key().clone(),
                    owner,
                    manifest: m.value().manifest.clone(),
                })
            })
            .collect()
    }

    /// The manifest at `loc` as far as the current incarnation of `def` is concerned: one
    /// left by a dropped table of the same name (a flush that raced the DROP) reads as empty,
    /// and the next flush removes its files as strays.
    pub(crate) async fn manifest(
        &self,
        def: &TableDefinition,
        loc: &Location,
    ) -> Result<Arc<ScopeManifest>> {
        let m = match self.manifests.get(&loc.key) {
            Some(m) => Arc::clone(m.value()),
            None => {
                let read = match (&self.replicated, &loc.record) {
                    (Some(store), Some(_)) if !store.has_partition(MANIFESTS_PARTITION) => {
                        Manifest::default() // nothing flushed in this cluster yet
                    }
                    (Some(store), Some(key)) => match store.get(MANIFESTS_PARTITION, key)? {
                        Some(bytes) => decode_manifest(&bytes)?,
                        None => Manifest::default(),
                    },
                    _ => loc.files.manifest(&loc.dir).await?,
                };
                // A manifest the applier installed meanwhile is newer than what was read.
                let entry = self.manifests.entry(loc.key.clone());
                Arc::clone(entry.or_insert(ScopeManifest::new(read)).value())
            }
        };
        Ok(if m.table_created_at == def.created_at {
            m
        } else {
            ScopeManifest::new(Manifest::default())
        })
    }

    /// The flushed segments of `scope` (none for STREAM tables), from its manifest.
    pub async fn segments(&self, table: &CachedTable, scope: &Scope) -> Result<ScopeSegments> {
        let loc = self.locate(&table.def, Some(scope))?;
        let manifest = self.manifest(&table.def, &loc).await?;
        Ok(ScopeSegments {
            files: loc.files,
            dir: loc.dir,
            key: loc.key,
            manifest,
        })
    }

    /// The footer of a segment of `scope`, read once and cached.
    pub async fn footer(
        &self,
        scope: &ScopeSegments,
        seg: &kalamdb_filestore::SegmentMeta,
    ) -> Result<ArrowReaderMetadata> {
        let key = (scope.key.clone(), seg.file.clone());
        if let Some(m) = self.footers.get(&key) {
            return Ok(m.value().clone());
        }
        let m = scope.files.segment_metadata(&scope.dir, seg).await?;
        self.footers.insert(key, m.clone());
        Ok(m)
    }

    /// The segment cache's figures.
    pub fn segment_cache(&self) -> SegmentCacheStats {
        SegmentCacheStats {
            bytes: self.arrow_segments.weight(),
            capacity: self.arrow_segments.capacity(),
            segments: self.arrow_segments.len(),
            hits: self.cache_hits.load(Ordering::Relaxed),
            misses: self.cache_misses.load(Ordering::Relaxed),
        }
    }

    pub(crate) async fn arrow_segment(
        &self,
        table: &CachedTable,
        loc: &Location,
        seg: &kalamdb_filestore::SegmentMeta,
    ) -> Result<Arc<ScanSource>> {
        let key = (loc.key.clone(), seg.id.clone(), table.def.version);
        if let Some(src) = self.arrow_segments.get(&key) {
            self.cache_hits.fetch_add(1, Ordering::Relaxed);
            return Ok(src);
        }
        self.cache_misses.fetch_add(1, Ordering::Relaxed);
        let batches = loc.files.read_segment(&loc.dir, seg).await?;
        let batch = conform(table, &batches)?;
        let src = Arc::new(ScanSource::of_batch(table, batch)?);
        self.arrow_segments.insert(key, Arc::clone(&src));
        Ok(src)
    }

    /// Whether `table` may have flushed segments. Known per cached table after one listing of
    /// its folder; a flush marks it before it commits a manifest, and before its cleanup takes
    /// the scope's write lock, so a writer that saw "no" under that lock still finds the rows
    /// in the hot tier. Lets key lookups on never-flushed tables skip the cold tier entirely.
    pub async fn may_have_segments(&self, table: &CachedTable) -> Result<bool> {
        match table.cold_state.load(Ordering::SeqCst) {
            COLD_NO => return Ok(false),
            COLD_YES => return Ok(true),
            _ => {}
        }
        let loc = self.locate(&table.def, None)?;
        let any = loc.files.has_any(&loc.dir).await?;
        // A flush may have marked it meanwhile: only move away from "unknown".
        let _ = table.cold_state.compare_exchange(
            COLD_UNKNOWN,
            if any { COLD_YES } else { COLD_NO },
            Ordering::SeqCst,
            Ordering::SeqCst,
        );
        Ok(any || table.cold_state.load(Ordering::SeqCst) == COLD_YES)
    }

    /// The latest version of each primary key in `scope`, a tombstone included: the hot one
    /// (read through `hot`) when there is one, else the newest flushed one (with `max_seq`,
    /// the newest flushed up to it: a transaction's snapshot). Tables that never flushed are
    /// answered from the hot tier alone.
    pub async fn current_versions(
        &self,
        hot: &(dyn StorageRead + Sync),
        table: &CachedTable,
        scope: &Scope,
        pks: &[Vec<u8>],
        max_seq: Option<i64>,
    ) -> Result<Vec<Option<StoredRow>>> {
        let prefix = scope.prefix();
        let keys: Vec<Vec<u8>> = pks.iter().map(|pk| row_key(&prefix, pk)).collect();
        let mut out = Vec::with_capacity(pks.len());
        let mut missing = Vec::new();
        for (i, found) in hot
            .multi_get(&table.partitions.rows, &keys)?
            .into_iter()
            .enumerate()
        {
            out.push(match found {
                Some(bytes) => {
                    let mut row = StoredRow::decode(&bytes)?;
                    table.backfill(row.seq, &mut row.cells);
                    Some(row)
                }
                None => {
                    missing.push(i);
                    None
                }
            });
        }
        if !missing.is_empty() && self.may_have_segments(table).await? {
            let want: Vec<Vec<u8>> = missing.iter().map(|&i| pks[i].clone()).collect();
            let cold = self.lookup(table, scope, &want, max_seq).await?;
            for (i, row) in missing.into_iter().zip(cold) {
                out[i] = row;
            }
        }
        Ok(out)
    }

    /// The latest cold version of each of `keys` in `scope` (up to `max_seq` when given);
    /// segments whose key range misses a key are not read for it.
    pub async fn lookup(
        &self,
        table: &CachedTable,
        scope: &Scope,
        keys: &[Vec<u8>],
        max_seq: Option<i64>,
    ) -> Result<Vec<Option<StoredRow>>> {
        let loc = self.locate(&table.def, Some(scope))?;
        let manifest = self.manifest(&table.def, &loc).await?;
        let mut out: Vec<Option<StoredRow>> = vec![None; keys.len()];
        if manifest.segments.is_empty() {
            return Ok(out);
        }
        // Keys in order, so each segment finds the ones inside its key range by two binary
        // searches (flushed tables can have many segments; most miss every key).
        let mut order: Vec<usize> = (0..keys.len()).collect();
        order.sort_by(|a, b| keys[*a].cmp(&keys[*b]));
        for (seg, (lo, hi)) in manifest.segments.iter().zip(&manifest.key_ranges) {
            let from = order.partition_point(|&i| keys[i] < *lo);
            let to = order.partition_point(|&i| keys[i] <= *hi);
            if from == to || max_seq.is_some_and(|m| seg.min_seq > m) {
                continue;
            }
            let src = self.arrow_segment(table, &loc, seg).await?;
            for &i in &order[from..to] {
                if let Ok(at) = src.keys.binary_search(&keys[i])
                    && max_seq.is_none_or(|m| src.seqs[at] <= m)
                    && out[i].as_ref().is_none_or(|old| old.seq < src.seqs[at])
                {
                    out[i] = Some(src.row(table, at)?);
                }
            }
        }
        Ok(out)
    }

    /// Removes every file of a dropped table and forgets what was cached of it.
    pub async fn drop_table(&self, def: &TableDefinition) -> Result<()> {
        let loc = match self.locate(def, None) {
            Ok(loc) => loc,
            // Its storage is gone: this server can reach no file of it.
            Err(KalamError::NotFound {
                kind: "Storage", ..
            }) => return Ok(()),
            Err(e) => return Err(e),
        };
        let inside = |d: &str| d == loc.key || d.starts_with(&format!("{}/", loc.key));
        self.manifests.retain(|d, _| !inside(d));
        self.owners.retain(|d, _| !inside(d));
        self.arrow_segments.retain(|(d, _, _), _| !inside(d));
        self.footers.retain(|(d, _), _| !inside(d));
        loc.files.remove_all(&loc.dir).await?;
        Ok(())
    }

    /// A table on `def`'s storage whose folder would equal or contain `def`'s, or sit inside
    /// it (folder templates such as `{namespace}_{tableName}` can map two tables to one
    /// folder): its id and folder. STREAM tables keep no files.
    pub fn folder_clash(
        &self,
        def: &TableDefinition,
        tables: &[TableDefinition],
    ) -> Result<Option<(kalamdb_commons::TableId, String)>> {
        if def.table_type == TableType::Stream {
            return Ok(None);
        }
        let placement = self.placement(def.storage_id.as_str())?;
        let mine = placement.dir(def, None);
        let inside = |a: &str, b: &str| a == b || a.starts_with(&format!("{b}/"));
        Ok(tables
            .iter()
            .filter(|o| o.storage_id == def.storage_id && o.table_type != TableType::Stream)
            .filter(|o| o.table_id() != def.table_id())
            .map(|o| (o.table_id(), placement.dir(o, None)))
            .find(|(_, theirs)| inside(&mine, theirs) || inside(theirs, &mine)))
    }

    /// Removes one scope's flushed files and manifest (a purged user's partition).
    pub async fn drop_scope(&self, def: &TableDefinition, scope: &Scope) -> Result<()> {
        let loc = self.locate(def, Some(scope))?;
        let lock = Arc::clone(self.flush_locks.entry(loc.key.clone()).or_default().value());
        let _flushing = lock.lock().await;
        self.forget_folder(&loc);
        loc.files.remove_all(&loc.dir).await?;
        Ok(())
    }

    /// Forgets what is cached of `loc`'s folder.
    fn forget_folder(&self, loc: &Location) {
        self.manifests.remove(&loc.key);
        self.owners.remove(&loc.key);
        self.arrow_segments.retain(|(d, _, _), _| *d != loc.key);
        self.footers.retain(|(d, _), _| *d != loc.key);
    }

    /// The key of `scope`'s manifest record on a cluster member (`None` on one server).
    pub(crate) fn record_key(
        &self,
        def: &TableDefinition,
        scope: &Scope,
    ) -> Result<Option<Vec<u8>>> {
        Ok(self.locate(def, Some(scope))?.record)
    }

    /// Refuses to flush or compact `loc` on a cluster member when the other members cannot
    /// read its files (a storage under each node's own data path).
    pub(crate) fn check_shared(&self, def: &TableDefinition, loc: &Location) -> Result<()> {
        if self.replicated() && !loc.shared {
            return Err(KalamError::Unsupported(format!(
                "{} is stored on '{}', a folder inside each node's own data path, which the \
                 other cluster members cannot read: in a cluster, flush and compact tables on \
                 an S3 storage or a filesystem storage at an absolute path every member \
                 mounts (its rows stay in the hot tier meanwhile)",
                def.table_id(),
                def.storage_id
            )));
        }
        Ok(())
    }

    /// Commits `next` as `loc`'s manifest: its `manifest.json` (on one server the manifest
    /// itself; in a cluster a copy for tools and restores, which may run ahead of the record)
    /// and the cache. In a cluster it returns the record to write with the batch that makes
    /// the change visible (the caller's), through the scope's Raft group.
    pub(crate) async fn commit_manifest(
        &self,
        loc: &Location,
        next: Manifest,
    ) -> Result<Option<ManifestRecord>> {
        loc.files.commit(&loc.dir, &next).await?;
        let record = match (&self.replicated, &loc.record) {
            (Some(_), Some(key)) => Some((key.clone(), encode_manifest(&next)?)),
            _ => None,
        };
        self.manifests
            .insert(loc.key.clone(), ScopeManifest::new(next));
        Ok(record)
    }

    /// Whether `loc`'s manifest is still `base` (read at the start of a flush or compaction
    /// under the folder's lock): in a cluster, a member that lost and regained its group's
    /// leadership meanwhile may have applied another member's manifest record, which a record
    /// built on `base` would overwrite. Always true on one server.
    pub(crate) async fn still_current(
        &self,
        def: &TableDefinition,
        loc: &Location,
        base: &ScopeManifest,
    ) -> Result<bool> {
        Ok(!self.replicated() || self.manifest(def, loc).await?.manifest == base.manifest)
    }

    /// How old a file no manifest names must be before a flush's sweep removes it: on one
    /// server any (this process is the only writer); in a cluster, older than any flush a
    /// member that lost its leadership without knowing yet may still be finishing.
    pub(crate) fn stray_age(&self) -> Option<std::time::Duration> {
        self.replicated()
            .then_some(std::time::Duration::from_secs(STRAY_AGE_SECS))
    }

    /// A manifest record another member committed, about to be written here (`before`) or
    /// just written (a snapshot install): the cache takes it before readers can see the hot
    /// rows it moved, and the table is known to have segments. `None`: the record is deleted
    /// (a purged user's scope), and what is cached of the folder goes.
    pub(crate) fn replicated_manifest(
        &self,
        table: &CachedTable,
        scope: &Scope,
        bytes: Option<&[u8]>,
    ) {
        let Ok(loc) = self.locate(&table.def, Some(scope)) else {
            return;
        };
        let Some(bytes) = bytes else {
            self.forget_folder(&loc);
            return;
        };
        match decode_manifest(bytes) {
            Ok(manifest) => {
                self.manifests
                    .insert(loc.key.clone(), ScopeManifest::new(manifest));
                table.cold_state.store(COLD_YES, Ordering::SeqCst);
            }
            Err(e) => {
                tracing::warn!(dir = %loc.dir, error = %e, "an unreadable replicated manifest");
                self.manifests.remove(&loc.key);
            }
        }
    }
}

/// A cluster's stray files are removed once this old ([`ColdTier::stray_age`]).
const STRAY_AGE_SECS: u64 = 3600;

/// A manifest record to write: its key in [`MANIFESTS_PARTITION`] and the manifest's JSON.
pub(crate) type ManifestRecord = (Vec<u8>, Vec<u8>);

fn encode_manifest(m: &Manifest) -> Result<Vec<u8>> {
    serde_json::to_vec(m).map_err(|e| KalamError::Internal(format!("encoding a manifest: {e}")))
}

fn decode_manifest(bytes: &[u8]) -> Result<Manifest> {
    serde_json::from_slice(bytes)
        .map_err(|e| KalamError::Internal(format!("a manifest record does not decode: {e}")))
}

/// The latest live version of each key across `sources`, encoded as one segment named `id`,
/// with the ids of the files its FILE columns refer to; `None` when no live row is left.
pub(crate) fn merge_segments(
    table: &CachedTable,
    sources: &[Arc<ScanSource>],
    keep_tombstones_after: i64,
    dir: &str,
    id: String,
) -> Result<Option<(EncodedSegment, HashSet<String>)>> {
    let picks = merge_sources(sources, Some(keep_tombstones_after));
    let (Some(&(fs, fr)), Some(&(ls, lr))) = (picks.first(), picks.last()) else {
        return Ok(None);
    };
    let columns = (0..table.schema.fields().len())
        .map(|c| {
            let arrays: Vec<&dyn Array> =
                sources.iter().map(|s| s.batch.column(c).as_ref()).collect();
            interleave(&arrays, &picks).map_err(internal)
        })
        .collect::<Result<Vec<_>>>()?;
    let batch = RecordBatch::try_new(Arc::clone(&table.schema), columns).map_err(internal)?;
    let mut file_ids = HashSet::new();
    crate::files::batch_refs(table, &batch, &mut file_ids);
    let batch = with_column_ids(table, batch)?;
    let seqs = picks.iter().map(|&(s, r)| sources[s].seqs[r]);
    let info = SegmentInfo {
        id,
        min_seq: seqs.clone().min().unwrap_or(0),
        max_seq: seqs.max().unwrap_or(0),
        min_key: hex(&sources[fs].keys[fr]),
        max_key: hex(&sources[ls].keys[lr]),
        schema_version: table.def.version,
    };
    let segment = kalamdb_filestore::encode_segment(dir, &[batch], info)?;
    Ok(Some((segment, file_ids)))
}

/// What [`encode_scope`] made: the flushed entries as stored (full key, raw value), the
/// segment, and the time taken to read, to build Arrow, and to encode Parquet.
type EncodedScope = (Vec<KvPair>, EncodedSegment, [std::time::Duration; 3]);

/// Reads the hot entries of one scope from a snapshot and encodes them as a segment named
/// `id`; `None` when the scope holds nothing.
pub(crate) fn encode_scope(
    backend: &dyn StorageBackend,
    table: &CachedTable,
    prefix: &[u8],
    dir: &str,
    id: String,
) -> Result<Option<EncodedScope>> {
    let started = std::time::Instant::now();
    let mut stored: Vec<KvPair> = Vec::new();
    // Rows become Arrow a batch at a time: decoded rows never pile up for the whole scope.
    let mut chunk: Vec<StoredRow> = Vec::with_capacity(crate::rows::BATCH_ROWS);
    let mut batches = Vec::new();
    let (mut min_seq, mut max_seq) = (i64::MAX, i64::MIN);
    let mut arrow = std::time::Duration::ZERO;
    let mut to_arrow = |chunk: &mut Vec<StoredRow>| -> Result<()> {
        let t = std::time::Instant::now();
        for b in crate::rows::build_batches(table, chunk, None)?.1 {
            batches.push(with_column_ids(table, b)?);
        }
        chunk.clear();
        arrow += t.elapsed();
        Ok(())
    };
    {
        let snapshot = backend.snapshot();
        for item in snapshot.scan(&table.partitions.rows, prefix, None)? {
            let (k, v) = item?;
            let mut row = StoredRow::decode(&v)?;
            table.backfill(row.seq, &mut row.cells);
            (min_seq, max_seq) = (min_seq.min(row.seq), max_seq.max(row.seq));
            chunk.push(row);
            stored.push((k, v));
            if chunk.len() == crate::rows::BATCH_ROWS {
                to_arrow(&mut chunk)?;
            }
        }
    }
    to_arrow(&mut chunk)?;
    let Some(((min_key, _), (max_key, _))) = stored.first().zip(stored.last()) else {
        return Ok(None);
    };
    let built = started.elapsed();
    let info = SegmentInfo {
        id,
        min_seq,
        max_seq,
        min_key: hex(&min_key[prefix.len()..]),
        max_key: hex(&max_key[prefix.len()..]),
        schema_version: table.def.version,
    };
    let segment = kalamdb_filestore::encode_segment(dir, &batches, info)?;
    let timing = [built - arrow, arrow, started.elapsed() - built];
    Ok(Some((stored, segment, timing)))
}

/// Where the run of segments a tiered compaction merges starts, given each segment's rows
/// (oldest first); `None` while there are at most `trigger` segments. The run is the newest
/// `trigger` segments, less any at its old end bigger than all newer ones of the run together
/// (an earlier merge's output, which would otherwise be rewritten again and again), so
/// segments of similar size merge and each row is rewritten about log(rows) times.
pub(crate) fn tiered_run_start(rows: &[u64], trigger: usize) -> Option<usize> {
    if trigger < 2 || rows.len() <= trigger {
        return None;
    }
    let mut start = rows.len() - trigger;
    while start + 1 < rows.len() && rows[start] > rows[start + 1..].iter().sum::<u64>() {
        start += 1;
    }
    (rows.len() - start >= 2).then_some(start)
}

/// A segment's column as `to` (a type widened by ALTER TABLE; UUIDs that segments written
/// before they were stored as text hold as 16 bytes).
fn widen(array: &ArrayRef, to: &datafusion::arrow::datatypes::DataType) -> Result<ArrayRef> {
    use datafusion::arrow::array::{AsArray, StringArray};
    use datafusion::arrow::datatypes::DataType;
    match (array.data_type(), to) {
        (DataType::FixedSizeBinary(16), DataType::Utf8) => {
            let bytes = array.as_fixed_size_binary();
            let text: StringArray = (0..bytes.len())
                .map(|i| {
                    (!bytes.is_null(i)).then(|| {
                        let mut b = [0u8; 16];
                        b.copy_from_slice(bytes.value(i));
                        kalamdb_catalog::value::uuid_text(&b)
                    })
                })
                .collect();
            Ok(Arc::new(text))
        }
        _ => cast(array, to).map_err(internal),
    }
}

/// Flushed entries the hot-tier cleanup checks per hold of the scope's write lock.
pub(crate) const CLEANUP_SLICE: usize = 2048;

fn internal(e: impl std::fmt::Display) -> KalamError {
    KalamError::Internal(e.to_string())
}

/// One batch with exactly `table`'s schema. Columns are found by stable column id (field
/// metadata [`COLUMN_ID_KEY`], so renames keep their data and a dropped column's data never
/// shows under a new column of the same name), or by name in segments written before ids
/// were recorded; cast when the type was widened since. A column the segment lacks was added
/// after it was written: its rows read the column's literal default, or NULL.
fn conform(table: &CachedTable, batches: &[RecordBatch]) -> Result<RecordBatch> {
    let all: Vec<usize> = (0..table.schema.fields().len()).collect();
    conform_columns(table, batches, &all)
}

/// As [`conform`], for the columns `indices` of `table`'s schema only (a projected read).
pub(crate) fn conform_columns(
    table: &CachedTable,
    batches: &[RecordBatch],
    indices: &[usize],
) -> Result<RecordBatch> {
    let schema = Arc::new(table.schema.project(indices).map_err(internal)?);
    let rows: usize = batches.iter().map(|b| b.num_rows()).sum();
    let columns_of = &table.def.columns;
    let mut columns = Vec::with_capacity(indices.len());
    for &i in indices {
        let field = table.schema.field(i);
        let parts = batches
            .iter()
            .map(|b| {
                let found = match columns_of.get(i) {
                    Some(col) if has_column_ids(b) => b
                        .schema()
                        .fields()
                        .iter()
                        .position(|f| column_id(f) == Some(col.column_id))
                        .map(|at| b.column(at)),
                    _ => b.column_by_name(field.name()),
                };
                match found {
                    Some(a) if a.data_type() == field.data_type() => Ok(Arc::clone(a)),
                    Some(a) => widen(a, field.data_type()),
                    None => match columns_of.get(i) {
                        Some(col) if col.added_at_seq.is_some() => {
                            let default = &table.missing_values()[i];
                            let cells = std::iter::repeat_n(
                                default
                                    .as_ref()
                                    .unwrap_or(&kalamdb_catalog::value::Value::Null),
                                b.num_rows(),
                            );
                            kalamdb_catalog::value::to_array(cells, &col.data_type)
                        }
                        _ => Ok(new_null_array(field.data_type(), b.num_rows())),
                    },
                }
            })
            .collect::<Result<Vec<ArrayRef>>>()?;
        let refs: Vec<&dyn Array> = parts.iter().map(|a| a.as_ref()).collect();
        columns.push(match parts.as_slice() {
            [] => new_null_array(field.data_type(), 0),
            [one] => Arc::clone(one),
            _ => concat(&refs).map_err(internal)?,
        });
    }
    let options = RecordBatchOptions::new().with_row_count(Some(rows));
    RecordBatch::try_new_with_options(schema, columns, &options).map_err(internal)
}

fn column_id(field: &datafusion::arrow::datatypes::Field) -> Option<u32> {
    field.metadata().get(COLUMN_ID_KEY)?.parse().ok()
}

fn has_column_ids(batch: &RecordBatch) -> bool {
    batch
        .schema()
        .fields()
        .iter()
        .any(|f| column_id(f).is_some())
}

/// `batch` (of `table`'s schema) with each user column's stable id in its field metadata, as
/// segments are written.
fn with_column_ids(table: &CachedTable, batch: RecordBatch) -> Result<RecordBatch> {
    let fields: Vec<datafusion::arrow::datatypes::Field> = table
        .schema
        .fields()
        .iter()
        .enumerate()
        .map(|(i, f)| match table.def.columns.get(i) {
            Some(col) => f
                .as_ref()
                .clone()
                .with_metadata([(COLUMN_ID_KEY.to_string(), col.column_id.to_string())].into()),
            None => f.as_ref().clone(),
        })
        .collect();
    let schema = Arc::new(datafusion::arrow::datatypes::Schema::new(fields));
    let options = RecordBatchOptions::new().with_row_count(Some(batch.num_rows()));
    RecordBatch::try_new_with_options(schema, batch.columns().to_vec(), &options).map_err(internal)
}

impl ScanSource {
    /// Row `i` as a stored row (cells by column id; NULLs left out).
    fn row(&self, table: &CachedTable, i: usize) -> Result<StoredRow> {
        let mut cells = Vec::with_capacity(table.def.columns.len());
        for (c, col) in table.def.columns.iter().enumerate() {
            let array = self.batch.column(c);
            if array.is_null(i) {
                continue;
            }
            let scalar = ScalarValue::try_from_array(array, i).map_err(internal)?;
            cells.push((col.column_id, coerce(scalar, &col.data_type, &col.name)?));
        }
        Ok(StoredRow {
            seq: self.seqs[i],
            deleted: self.deleted[i],
            cells,
        })
    }

    /// Keys, `_seq` and `_deleted` of a conformed segment batch.
    fn of_batch(table: &CachedTable, batch: RecordBatch) -> Result<Self> {
        let pk_index = table
            .pk_index
            .ok_or_else(|| internal("flushed table has no primary key"))?;
        let pk_col = &table.def.columns[pk_index];
        let pk = batch.column(pk_index);
        let keys = (0..batch.num_rows())
            .map(|i| {
                let scalar = ScalarValue::try_from_array(pk, i).map_err(internal)?;
                coerce(scalar, &pk_col.data_type, &pk_col.name)?
                    .pk_key()
                    .ok_or_else(|| internal("segment row without a primary key"))
            })
            .collect::<Result<Vec<_>>>()?;
        let seq = batch
            .column_by_name(SEQ_COLUMN)
            .and_then(|a| a.as_primitive_opt::<Int64Type>())
            .ok_or_else(|| internal("segment without _seq"))?;
        let deleted = batch
            .column_by_name(DELETED_COLUMN)
            .and_then(|a| a.as_boolean_opt())
            .ok_or_else(|| internal("segment without _deleted"))?;
        let seqs = seq.values().to_vec();
        let deleted = (0..batch.num_rows()).map(|i| deleted.value(i)).collect();
        Ok(Self {
            batch,
            keys,
            seqs,
            deleted,
        })
    }
}

/// K-way merge of sources sorted by key: for each key the row with the largest `_seq`, in key
/// order, tombstones left out unless their `_seq` is above `keep_tombstones_after`. Returns
/// `(source, row)` pairs.
fn merge_sources(
    sources: &[Arc<ScanSource>],
    keep_tombstones_after: Option<i64>,
) -> Vec<(usize, usize)> {
    use std::cmp::Reverse;
    use std::collections::BinaryHeap;
    let mut heap: BinaryHeap<Reverse<(&[u8], usize, usize)>> = sources
        .iter()
        .enumerate()
        .filter(|(_, s)| !s.keys.is_empty())
        .map(|(i, s)| Reverse((s.keys[0].as_slice(), i, 0)))
        .collect();
    let mut out = Vec::new();
    let mut current: Option<(&[u8], usize, usize)> = None;
    let emit = |pick: Option<(&[u8], usize, usize)>, out: &mut Vec<(usize, usize)>| {
        if let Some((_, s, r)) = pick
            && (!sources[s].deleted[r]
                || keep_tombstones_after.is_some_and(|after| sources[s].seqs[r] > after))
        {
            out.push((s, r));
        }
    };
    while let Some(Reverse((key, s, r))) = heap.pop() {
        if r + 1 < sources[s].keys.len() {
            heap.push(Reverse((sources[s].keys[r + 1].as_slice(), s, r + 1)));
        }
        match current {
            Some((k, cs, cr)) if k == key => {
                if sources[s].seqs[r] > sources[cs].seqs[cr] {
                    current = Some((key, s, r));
                }
            }
            _ => {
                emit(current.take(), &mut out);
                current = Some((key, s, r));
            }
        }
    }
    emit(current, &mut out);
    out
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn unhex(s: &str) -> Vec<u8> {
    (0..s.len() / 2)
        .filter_map(|i| u8::from_str_radix(&s[2 * i..2 * i + 2], 16).ok())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::tiered_run_start;

    #[test]
    fn tiered_compaction_merges_segments_of_similar_size() {
        assert_eq!(tiered_run_start(&[10; 4], 4), None, "not above the trigger");
        assert_eq!(tiered_run_start(&[10; 5], 4), Some(1), "the newest four");
        // An earlier merge (40 rows) is bigger than the three small ones after it: left alone.
        assert_eq!(tiered_run_start(&[10, 40, 10, 10, 10], 4), Some(2));
        // Merged outputs of similar size merge with each other.
        assert_eq!(tiered_run_start(&[400, 40, 40, 40, 40], 4), Some(1));
        // Nothing to pair with: no merge.
        assert_eq!(tiered_run_start(&[10, 10, 10, 90, 5], 2), None);
    }
}
