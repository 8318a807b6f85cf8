//! Raft replication for KalamDB clusters (`docs/cluster.md`), on openraft 0.9.
//!
//! - `error`: why groups could not start or a write was not taken ([`ClusterError`]);
//! - [`types`]: the type configuration of every group, the [`Command`]s a log carries (the
//!   engine's atomic write batches and partition changes) and what applying one answers;
//! - [`log_store`]: a group's Raft log, vote and purge/commit marks in one partition of the
//!   node's store;
//! - [`state_machine`]: applies committed commands to the node's store, with the applied log
//!   id and membership written in the same atomic batch (exactly-once apply across crashes),
//!   and builds and installs snapshots;
//! - [`snapshot`]: a snapshot's bytes, dumped from the store only when a member needs them;
//! - [`network`]: the internal RPC carrying openraft's messages between nodes;
//! - [`tls`]: mTLS on that RPC;
//! - [`shard`]: which group holds which users' rows and which SHARED tables;
//! - `keeper`: keeps each group's log short (cheap snapshots, purges of what every member
//!   has);
//! - [`leadership`]: moving a group's leadership to a chosen member, and confirming one (read
//!   index);
//! - [`membership`]: adding and removing members of every group, each change on its leader;
//! - `proposer`: group commit of the writes a node proposes to a group it leads;
//! - [`node`]: a node's groups (meta and data) over its store, behind one RPC listener;
//! - [`calls`]: requests one member's engine makes of another's over that listener;
//! - [`replicated`]: the engine's store on a cluster node, committing each write through the
//!   group that owns it.
//!
//! The engine stays unaware of Raft: a node hands the batch its commit gate built to the
//! group instead of writing it, and every replica's state machine writes it.

// openraft's traits return its StorageError (224 bytes); the helpers that build it return it too.
#![allow(clippy::result_large_err)]

pub mod calls;
mod error;
mod frame;
mod keeper;
pub mod leadership;
pub mod log_store;
pub mod membership;
pub mod network;
pub mod node;
mod proposer;
pub mod replicated;
pub mod shard;
pub mod snapshot;
pub mod state_machine;
mod streams;
pub mod tls;
pub mod types;

pub use calls::{CallFuture, CallSlot, EngineCalls};
pub use log_store::LogStore;
pub use membership::MemberChange;
pub use node::{ClusterError, ClusterNode, GroupStatus, Proposal, Topology};
pub use replicated::{ReplicatedStore, Route, Router};
pub use state_machine::{AfterApply, ApplyObserver, ApplySlot, Before, StateMachine};
pub use tls::Tls;
pub use types::{Applied, Command, Member, TypeConfig};

/// Reads and decodes the value of `key` in `partition` of `view`; failures as openraft
/// reports them, against `subject`.
pub(crate) fn read_value<T: serde::de::DeserializeOwned>(
    view: &dyn kalamdb_store::StorageRead,
    partition: &str,
    key: &[u8],
    subject: openraft::ErrorSubject<u64>,
) -> Result<Option<T>, openraft::StorageError<u64>> {
    let Some(bytes) = view
        .get(partition, key)
        .map_err(|e| io_error(subject.clone(), openraft::ErrorVerb::Read, e))?
    else {
        return Ok(None);
    };
    types::decode(&bytes)
        .map(Some)
        .map_err(|e| io_error(subject, openraft::ErrorVerb::Read, e))
}

/// Storage failures as openraft reports them.
pub(crate) fn io_error(
    subject: openraft::ErrorSubject<u64>,
    verb: openraft::ErrorVerb,
    e: impl std::fmt::Display,
) -> openraft::StorageError<u64> {
    openraft::StorageError::from_io_error(subject, verb, std::io::Error::other(e.to_string()))
}
