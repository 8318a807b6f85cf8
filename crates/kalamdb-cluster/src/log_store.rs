//! A group's Raft log in one partition of the node's store: entries under `l` + the index
//! (big-endian, so key order is log order), and the vote and the last purged log id under `m`
//! keys. No committed mark: the state machine persists its applied log id with its data. Every
//! write is an atomic store batch in the store's write-ahead log. Votes, truncations and purges
//! are fsynced whatever the node's `sync_writes` (a vote a power loss forgot could elect two
//! leaders in one term); appended entries are as durable as the node's writes are
//! (`sync_writes`): an acknowledged write survives the crash of any minority of processes
//! always, and a power loss of a majority only with `sync_writes = true`, as on one node.
//!
//! The latest entries are also kept in memory, decoded ([`Recent`]): openraft reads each
//! entry back soon after it is appended (the leader once per follower to replicate it and
//! once to apply it, a follower once to apply it), and a read from the store (an iterator
//! over the log's files, a decode) cost a follower more than its apply's write.

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

/// At most this many of the latest entries are kept in memory per group…
const RECENT_ENTRIES: usize = 4096;

/// …and at most about this many bytes ([`entry_bytes`]; one entry may pass it).
const RECENT_BYTES: usize = 16 * 1024 * 1024;

/// The latest entries of the log, in memory: a contiguous run of indexes ending at the last
/// appended entry (empty after a restart until entries are appended).
#[derive(Debug, Default)]
struct Recent {
    entries: std::collections::VecDeque<Entry<TypeConfig>>,
    bytes: usize,
}

/// What an entry takes in memory, about: its writes' bytes plus an allowance per operation
/// (the operation and its three allocations) and per entry.
fn entry_bytes(entry: &Entry<TypeConfig>) -> usize {
    const PER_OP: usize = 64;
    const PER_ENTRY: usize = 128;
    let ops = match &entry.payload {
        openraft::EntryPayload::Normal(command) => command.ops(),
        _ => 0,
    };
    PER_ENTRY + crate::types::entry_bytes(entry) + PER_OP * ops
}

impl Recent {
    fn first(&self) -> Option<u64> {
        self.entries.front().map(|e| e.log_id.index)
    }

    fn push(&mut self, entry: Entry<TypeConfig>) {
        let next = self.entries.back().map(|e| e.log_id.index + 1);
        if next.is_some_and(|n| n != entry.log_id.index) {
            self.entries.clear();
            self.bytes = 0;
        }
        self.bytes += entry_bytes(&entry);
        self.entries.push_back(entry);
        while self.entries.len() > RECENT_ENTRIES
            || (self.bytes > RECENT_BYTES && self.entries.len() > 1)
        {
            if let Some(gone) = self.entries.pop_front() {
                self.bytes -= entry_bytes(&gone);
            }
        }
    }

    /// Forgets the entries from `index` on (a truncation).
    fn truncate(&mut self, index: u64) {
        while self.entries.back().is_some_and(|e| e.log_id.index >= index) {
            if let Some(gone) = self.entries.pop_back() {
                self.bytes -= entry_bytes(&gone);
            }
        }
    }

    /// Forgets the entries up to `index` (a purge).
    fn purge(&mut self, index: u64) {
        while self
            .entries
            .front()
            .is_some_and(|e| e.log_id.index <= index)
        {
            if let Some(gone) = self.entries.pop_front() {
                self.bytes -= entry_bytes(&gone);
            }
        }
    }

    /// The entries `start..end` when all of them are here, as many as fit in `limit` bytes
    /// ([`entry_bytes`]; the first one whatever its size).
    fn get(&self, start: u64, end: u64, limit: usize) -> Option<Vec<Entry<TypeConfig>>> {
        let end = end.max(start);
        let first = self.first()?;
        let last = self.entries.back()?.log_id.index;
        if start < first || end > last + 1 {
            return None;
        }
        let from = usize::try_from(start - first).ok()?;
        let to = usize::try_from(end - first).ok()?;
        let mut bytes = 0;
        let mut found = Vec::new();
        for entry in self.entries.range(from..to) {
            let size = entry_bytes(entry);
            if !found.is_empty() && bytes + size > limit {
                break;
            }
            bytes += size;
            found.push(entry.clone());
        }
        Some(found)
    }
}

