//! A group's Raft log in one partition of the node's store: entries under `l` + the index
//! (big-endian, so key order is log order), and the vote and the last purged log id under `m`
//! keys. No committed mark: the state machine persists its applied log id with its data. Every
//! write is an atomic store batch in the store's write-ahead log. Votes, truncations and purges
//! are fsynced whatever the node's `sync_writes` (a vote a power loss forgot could elect two
//! leaders in one term); appended entries are as durable as the node's writes are
//! (`sync_writes`): an acknowledged write survives the crash of any minority of processes
//! always, and a power loss of a majority only with `sync_writes = true`, as on one node.

use crate::io_error;
use crate::types::{TypeConfig, decode, encode};
use kalamdb_store::{KeyLayout, StorageBackend, WriteBatch};
use openraft::storage::{LogFlushed, LogState, RaftLogStorage};
use openraft::{Entry, ErrorSubject, ErrorVerb, LogId, RaftLogReader, StorageError, Vote};
use std::fmt::Debug;
use std::ops::{Bound, RangeBounds};
use std::sync::Arc;

type Result<T> = std::result::Result<T, StorageError<u64>>;

const ENTRY: u8 = b'l';
const VOTE: &[u8] = b"m:vote";
const PURGED: &[u8] = b"m:purged";

fn entry_key(index: u64) -> Vec<u8> {
    let mut k = Vec::with_capacity(9);
    k.push(ENTRY);
    k.extend_from_slice(&index.to_be_bytes());
    k
}

/// The first key after every entry key.
fn after_entries() -> Vec<u8> {
    vec![ENTRY + 1]
}

/// One group's log. Cheap to clone: clones share the store (openraft reads through a clone
/// while it writes through the original; every write is one atomic batch).
#[derive(Debug, Clone)]
pub struct LogStore {
    backend: Arc<dyn StorageBackend>,
    partition: String,
}

impl LogStore {
    /// The log of the group whose partition is `partition`, created when missing.
    pub fn open(
        backend: Arc<dyn StorageBackend>,
        partition: impl Into<String>,
    ) -> std::result::Result<Self, kalamdb_store::StoreError> {
        let partition = partition.into();
        if !backend.has_partition(&partition) {
            backend.create_partition(&partition, KeyLayout::Log)?;
        }
        Ok(Self { backend, partition })
    }

    fn read<T: serde::de::DeserializeOwned>(
        &self,
        key: &[u8],
        subject: ErrorSubject<u64>,
    ) -> Result<Option<T>> {
        crate::read_value(&*self.backend, &self.partition, key, subject)
    }

    /// Writes and fsyncs (see the module doc).
    fn write(&self, batch: WriteBatch, subject: ErrorSubject<u64>) -> Result<()> {
        self.backend
            .write_durable(batch)
            .map_err(|e| io_error(subject, ErrorVerb::Write, e))
    }

    fn put<T: serde::Serialize>(
        &self,
        key: &[u8],
        value: &T,
        subject: ErrorSubject<u64>,
    ) -> Result<()> {
        let bytes = encode(value).map_err(|e| io_error(subject.clone(), ErrorVerb::Write, e))?;
        let mut batch = WriteBatch::new();
        batch.put(&self.partition, key.to_vec(), bytes);
        self.write(batch, subject)
    }

    fn last_entry(&self) -> Result<Option<Entry<TypeConfig>>> {
        let Some(key) = self
            .backend
            .last_key(&self.partition, &[ENTRY])
            .map_err(|e| io_error(ErrorSubject::Logs, ErrorVerb::Read, e))?
        else {
            return Ok(None);
        };
        self.read(&key, ErrorSubject::Logs)
    }
}

