//! The hot store: a [`StorageBackend`] trait and its RocksDB implementation.
//!
//! Everything KalamDB keeps on the hot path, application rows and system tables alike, lives in
//! named *partitions* of one backend (one WAL, so one atomic batch can span tables and the
//! catalog). The trait offers what the engine needs
//! and nothing more:
//!
//! - partitions created and dropped at run time (one RocksDB column family each, so dropping a
//!   table is O(1)), each with a [`KeyLayout`];
//! - point reads, and forward scans bounded by a key prefix, optionally starting at a key;
//! - atomic [`WriteBatch`]es that may span partitions (a row and its index commit together);
//! - consistent [`StorageSnapshot`]s for multi-read operations.
//!
//! Durability: the write-ahead log is always on, so an acknowledged write survives a crash of
//! the process. With [`StoreOptions::sync_writes`] every commit is also fsynced, which makes it
//! survive power loss at the price of one fsync per commit (typically 0.5-10 ms depending on
//! the disk, versus a few microseconds without).
//!
//! Key encodings are the caller's business; this crate treats keys and values as bytes.

mod layout;
pub mod outbox;
mod rocks;

pub use layout::KeyLayout;
pub use rocks::RocksBackend;

use std::fmt::Debug;

/// Errors of the hot store. Every one of them means the store, not the caller's input, failed,
/// except [`StoreError::PartitionNotFound`].
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The named partition does not exist.
    #[error("storage partition '{0}' does not exist")]
    PartitionNotFound(String),
    /// RocksDB reported an error.
    #[error("RocksDB error: {0}")]
    Rocks(#[from] rocksdb::Error),
    /// A file the store keeps beside RocksDB could not be read or written.
    #[error("storage I/O error: {0}")]
    Io(#[from] std::io::Error),
    /// A replicated store (a cluster node) cannot commit this write here: another node leads
    /// the group it belongs to. Nothing was written.
    #[error(
        "this node does not lead the group of this write. Leader: {}",
        leader.as_deref().unwrap_or("unknown")
    )]
    NotLeader {
        /// The client URL of the leader, when one is known.
        leader: Option<String>,
    },
    /// A replicated store could not commit: no quorum, or the group stopped. The write may or
    /// may not have been committed.
    #[error("the cluster could not commit the write: {0}")]
    Unavailable(String),
    /// A replicated store cannot commit this batch atomically: it writes keys of two groups.
    /// Nothing was written; the same batch will never be taken.
    #[error("{0}")]
    SpansGroups(String),
}

/// Result alias of this crate.
pub type Result<T, E = StoreError> = std::result::Result<T, E>;

/// A key/value pair yielded by scans.
pub type KvPair = (Box<[u8]>, Box<[u8]>);

/// A visitor of lent key/value pairs ([`StorageRead::scan_each`]): `false` stops the scan.
pub type Visit<'v> = dyn FnMut(&[u8], &[u8]) -> Result<bool> + 'v;

/// A forward iterator over key/value pairs.
pub type KvIter<'a> = Box<dyn Iterator<Item = Result<KvPair>> + 'a>;

/// Options of the RocksDB backend.
#[derive(Debug, Clone)]
pub struct StoreOptions {
    /// fsync the WAL on every commit (survives power loss; costs one fsync per write).
    pub sync_writes: bool,
    /// Shared block-cache size in bytes.
    pub block_cache_bytes: usize,
    /// Memtable size per partition in bytes.
    pub write_buffer_bytes: usize,
    /// Background flush/compaction threads.
    pub max_background_jobs: i32,
}

impl Default for StoreOptions {
    fn default() -> Self {
        Self {
            sync_writes: false,
            block_cache_bytes: 8 * 1024 * 1024,
            write_buffer_bytes: 4 * 1024 * 1024,
            max_background_jobs: 2,
        }
    }
}

