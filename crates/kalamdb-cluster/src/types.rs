//! The type configuration of KalamDB's Raft groups and the commands their logs carry.

use kalamdb_store::{KeyLayout, WriteBatch};
use serde::{Deserialize, Serialize};
use std::sync::Arc;

/// A write batch as a log entry carries it: shared, because openraft clones entries (the
/// latest are kept in memory and read back to replicate and to apply them) and a clone must
/// not copy every key and value. Encoded exactly as the batch itself.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SharedBatch(Arc<WriteBatch>);

impl SharedBatch {
    /// The batch, to change: copied first if another entry shares it.
    pub fn make_mut(&mut self) -> &mut WriteBatch {
        Arc::make_mut(&mut self.0)
    }
}

impl std::ops::Deref for SharedBatch {
    type Target = WriteBatch;

    fn deref(&self) -> &WriteBatch {
        &self.0
    }
}

impl From<WriteBatch> for SharedBatch {
    fn from(batch: WriteBatch) -> Self {
        Self(Arc::new(batch))
    }
}

impl Serialize for SharedBatch {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        self.0.serialize(serializer)
    }
}

impl<'de> Deserialize<'de> for SharedBatch {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        WriteBatch::deserialize(deserializer).map(Self::from)
    }
}

/// One entry of a group's log: a change every replica makes to its own store, in log order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Command {
    /// One atomic batch of the engine's writes (rows, catalog records), as the leader built it
    /// inside its commit gate, `_seq` values included.
    Write {
        /// The writes.
        batch: SharedBatch,
        /// The node that proposed it (0: none in particular). That node's engine told its
        /// own live queries about the batch's changes; every other node derives them.
        origin: u64,
        /// The meta group's applied index on the proposing node when it proposed (0: none).
        /// A data group's replica applies the entry only once its node's meta group applied
        /// that far: the table it writes exists there too (docs/cluster.md §4, barriers).
        #[serde(default)]
        meta_applied: u64,
    },
    /// Several writes one node proposed together (group commit, the proposer module): applied in order,
    /// each as [`Command::Write`] would apply it, in one entry; the answer says per write
    /// whether it was refused.
    Writes {
        /// The writes, in the order they were submitted.
        batches: Vec<SharedBatch>,
        /// The node that proposed them (as [`Command::Write`]'s).
        origin: u64,
        /// The highest meta barrier of the writes (as [`Command::Write`]'s).
        meta_applied: u64,
        /// The proposing node's number for this proposal (0: none): its state machine tells
        /// the waiting writers as soon as it applied the entry.
        #[serde(default)]
        proposal: u64,
    },
    /// A new partition (a table or scope) with its key layout; a no-op where it exists.
    CreatePartition {
        /// The partition's name.
        name: String,
        /// Its key layout.
        layout: KeyLayout,
    },
    /// Removes a partition and its keys; a no-op where it does not exist.
    DropPartition {
        /// The partition's name.
        name: String,
    },
}

impl Command {
    /// The bytes of the keys, values and partition names it carries (see
    /// [`WriteBatch::bytes`]).
    pub fn bytes(&self) -> usize {
        match self {
            Self::Write { batch, .. } => batch.bytes(),
            Self::Writes { batches, .. } => batches.iter().map(|b| b.bytes()).sum(),
            Self::CreatePartition { name, .. } | Self::DropPartition { name } => name.len(),
        }
    }

    /// How many operations its writes hold.
    pub fn ops(&self) -> usize {
        match self {
            Self::Write { batch, .. } => batch.len(),
            Self::Writes { batches, .. } => batches.iter().map(|b| b.len()).sum(),
            Self::CreatePartition { .. } | Self::DropPartition { .. } => 0,
        }
    }

    /// A write of `batch` proposed by no node in particular.
    pub fn write(batch: WriteBatch) -> Self {
        Self::Write {
            batch: batch.into(),
            origin: 0,
            meta_applied: 0,
        }
    }
}

