//! Requests one member's engine makes of another's over the RPC port (`POST /engine/{name}`,
//! guarded by the cluster key like the Raft routes): work that must run where a group is led,
//! such as the flush of the scopes a member leads (docs/cluster.md §7). The cluster only
//! carries the bytes; what a call means is the engine's ([`EngineCalls`]).

use std::sync::{Arc, OnceLock};

/// What a call answers: the engine's reply bytes, or why it failed.
pub type CallFuture<'a> =
    std::pin::Pin<Box<dyn std::future::Future<Output = Result<Vec<u8>, String>> + Send + 'a>>;

/// Serves the calls other members make of this node's engine.
pub trait EngineCalls: Send + Sync {
    /// Runs call `name` with `body`.
    fn call(&self, name: String, body: Vec<u8>) -> CallFuture<'_>;
}

/// Where the engine registers itself once open; calls before that are refused (retryable).
pub type CallSlot = Arc<OnceLock<Arc<dyn EngineCalls>>>;