/// One operation of a [`WriteBatch`]. Keys and values serialize as byte strings (MessagePack
/// `bin`), not as arrays of numbers: a replicated batch is encoded and decoded several times
/// on its way through the Raft log and the network (arrays of numbers also still decode).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum BatchOp {
    /// Insert or overwrite `key` in `partition`.
    Put {
        /// Target partition.
        partition: String,
        /// Key bytes.
        #[serde(with = "serde_bytes")]
        key: Vec<u8>,
        /// Value bytes.
        #[serde(with = "serde_bytes")]
        value: Vec<u8>,
    },
    /// Remove `key` from `partition`.
    Delete {
        /// Target partition.
        partition: String,
        /// Key bytes.
        #[serde(with = "serde_bytes")]
        key: Vec<u8>,
    },
    /// Remove every key in `from..to` from `partition` (one range tombstone).
    DeleteRange {
        /// Target partition.
        partition: String,
        /// First key removed.
        #[serde(with = "serde_bytes")]
        from: Vec<u8>,
        /// First key kept (exclusive end).
        #[serde(with = "serde_bytes")]
        to: Vec<u8>,
    },
}

/// A set of writes committed atomically: all of them or none. Serializable, so a cluster can
/// replicate the batches a leader commits.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct WriteBatch {
    ops: Vec<BatchOp>,
    /// Upkeep: see [`WriteBatch::upkeep`]. Absent (false) in batches encoded before it.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    upkeep: bool,
}

impl WriteBatch {
    /// An empty batch.
    pub fn new() -> Self {
        Self::default()
    }

    /// An empty batch of the engine's upkeep (a flush removing the hot versions it moved to a
    /// segment, TTL eviction): its deletions are not changes a statement made, so a cluster
    /// replica that derives change events from the batches it applies publishes none for them.
    pub fn upkeep() -> Self {
        Self {
            upkeep: true,
            ..Self::default()
        }
    }

    /// Whether this is an [`upkeep`](Self::upkeep) batch.
    pub fn is_upkeep(&self) -> bool {
        self.upkeep
    }

    /// Adds a put.
    pub fn put(&mut self, partition: &str, key: Vec<u8>, value: Vec<u8>) {
        self.ops.push(BatchOp::Put {
            partition: partition.to_string(),
            key,
            value,
        });
    }

    /// Adds a delete.
    pub fn delete(&mut self, partition: &str, key: Vec<u8>) {
        self.ops.push(BatchOp::Delete {
            partition: partition.to_string(),
            key,
        });
    }

    /// Number of operations.
    pub fn len(&self) -> usize {
        self.ops.len()
    }

    /// Queues the removal of every key in `from..to` (`to` excluded) of `partition`.
    pub fn delete_range(&mut self, partition: &str, from: Vec<u8>, to: Vec<u8>) {
        self.ops.push(BatchOp::DeleteRange {
            partition: partition.to_string(),
            from,
            to,
        });
    }

    /// Whether the batch holds nothing.
    pub fn is_empty(&self) -> bool {
        self.ops.is_empty()
    }

    /// The operations, in order.
    pub fn ops(&self) -> &[BatchOp] {
        &self.ops
    }

    /// `parts` as one batch, in order; an upkeep batch when the first part is one (the flag
    /// is a batch's, so parts of both kinds are not joined by callers that care).
    pub fn joined<'a>(parts: impl IntoIterator<Item = &'a WriteBatch>) -> WriteBatch {
        let mut parts = parts.into_iter().peekable();
        let mut all = match parts.peek().is_some_and(|p| p.is_upkeep()) {
            true => WriteBatch::upkeep(),
            false => WriteBatch::new(),
        };
        for part in parts {
            all.extend_from(part);
        }
        all
    }

    /// Appends copies of `other`'s operations (after this batch's own).
    pub fn extend_from(&mut self, other: &WriteBatch) {
        self.ops.extend_from_slice(&other.ops);
    }

    /// The bytes of the partition names, keys and values the batch carries (its size on the
    /// wire, give or take framing).
    pub fn bytes(&self) -> usize {
        self.ops
            .iter()
            .map(|op| match op {
                BatchOp::Put {
                    partition,
                    key,
                    value,
                } => partition.len() + key.len() + value.len(),
                BatchOp::Delete { partition, key } => partition.len() + key.len(),
                BatchOp::DeleteRange {
                    partition,
                    from,
                    to,
                } => partition.len() + from.len() + to.len(),
            })
            .sum()
    }
}

