//! What the engine can see of the cluster it runs in (`system.cluster`,
//! `system.cluster_groups`, readiness). A lone server has none; a cluster member's server
//! registers a [`ClusterView`] once its groups run (`AppContext::set_cluster_view`). The
//! engine knows no Raft: the view answers in plain rows.

use std::sync::{Arc, OnceLock};

/// One member as this node sees it.
#[derive(Debug, Clone, Default)]
pub struct MemberInfo {
    /// Its node id.
    pub node_id: u64,
    /// Its RPC address.
    pub rpc_addr: String,
    /// Its client URL.
    pub api_addr: String,
    /// Whether it is this node.
    pub is_self: bool,
    /// Its role in the meta group: leader, follower, learner.
    pub role: String,
    /// active, or unreachable when the meta leader (this node) cannot replicate to it; unknown
    /// from a follower's point of view.
    pub status: String,
    /// How many groups it leads, as far as this node knows.
    pub groups_leading: u32,
    /// The meta group's term.
    pub current_term: Option<u64>,
    /// The meta group's last applied index (this node only).
    pub last_applied: Option<u64>,
    /// The meta leader's last log index, when this node leads it.
    pub leader_last_log: Option<u64>,
    /// The meta group's snapshot index (this node only).
    pub snapshot_index: Option<u64>,
    /// Meta entries it lacks, when this node leads the meta group.
    pub lag: Option<u64>,
}

/// One group as this node sees it.
#[derive(Debug, Clone, Default)]
pub struct GroupInfo {
    /// The group id (0: meta).
    pub group: u64,
    /// meta, user_shard, shared_shard.
    pub kind: String,
    /// The current term.
    pub term: u64,
    /// The node this node voted for in the current term.
    pub vote: Option<u64>,
    /// The last log index.
    pub last_log: Option<u64>,
    /// The last applied index.
    pub applied: Option<u64>,
    /// The snapshot's index.
    pub snapshot: Option<u64>,
    /// The last purged index.
    pub purged: Option<u64>,
    /// The last committed index this node knows of.
    pub committed: Option<u64>,
    /// This node's role: leader, follower, candidate, learner, shutdown.
    pub state: String,
    /// The leader this node knows of.
    pub leader: Option<u64>,
    /// Milliseconds since a quorum acknowledged the leader (this node leading only).
    pub millis_since_quorum_ack: Option<u64>,
}

/// A membership change the engine asks of the cluster.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MembershipChange {
    /// Node `node_id`, started to join, becomes a voter of every group.
    Add {
        /// Its node id.
        node_id: u64,
        /// Its RPC address (`host:port`).
        rpc_addr: String,
        /// Its client URL.
        api_url: String,
    },
    /// Node `node_id` leaves every group.
    Remove {
        /// Its node id.
        node_id: u64,
    },
}

/// Why a cluster operation did not complete.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClusterOpError {
    /// It cannot be done as asked (a node that is not a voter, an address already taken).
    Invalid(String),
    /// It failed for now (no leader, a slow node, another change in progress): run it again.
    Unavailable(String),
}

/// What a [`ClusterView`] operation that waits for the cluster resolves to.
pub type ClusterFuture<'a> =
    std::pin::Pin<Box<dyn std::future::Future<Output = Result<(), ClusterOpError>> + Send + 'a>>;

/// One member's answer to an engine call ([`ClusterView::call_member`]).
pub type CallFuture<'a> =
    std::pin::Pin<Box<dyn std::future::Future<Output = Result<Vec<u8>, String>> + Send + 'a>>;

/// Each member's answer to an engine call, by node id ([`ClusterView::call_others`]).
pub type CallsFuture<'a> = std::pin::Pin<
    Box<dyn std::future::Future<Output = Vec<(u64, Result<Vec<u8>, String>)>> + Send + 'a>,
>;

/// What [`ClusterView::read_marks`] resolves to.
pub type ReadMarksFuture<'a> = std::pin::Pin<
    Box<dyn std::future::Future<Output = Result<Vec<(u64, u64)>, String>> + Send + 'a>,
>;

/// The cluster as the engine sees it; see the module doc.
pub trait ClusterView: Send + Sync + std::fmt::Debug {
    /// The cluster's name.
    fn cluster_id(&self) -> String;
    /// This node's id.
    fn node_id(&self) -> u64;
    /// Every member.
    fn members(&self) -> Vec<MemberInfo>;
    /// Every group on this node.
    fn groups(&self) -> Vec<GroupInfo>;
    /// Whether every group has a leader and this node applied what its logs hold.
    fn ready(&self) -> bool;
    /// The client URL of the meta group's leader when another node leads it.
    fn meta_leader_url(&self) -> Option<String>;
    /// Starts a snapshot of every group on this node; returns how many.
    fn snapshot(&self) -> usize;
    /// This node stands for leader of every group, or of `group`; returns how many.
    fn elect(&self, group: Option<u64>) -> usize;
    /// Makes `change` in every group (each on its leader); resolves once all made it.
    fn change_members(&self, change: MembershipChange) -> ClusterFuture<'_>;
    /// Hands the leadership of every group (or of `group`) to voter `node`; resolves once it
    /// leads them.
    fn transfer_leader(&self, node: u64, group: Option<u64>) -> ClusterFuture<'_>;
    /// Makes engine call `name` of every other member (see `kalamdb_cluster::calls`),
    /// together; each member's answer, by node id.
    fn call_others<'a>(
        &'a self,
        name: &'a str,
        body: Vec<u8>,
        timeout: std::time::Duration,
    ) -> CallsFuture<'a>;
    /// Makes engine call `name` of member `node` alone.
    fn call_member<'a>(
        &'a self,
        node: u64,
        name: &'a str,
        body: Vec<u8>,
        timeout: std::time::Duration,
    ) -> CallFuture<'a>;
    /// Every group's read index, as its leader confirms it with a quorum (linearizable
    /// reads: a read that waits until this node applied them sees every write acknowledged
    /// before it started); an error says why not.
    fn read_marks(&self) -> ReadMarksFuture<'_>;
    /// Each group's last applied log index on this node, by group (read-your-writes marks).
    fn applied(&self) -> Vec<(u64, u64)>;
    /// Resolves to whether this node applied each group at least to its mark in `marks`
    /// within `timeout` (unknown groups are ignored).
    fn wait_applied<'a>(
        &'a self,
        marks: &'a [(u64, u64)],
        timeout: std::time::Duration,
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = bool> + Send + 'a>>;
}

/// Where the view is registered.
pub type ClusterSlot = Arc<OnceLock<Arc<dyn ClusterView>>>;
