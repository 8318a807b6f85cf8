//! Membership changes of every group (docs/cluster.md §9). Adding a node makes it a learner
//! of a group, waits until it holds the group's log (or snapshot), then makes it a voter;
//! removing one takes it out of the group's voters and nodes. A change runs on the group's
//! leader: [`apply_here`] when this node leads it, else the leader runs it for us
//! (`POST /raft/{group}/members`, served by the network module). Changes are idempotent, so a
//! change interrupted half way (a leader lost) is simply run again.

use crate::types::{Member, TypeConfig};
use openraft::error::{ChangeMembershipError, ClientWriteError, ForwardToLeader, RaftError};
use openraft::{ChangeMembers, Raft};
use serde::{Deserialize, Serialize};
use std::collections::BTreeSet;

/// One membership change, the same for every group.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum MemberChange {
    /// Node `id`, reachable as `member`, joins as a voter.
    Add {
        /// Its node id (never reused).
        id: u64,
        /// Its addresses.
        member: Member,
    },
    /// Node `id` leaves.
    Remove {
        /// Its node id.
        id: u64,
    },
}

/// How long a new node may take to catch up with one group before `ADD NODE` gives up (it
/// stays a learner; running the statement again goes on from there).
pub const CATCH_UP: std::time::Duration = std::time::Duration::from_secs(300);

/// Why a group did not make a change.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
pub enum ChangeRefused {
    /// This node does not lead the group; `leader` is the one it knows of.
    #[error("not the group's leader (leader: {leader:?})")]
    NotLeader {
        /// The leader, when known.
        leader: Option<u64>,
    },
    /// The change cannot be made as asked (running it again will not help).
    #[error("{0}")]
    Invalid(String),
    /// The group failed it for now (another change in progress, a slow learner): run it
    /// again.
    #[error("{0}")]
    Failed(String),
}

/// Makes `change` in the group `raft` runs, which this node leads; a change already made
/// answers `Ok` at once. Adding waits until the new node caught up with the group.
pub async fn apply_here(
    raft: &Raft<TypeConfig>,
    change: &MemberChange,
) -> Result<(), ChangeRefused> {
    let membership = raft
        .metrics()
        .borrow()
        .membership_config
        .membership()
        .clone();
    let is_voter = |id: u64| membership.voter_ids().any(|v| v == id);
    match change {
        MemberChange::Add { id, member } => {
            if let Some(known) = membership.get_node(id)
                && known != member
            {
                return Err(ChangeRefused::Invalid(format!(
                    "node {id} is already known at {} ({}): node ids are never reused",
                    known.rpc_addr, known.api_url
                )));
            }
            if is_voter(*id) {
                return Ok(());
            }
            // Blocking: returns once the learner holds the group's log (again, when re-run),
            // at most CATCH_UP (a wrong address would otherwise wait forever).
            let added = tokio::time::timeout(CATCH_UP, raft.add_learner(*id, member.clone(), true))
                .await
                .map_err(|_| {
                    ChangeRefused::Failed(format!(
                        "node {id} did not catch up within {} s (is it running at {}?)",
                        CATCH_UP.as_secs(),
                        member.rpc_addr
                    ))
                })?;
            added.map_err(refused)?;
            raft.change_membership(ChangeMembers::AddVoterIds(BTreeSet::from([*id])), false)
                .await
                .map_err(refused)?;
        }
        MemberChange::Remove { id } => {
            if is_voter(*id) {
                if membership.voter_ids().count() == 1 {
                    return Err(ChangeRefused::Invalid(format!(
                        "node {id} is the group's only voter"
                    )));
                }
                raft.change_membership(ChangeMembers::RemoveVoters(BTreeSet::from([*id])), false)
                    .await
                    .map_err(refused)?;
            } else if membership.get_node(id).is_some() {
                raft.change_membership(ChangeMembers::RemoveNodes(BTreeSet::from([*id])), false)
                    .await
                    .map_err(refused)?;
            }
        }
    }
    Ok(())
}

fn refused(e: RaftError<u64, ClientWriteError<u64, Member>>) -> ChangeRefused {
    match e {
        RaftError::APIError(ClientWriteError::ForwardToLeader(ForwardToLeader {
            leader_id,
            ..
        })) => ChangeRefused::NotLeader { leader: leader_id },
        RaftError::APIError(ClientWriteError::ChangeMembershipError(
            ChangeMembershipError::InProgress(e),
        )) => ChangeRefused::Failed(e.to_string()),
        RaftError::APIError(ClientWriteError::ChangeMembershipError(e)) => {
            ChangeRefused::Invalid(e.to_string())
        }
        other => ChangeRefused::Failed(other.to_string()),
    }
}