/// Read access shared by the live store and its snapshots.
pub trait StorageRead {
    /// Reads one key.
    fn get(&self, partition: &str, key: &[u8]) -> Result<Option<Vec<u8>>>;

    /// Reads several keys of one partition at once (cheaper than one `get` per key).
    fn multi_get(&self, partition: &str, keys: &[Vec<u8>]) -> Result<Vec<Option<Vec<u8>>>> {
        keys.iter().map(|k| self.get(partition, k)).collect()
    }

    /// Scans the keys that start with `prefix`, in key order, starting at `start` (inclusive)
    /// when given (`start` must itself start with `prefix`).
    fn scan<'a>(
        &'a self,
        partition: &str,
        prefix: &[u8],
        start: Option<&[u8]>,
    ) -> Result<KvIter<'a>>;

    /// Visits the keys that start with `prefix` in key order from `start` (as [`Self::scan`]),
    /// lending each key and value instead of copying them; stops when `visit` returns `false`.
    /// The cheap way to stream a long range.
    fn scan_each(
        &self,
        partition: &str,
        prefix: &[u8],
        start: Option<&[u8]>,
        visit: &mut Visit<'_>,
    ) -> Result<()> {
        for item in self.scan(partition, prefix, start)? {
            let (k, v) = item?;
            if !visit(&k, &v)? {
                break;
            }
        }
        Ok(())
    }
}

/// A consistent point-in-time view of the whole store.
pub trait StorageSnapshot: StorageRead + Debug {}

/// The wait of a [`Pending`] write.
pub type PendingWait = std::pin::Pin<Box<dyn std::future::Future<Output = Result<()>> + Send>>;

/// A write [`StorageBackend::submit`] accepted and ordered but may not have committed yet.
pub trait Pending: Send {
    /// Resolves once the write is committed and readable from this store.
    fn wait(self: Box<Self>) -> PendingWait;
}

/// A write that was committed when it was submitted.
#[derive(Debug)]
pub struct Committed;

impl Pending for Committed {
    fn wait(self: Box<Self>) -> PendingWait {
        Box::pin(std::future::ready(Ok(())))
    }
}

/// The hot store.
pub trait StorageBackend: StorageRead + Send + Sync + Debug {
    /// Creates a partition whose keys follow `layout`; a no-op when it exists.
    fn create_partition(&self, name: &str, layout: KeyLayout) -> Result<()>;

    /// Drops a partition and all its data; a no-op when it does not exist.
    fn drop_partition(&self, name: &str) -> Result<()>;

    /// Whether the partition exists.
    fn has_partition(&self, name: &str) -> bool;

    /// The key layout of an existing partition (`None` when it does not exist).
    fn layout(&self, name: &str) -> Option<KeyLayout>;

    /// Names of all partitions.
    fn list_partitions(&self) -> Vec<String>;

    /// Commits a batch atomically (WAL always; fsync when `sync_writes`).
    fn write(&self, batch: WriteBatch) -> Result<()>;

    /// Commits `parts`, in order, as one atomic batch (as [`Self::write`] of them joined):
    /// for a caller that holds batches it must not give up (a Raft entry's, shared with the
    /// log's cache) and would otherwise copy them into one.
    fn write_parts(&self, parts: &[&WriteBatch]) -> Result<()> {
        self.write(WriteBatch::joined(parts.iter().copied()))
    }

    /// Orders a batch after every batch submitted before it and returns without waiting for
    /// it to commit where committing takes a round trip (a cluster's replicated store: the
    /// batch is in the leader's log); [`Pending::wait`] then waits. A caller that orders its
    /// writes under a lock releases the lock between the two, so several writes travel
    /// together. A local store commits at once.
    fn submit(&self, batch: WriteBatch) -> Result<Box<dyn Pending>> {
        self.write(batch)?;
        Ok(Box::new(Committed))
    }