impl RaftLogReader<TypeConfig> for LogStore {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + Send>(
        &mut self,
        range: RB,
    ) -> Result<Vec<Entry<TypeConfig>>> {
        let start = match range.start_bound() {
            Bound::Included(i) => *i,
            Bound::Excluded(i) => i.saturating_add(1),
            Bound::Unbounded => 0,
        };
        let mut entries = Vec::new();
        let mut failed = None;
        let from = entry_key(start);
        self.backend
            .scan_each(&self.partition, &[ENTRY], Some(&from), &mut |key, value| {
                let index = u64::from_be_bytes(key[1..9].try_into().unwrap_or([0xff; 8]));
                if !range.contains(&index) {
                    return Ok(false);
                }
                match decode(value) {
                    Ok(entry) => entries.push(entry),
                    Err(e) => {
                        failed = Some(e);
                        return Ok(false);
                    }
                }
                Ok(true)
            })
            .map_err(|e| io_error(ErrorSubject::Logs, ErrorVerb::Read, e))?;
        match failed {
            Some(e) => Err(io_error(ErrorSubject::Logs, ErrorVerb::Read, e)),
            None => Ok(entries),
        }
    }
}

impl RaftLogStorage<TypeConfig> for LogStore {
    type LogReader = Self;

    async fn get_log_state(&mut self) -> Result<LogState<TypeConfig>> {
        let last_purged_log_id: Option<LogId<u64>> = self.read(PURGED, ErrorSubject::Logs)?;
        let last_log_id = match self.last_entry()? {
            Some(entry) => Some(entry.log_id),
            None => last_purged_log_id,
        };
        Ok(LogState {
            last_purged_log_id,
            last_log_id,
        })
    }

    async fn get_log_reader(&mut self) -> Self::LogReader {
        self.clone()
    }

    async fn save_vote(&mut self, vote: &Vote<u64>) -> Result<()> {
        self.put(VOTE, vote, ErrorSubject::Vote)
    }

    async fn read_vote(&mut self) -> Result<Option<Vote<u64>>> {
        self.read(VOTE, ErrorSubject::Vote)
    }

    async fn append<I>(&mut self, entries: I, callback: LogFlushed<TypeConfig>) -> Result<()>
    where
        I: IntoIterator<Item = Entry<TypeConfig>> + Send,
        I::IntoIter: Send,
    {
        let mut batch = WriteBatch::new();
        for entry in entries {
            let bytes =
                encode(&entry).map_err(|e| io_error(ErrorSubject::Logs, ErrorVerb::Write, e))?;
            batch.put(&self.partition, entry_key(entry.log_id.index), bytes);
        }
        // The batch is in the store's write-ahead log when write returns: durable as the node
        // is configured (sync_writes), and readable at once.
        let written = self
            .backend
            .write(batch)
            .map_err(|e| io_error(ErrorSubject::Logs, ErrorVerb::Write, e));
        callback.log_io_completed(
            written
                .as_ref()
                .map(|_| ())
                .map_err(|e| std::io::Error::other(e.to_string())),
        );
        written
    }

    async fn truncate(&mut self, log_id: LogId<u64>) -> Result<()> {
        let mut batch = WriteBatch::new();
        batch.delete_range(&self.partition, entry_key(log_id.index), after_entries());
        self.write(batch, ErrorSubject::Logs)
    }

    async fn purge(&mut self, log_id: LogId<u64>) -> Result<()> {
        let bytes =
            encode(&log_id).map_err(|e| io_error(ErrorSubject::Logs, ErrorVerb::Write, e))?;
        // From the previous purge point: purges do not pile up overlapping range tombstones.
        let from = self
            .read::<LogId<u64>>(PURGED, ErrorSubject::Logs)?
            .map_or(0, |p| p.index.saturating_add(1));
        let mut batch = WriteBatch::new();
        batch.put(&self.partition, PURGED.to_vec(), bytes);
        let end = match log_id.index.checked_add(1) {
            Some(next) => entry_key(next),
            None => after_entries(),
        };
        if from <= log_id.index {
            batch.delete_range(&self.partition, entry_key(from), end);
        }
        self.write(batch, ErrorSubject::Logs)
    }
}
