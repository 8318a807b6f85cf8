//! Why a node's groups could not start, or a write was not taken.

/// Why the groups could not start, or a write was not taken.
#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    /// The node's store failed.
    #[error("cluster storage: {0}")]
    Store(#[from] kalamdb_store::StoreError),
    /// openraft refused the configuration or stopped.
    #[error("raft: {0}")]
    Raft(String),
    /// The group has no leader on this node; `leader` is the one it knows of, if any.
    #[error("not the leader of group {group} (leader: {leader:?})")]
    NotLeader {
        /// The group.
        group: u64,
        /// Its leader, when one is known.
        leader: Option<u64>,
    },
    /// The mTLS settings could not be loaded.
    #[error("cluster TLS: {0}")]
    Tls(String),
    /// No such group in the map.
    #[error("no group {0}")]
    NoGroup(u64),
    /// A membership change or transfer failed for now (the reason as the group's leader
    /// gave it): run it again.
    #[error("group {group}: {why}")]
    Membership {
        /// The group.
        group: u64,
        /// Why.
        why: String,
    },
    /// A membership change or transfer cannot be made as asked.
    #[error("group {group}: {why}")]
    MembershipRefused {
        /// The group.
        group: u64,
        /// Why.
        why: String,
    },
}

impl ClusterError {
    /// The same refusal for another writer (a store failure passes on as its message).
    pub(crate) fn share(&self) -> Self {
        match self {
            Self::NotLeader { group, leader } => Self::NotLeader {
                group: *group,
                leader: *leader,
            },
            Self::NoGroup(group) => Self::NoGroup(*group),
            Self::Raft(why) => Self::Raft(why.clone()),
            other => Self::Raft(other.to_string()),
        }
    }
}