    /// Whether [`Self::submit`] may return before the write commits (a replicated store);
    /// callers of a store that commits at once write directly.
    fn defers_commits(&self) -> bool {
        false
    }

    /// Whether this node may commit a write of `key` in `partition` now, and its reads see
    /// every write committed before that: always on one server; on a cluster member, when it
    /// leads the key's group and applied everything its predecessors committed. Work that
    /// must run once per cluster (flushes) asks before it starts.
    fn leads(&self, _partition: &str, _key: &[u8]) -> bool {
        true
    }

    /// Commits a batch atomically and fsyncs it whatever `sync_writes` says: for what must
    /// survive power loss even when data writes need not (a Raft vote and log: a forgotten
    /// vote can elect two leaders in one term).
    fn write_durable(&self, batch: WriteBatch) -> Result<()> {
        self.write(batch)
    }

    /// Takes a consistent snapshot.
    fn snapshot(&self) -> Box<dyn StorageSnapshot + '_>;

    /// Takes a consistent snapshot that holds the store itself, so it may be kept anywhere
    /// for as long as needed (a transaction keeps one across requests). Versions it sees are
    /// kept until it is dropped.
    fn owned_snapshot(
        self: std::sync::Arc<Self>,
    ) -> std::sync::Arc<dyn StorageSnapshot + Send + Sync>;

    /// Flushes memtables to disk (used on clean shutdown).
    fn flush(&self) -> Result<()>;

    /// The largest key of `partition` that starts with `prefix` (one reverse seek).
    fn last_key(&self, partition: &str, prefix: &[u8]) -> Result<Option<Vec<u8>>> {
        let mut last = None;
        self.scan_each(partition, prefix, None, &mut |k, _| {
            last = Some(k.to_vec());
            Ok(true)
        })?;
        Ok(last)
    }

    /// An estimate of the keys in one partition (cheap: from the store's own figures); `None`
    /// when the partition does not exist or the store keeps no such figure.
    fn estimated_keys(&self, name: &str) -> Option<u64> {
        let _ = name;
        None
    }

    /// Writes a consistent copy of the whole store as of now into the new folder `dir`
    /// (hard links where the filesystem allows), while writes go on.
    fn checkpoint(&self, dir: &std::path::Path) -> Result<()> {
        let _ = dir;
        Err(StoreError::Io(std::io::Error::other(
            "this store cannot write checkpoints",
        )))
    }

    /// The store's own figures (memory, compaction debt, write stalls, log size), for
    /// metrics; zeros for a store that keeps none.
    fn engine_stats(&self) -> EngineStats {
        EngineStats::default()
    }

    /// Compacts the keys `[from, to)` of one partition: versions deleted there (and the
    /// deletions themselves, once no snapshot needs them) are dropped from its files, so
    /// iterators stop walking over them. Blocks while the compaction runs. The default does
    /// nothing (a store without such files).
    fn compact_range(&self, name: &str, from: &[u8], to: &[u8]) -> Result<()> {
        let _ = (name, from, to);
        Ok(())
    }
}

/// Figures of the storage engine, summed over its partitions.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct EngineStats {
    /// Bytes in memtables (written, not yet flushed to files).
    pub memtable_bytes: u64,
    /// Bytes compaction estimates it must rewrite to catch up.
    pub pending_compaction_bytes: u64,
    /// Bytes of live sorted files.
    pub sst_bytes: u64,
    /// Bytes of write-ahead log files.
    pub wal_bytes: u64,
    /// Writes are stopped (too much compaction debt) right now.
    pub writes_stopped: bool,
    /// Writes are being slowed to this many bytes/s right now (0: not delayed).
    pub delayed_write_rate: u64,
}

#[cfg(test)]
mod tests;