/// What applying one log entry answers (every entry answers one, blank and membership entries
/// included).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Applied {
    /// The entry's log index.
    pub index: u64,
    /// Why a write was not made, the same on every replica (its partition is gone); the entry
    /// still counts as applied.
    pub refused: Option<String>,
    /// For [`Command::Writes`]: why each write was refused (`None`: made), in order.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub parts: Vec<Option<String>>,
}

/// A member as every group's membership records it: where peers reach it and where clients
/// are sent (a refused write names the leader's client URL), so a node added to a running
/// cluster is known to all without a change of their configuration files.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Member {
    /// Its RPC address (`host:port`). Named as openraft's `BasicNode` named it, so
    /// memberships stored before client URLs were recorded still read.
    #[serde(rename = "addr")]
    pub rpc_addr: String,
    /// Its client URL (`http://host:port`, no trailing slash; empty when not recorded).
    #[serde(default)]
    pub api_url: String,
}

impl Member {
    /// A member at `rpc_addr` serving clients at `api_url`.
    pub fn new(rpc_addr: impl Into<String>, api_url: impl Into<String>) -> Self {
        Self {
            rpc_addr: rpc_addr.into(),
            api_url: api_url.into().trim_end_matches('/').to_string(),
        }
    }
}

openraft::declare_raft_types!(
    /// KalamDB's Raft groups: u64 node ids, members with their RPC and client addresses.
    pub TypeConfig:
        D = Command,
        R = Applied,
        NodeId = u64,
        Node = Member,
        Entry = openraft::Entry<TypeConfig>,
        SnapshotData = crate::snapshot::SnapshotBytes,
        AsyncRuntime = openraft::TokioRuntime,
);

/// The bytes of the writes a log entry carries ([`Command::bytes`]; 0 for blank and
/// membership entries).
pub(crate) fn entry_bytes(entry: &openraft::Entry<TypeConfig>) -> usize {
    match &entry.payload {
        openraft::EntryPayload::Normal(command) => command.bytes(),
        _ => 0,
    }
}

/// Encodes a value for the log or a snapshot (MessagePack).
pub(crate) fn encode<T: Serialize>(value: &T) -> Result<Vec<u8>, rmp_serde::encode::Error> {
    // Named fields: openraft types skip some when empty, which a positional form would misread.
    rmp_serde::to_vec_named(value)
}

/// Decodes what [`encode`] wrote.
pub(crate) fn decode<T: serde::de::DeserializeOwned>(
    bytes: &[u8],
) -> Result<T, rmp_serde::decode::Error> {
    rmp_serde::from_slice(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A batch as logs written before keys and values were byte strings stored it.
    #[derive(Serialize)]
    enum OldOp {
        Put {
            partition: String,
            key: Vec<u8>,
            value: Vec<u8>,
        },
    }

    #[derive(Serialize)]
    struct OldBatch {
        ops: Vec<OldOp>,
    }

    #[test]
    fn batches_encode_bytes_compactly_and_old_entries_still_decode() {
        let mut batch = WriteBatch::new();
        batch.put("tbl/a", vec![7; 64], vec![200; 1000]);
        let command = Command::write(batch.clone());
        let bytes = encode(&command).unwrap();
        assert!(
            bytes.len() < 1150,
            "{} bytes: keys and values as bin",
            bytes.len()
        );
        assert_eq!(decode::<Command>(&bytes).unwrap(), command);

        let old = OldBatch {
            ops: vec![OldOp::Put {
                partition: "tbl/a".into(),
                key: vec![7; 64],
                value: vec![200; 1000],
            }],
        };
        let old_bytes = encode(&old).unwrap();
        assert!(
            old_bytes.len() > 2000,
            "numbers above 127 took two bytes each"
        );
        assert_eq!(decode::<WriteBatch>(&old_bytes).unwrap(), batch);
    }
}
