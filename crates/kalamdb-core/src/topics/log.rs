//! How a topic's messages are kept in the hot store: one partition per topic
//! (`topic/<ns>.<name>`), messages keyed by (partition, offset) big-endian. A partition's next
//! offset is one past its last message (found by one reverse seek at start-up), or the floor
//! recorded under `FLOORS` at start-up and by every removal, when higher (so offsets never
//! go back).

use kalamdb_catalog::error::{KalamError, Result};
use kalamdb_store::{StorageRead, WriteBatch};
use serde::{Deserialize, Serialize};

/// What happened to the row a message reports (or `Insert` for a published message).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Op {
    /// A new row.
    Insert,
    /// A changed row.
    Update,
    /// A deleted row.
    Delete,
}

impl Op {
    /// The wire spelling (`Insert`, `Update`, `Delete`).
    pub fn as_str(self) -> &'static str {
        match self {
            Op::Insert => "Insert",
            Op::Update => "Update",
            Op::Delete => "Delete",
        }
    }
}

/// One stored message.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Message {
    /// The key it was partitioned by (a row's primary key as text).
    pub key: Option<String>,
    /// The payload (UTF-8 JSON for table changes).
    pub payload: Vec<u8>,
    /// The change.
    pub op: Op,
    /// The user whose row changed (USER tables) or who published it.
    pub user: Option<String>,
    /// When it was appended, ms since the epoch.
    pub ts_ms: i64,
    /// `ns.table` of a table change.
    pub source: Option<String>,
}

/// The key prefix of the floors (a partition number no topic has): floor of partition `p` at
/// offset `p` under it, apart from every partition's messages so that a partition's last key
/// is its last message.
const FLOORS: u32 = u32::MAX;

/// The hot-store partition of topic `topic_id`.
pub fn partition_name(topic_id: &str) -> String {
    format!("topic/{topic_id}")
}

/// The topic whose hot-store partition is `name`.
pub fn topic_of(name: &str) -> Option<&str> {
    name.strip_prefix("topic/")
}

/// What a put into a topic's hot partition says about its offsets (a replica follows them).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Written {
    /// A message at `offset` of `partition`.
    Message {
        /// The partition.
        partition: u32,
        /// The offset.
        offset: u64,
    },
    /// `partition`'s floor (a flush, retention or clear moved or removed messages below it).
    Floor {
        /// The partition.
        partition: u32,
        /// The lowest next offset.
        next: u64,
    },
}

/// Reads a put of `key` = `value` into a topic's hot partition.
pub fn written(key: &[u8], value: &[u8]) -> Option<Written> {
    let partition = u32::from_be_bytes(key.get(..4)?.try_into().ok()?);
    let offset = offset_of(key)?;
    Some(match partition {
        FLOORS => Written::Floor {
            partition: u32::try_from(offset).ok()?,
            next: u64::from_be_bytes(value.try_into().ok()?),
        },
        _ => Written::Message { partition, offset },
    })
}

fn key(partition: u32, offset: u64) -> Vec<u8> {
    let mut k = Vec::with_capacity(12);
    k.extend_from_slice(&partition.to_be_bytes());
    k.extend_from_slice(&offset.to_be_bytes());
    k
}

/// Adds `message` at `offset` of `partition` to `batch`.
pub fn append(batch: &mut WriteBatch, store: &str, partition: u32, offset: u64, message: &Message) {
    let bytes = postcard::to_stdvec(message).unwrap_or_default();
    batch.put(store, key(partition, offset), bytes);
}

/// Adds the removal of offsets `from..to` of `partition` to `batch`.
pub fn remove(batch: &mut WriteBatch, store: &str, partition: u32, from: u64, to: u64) {
    if from < to {
        batch.delete_range(store, key(partition, from), key(partition, to));
    }
}

/// Records `next` as the lowest next offset of `partition` (before its messages are removed).
pub fn set_floor(batch: &mut WriteBatch, store: &str, partition: u32, next: u64) {
    batch.put(
        store,
        key(FLOORS, u64::from(partition)),
        next.to_be_bytes().to_vec(),
    );
}