/// One group's log. Cheap to clone: clones share the store and the latest entries (openraft
/// reads through a clone while it writes through the original; every write is one atomic
/// batch).
#[derive(Debug, Clone)]
pub struct LogStore {
    backend: Arc<dyn StorageBackend>,
    partition: String,
    recent: Arc<std::sync::Mutex<Recent>>,
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
        Ok(Self {
            backend,
            partition,
            recent: Arc::default(),
        })
    }

    fn recent(&self) -> std::sync::MutexGuard<'_, Recent> {
        // A panic while holding it leaves a consistent run of entries (every change is one
        // push or pop): go on with it.
        self.recent.lock().unwrap_or_else(|e| e.into_inner())
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

/// Most bytes ([`entry_bytes`], which count more than the writes alone) one
/// [`RaftLogReader::limited_get_log_entries`] answers (at least one entry whatever its size):
/// what replication reads for one AppendEntries, so the network's bound on the writes' bytes
/// (`network::MAX_APPEND_BYTES`, the same figure) never refuses it.
const READ_LIMIT_BYTES: usize = 8 * 1024 * 1024;

impl LogStore {
    /// The entries with indexes in `start..end` (`end`: none, to the last), in order, as many
    /// as fit in `limit` bytes ([`entry_bytes`]; the first one whatever its size).
    fn entries(
        &self,
        start: u64,
        end: Option<u64>,
        limit: usize,
    ) -> Result<Vec<Entry<TypeConfig>>> {
        if let Some(found) = end.and_then(|end| self.recent().get(start, end, limit)) {
            return Ok(found);
        }
        let mut entries = Vec::new();
        let mut failed = None;
        let mut bytes = 0;
        let from = entry_key(start);
        self.backend
            .scan_each(&self.partition, &[ENTRY], Some(&from), &mut |key, value| {
                let index = u64::from_be_bytes(key[1..9].try_into().unwrap_or([0xff; 8]));
                if index < start || end.is_some_and(|end| index >= end) {
                    return Ok(false);
                }
                match decode::<Entry<TypeConfig>>(value) {
                    Ok(entry) => {
                        let size = entry_bytes(&entry);
                        if !entries.is_empty() && bytes + size > limit {
                            return Ok(false);
                        }
                        bytes += size;
                        entries.push(entry);
                    }
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
        let end = match range.end_bound() {
            Bound::Included(i) => Some(i.saturating_add(1)),
            Bound::Excluded(i) => Some(*i),
            Bound::Unbounded => None,
        };
        self.entries(start, end, usize::MAX)
    }

    /// Replication's read: at most about [`READ_LIMIT_BYTES`] of entries, so a lagging
    /// follower is sent what fits one AppendEntries instead of everything being read and
    /// then refused as too large.
    async fn limited_get_log_entries(
        &mut self,
        start: u64,
        end: u64,
    ) -> Result<Vec<Entry<TypeConfig>>> {
        self.entries(start, Some(end), READ_LIMIT_BYTES)
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
        let mut appended = Vec::new();
        for entry in entries {
            let bytes =
                encode(&entry).map_err(|e| io_error(ErrorSubject::Logs, ErrorVerb::Write, e))?;
            batch.put(&self.partition, entry_key(entry.log_id.index), bytes);
            appended.push(entry);
        }
        // The batch is in the store's write-ahead log when write returns: durable as the node
        // is configured (sync_writes), and readable at once.
        let written = self
            .backend
            .write(batch)
            .map_err(|e| io_error(ErrorSubject::Logs, ErrorVerb::Write, e));
        if written.is_ok() {
            let mut recent = self.recent();
            for entry in appended {
                recent.push(entry);
            }
        }
        callback.log_io_completed(
            written
                .as_ref()
                .map(|_| ())
                .map_err(|e| std::io::Error::other(e.to_string())),
        );
        written
    }

    async fn truncate(&mut self, log_id: LogId<u64>) -> Result<()> {
        self.recent().truncate(log_id.index);
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
        self.recent().purge(log_id.index);
        self.write(batch, ErrorSubject::Logs)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::types::Command;
    use openraft::{CommittedLeaderId, EntryPayload};

    fn entry(term: u64, index: u64) -> Entry<TypeConfig> {
        let mut batch = WriteBatch::new();
        batch.put("t", index.to_be_bytes().to_vec(), vec![0; 10]);
        Entry {
            log_id: LogId::new(CommittedLeaderId::new(term, 1), index),
            payload: EntryPayload::Normal(Command::write(batch)),
        }
    }

    impl Recent {
        fn get_all(&self, start: u64, end: u64) -> Option<Vec<Entry<TypeConfig>>> {
            self.get(start, end, usize::MAX)
        }
    }

    fn ids(found: Option<Vec<Entry<TypeConfig>>>) -> Option<Vec<(u64, u64)>> {
        found.map(|es| {
            es.iter()
                .map(|e| (e.log_id.leader_id.term, e.log_id.index))
                .collect()
        })
    }

    #[test]
    fn recent_entries_follow_appends_truncations_and_purges() {
        let mut recent = Recent::default();
        for i in 1..=5 {
            recent.push(entry(1, i));
        }
        assert_eq!(ids(recent.get_all(2, 4)), Some(vec![(1, 2), (1, 3)]));
        assert_eq!(ids(recent.get_all(3, 3)), Some(vec![]));
        assert_eq!(ids(recent.get_all(0, 3)), None, "index 0 is not here");
        assert_eq!(ids(recent.get_all(4, 7)), None, "6 is not appended yet");
        // A new leader's entries replace the tail from 4.
        recent.truncate(4);
        assert_eq!(ids(recent.get_all(3, 5)), None);
        recent.push(entry(2, 4));
        assert_eq!(ids(recent.get_all(3, 5)), Some(vec![(1, 3), (2, 4)]));
        recent.purge(2);
        assert_eq!(ids(recent.get_all(2, 4)), None);
        assert_eq!(ids(recent.get_all(3, 5)), Some(vec![(1, 3), (2, 4)]));
        // Replication's reads take what fits in the limit, and the first entry always.
        let one = entry_bytes(&entry(1, 3));
        assert_eq!(
            ids(recent.get(3, 5, 1)),
            Some(vec![(1, 3)]),
            "the first goes"
        );
        assert_eq!(ids(recent.get(3, 5, 2 * one - 1)), Some(vec![(1, 3)]));
        assert_eq!(ids(recent.get(3, 5, 2 * one)), Some(vec![(1, 3), (2, 4)]));
        // Empty and inverted ranges.
        assert_eq!(ids(recent.get_all(5, 5)), Some(vec![]));
        assert_eq!(ids(recent.get_all(4, 3)), Some(vec![]));
        assert_eq!(ids(recent.get_all(6, 2)), None);
        // A gap (entries after a snapshot) starts the run again.
        recent.push(entry(2, 10));
        assert_eq!(ids(recent.get_all(3, 5)), None);
        assert_eq!(ids(recent.get_all(10, 11)), Some(vec![(2, 10)]));
        for i in 11..(11 + RECENT_ENTRIES as u64) {
            recent.push(entry(2, i));
        }
        assert_eq!(recent.entries.len(), RECENT_ENTRIES);
        assert_eq!(ids(recent.get_all(10, 11)), None, "the oldest went");
    }
}