/// The next offset of each of `partitions` partitions: after its last message, or its floor
/// when that is higher (by one reverse seek and one read per partition).
pub fn next_offsets(
    store_backend: &dyn kalamdb_store::StorageBackend,
    store: &str,
    partitions: u32,
) -> Result<Vec<u64>> {
    (0..partitions)
        .map(|p| {
            let floor = store_backend
                .get(store, &key(FLOORS, u64::from(p)))?
                .and_then(|b| b.try_into().ok())
                .map(u64::from_be_bytes)
                .unwrap_or(0);
            let last = store_backend
                .last_key(store, &p.to_be_bytes())?
                .and_then(|k| offset_of(&k));
            Ok(floor.max(last.map_or(0, |o| o + 1)))
        })
        .collect()
}

fn offset_of(k: &[u8]) -> Option<u64> {
    k.get(4..12)
        .and_then(|b| b.try_into().ok())
        .map(u64::from_be_bytes)
}

/// Calls `f` with the offset and stored bytes of each message of `partition` from offset
/// `from` on, in offset order, until it returns `false`.
pub fn each(
    read: &dyn StorageRead,
    store: &str,
    partition: u32,
    from: u64,
    f: &mut dyn FnMut(u64, &[u8]) -> Result<bool>,
) -> Result<()> {
    let start = key(partition, from);
    let mut failed = None;
    read.scan_each(
        store,
        &partition.to_be_bytes(),
        Some(&start),
        &mut |k, v| {
            let Some(offset) = offset_of(k) else {
                return Ok(false);
            };
            f(offset, v).or_else(|e| {
                failed = Some(e);
                Ok(false)
            })
        },
    )?;
    failed.map_or(Ok(()), Err)
}

/// A stored message.
pub fn decode(bytes: &[u8]) -> Result<Message> {
    postcard::from_bytes(bytes)
        .map_err(|e| KalamError::Internal(format!("corrupt topic message: {e}")))
}

/// The first message of `partition` at or after offset `from`.
pub fn first(
    read: &dyn StorageRead,
    store: &str,
    partition: u32,
    from: u64,
) -> Result<Option<(u64, Message)>> {
    let mut found = None;
    each(read, store, partition, from, &mut |offset, v| {
        found = Some((offset, decode(v)?));
        Ok(false)
    })?;
    Ok(found)
}

/// A read of one partition: offsets `from..to`, at most `limit` messages for which `keep`
/// holds.
#[allow(missing_debug_implementations)]
pub struct Range<'k> {
    /// First offset.
    pub from: u64,
    /// Offset past the last one read (`u64::MAX`: the end).
    pub to: u64,
    /// Most messages returned.
    pub limit: usize,
    /// Most messages looked at, returned or not.
    pub scan: usize,
    /// Which messages are returned (the others are skipped).
    pub keep: &'k dyn Fn(&Message) -> bool,
}

/// What [`read`] found: the messages kept, with their offsets, and the offset after the last
/// one looked at (to continue from; `None` when none was).
pub type Found = (Vec<(u64, Message)>, Option<u64>);

/// The messages of `range` in `partition`; see [`Found`].
pub fn read(
    read: &dyn StorageRead,
    store: &str,
    partition: u32,
    range: Range<'_>,
) -> Result<Found> {
    let mut out = Vec::new();
    let (mut next, mut scanned) = (None, 0);
    each(read, store, partition, range.from, &mut |offset, v| {
        if offset >= range.to || out.len() >= range.limit || scanned >= range.scan {
            return Ok(false);
        }
        scanned += 1;
        next = Some(offset + 1);
        let m = decode(v)?;
        if (range.keep)(&m) {
            out.push((offset, m));
        }
        Ok(true)
    })?;
    Ok((out, next))
}

/// The partition of a message with `key`: FNV-1a of the key, modulo `partitions` (stable
/// across builds, unlike std's hasher).
pub fn partition_of(key: Option<&str>, partitions: u32) -> u32 {
    let Some(key) = key else {
        return 0;
    };
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in key.bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    (h % u64::from(partitions.max(1))) as u32
}
