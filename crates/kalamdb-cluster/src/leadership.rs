//! Moving a group's leadership to a chosen voter (`CLUSTER TRANSFER LEADER`, docs/cluster.md
//! §9). openraft 0.9 has no transfer, so one is made of what it has: for a short hold, every
//! member but the target stops starting elections, and the leader stops sending heartbeats
//! and refuses new writes (retryable `NOT_LEADER`), so nothing refreshes the followers'
//! leader lease. Once it runs out, the target's election timer fires and it is the only
//! candidate. A hold ends by itself (a member that never hears the release still recovers) and
//! early once the target leads.
//!
//! Also confirming a leadership: a leader's read index once a quorum acknowledged it
//! ([`confirmed_read_index`], for linearizable reads).

use crate::types::TypeConfig;
use openraft::Raft;
use openraft::error::{CheckIsLeaderError, RaftError};
use std::collections::HashMap;
use std::sync::Arc;
use tokio::time::Instant;

/// How long a transfer holds the other members' elections at most.
pub const HOLD: std::time::Duration = std::time::Duration::from_secs(5);

/// The holds on this node's groups, by group: until when.
#[derive(Debug, Clone, Default)]
pub struct Holds {
    until: Arc<std::sync::Mutex<HashMap<u64, Instant>>>,
}

impl Holds {
    fn all(&self) -> std::sync::MutexGuard<'_, HashMap<u64, Instant>> {
        // Nothing panics while holding it; a poisoned map is still a map.
        self.until.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Holds `raft` (group `group`) for `millis` (0: releases it): no election starts here,
    /// and when this node leads, no heartbeat leaves and no write is taken.
    pub fn hold(&self, group: u64, raft: &Raft<TypeConfig>, millis: u64) {
        let held = millis > 0;
        let until = Instant::now() + std::time::Duration::from_millis(millis.min(HOLD_MAX_MS));
        if held {
            self.all().insert(group, until);
        } else {
            self.all().remove(&group);
        }
        raft.runtime_config().elect(!held);
        raft.runtime_config().heartbeat(!held);
        if held {
            let (holds, raft) = (self.clone(), raft.clone());
            tokio::spawn(async move {
                tokio::time::sleep_until(until).await;
                let mine = {
                    let mut all = holds.all();
                    let mine = all.get(&group) == Some(&until);
                    if mine {
                        all.remove(&group);
                    }
                    mine
                };
                // A later hold of the group ends by its own timer.
                if mine {
                    raft.runtime_config().elect(true);
                    raft.runtime_config().heartbeat(true);
                }
            });
        }
    }

    /// Whether writes of `group` are refused here (a transfer holds it).
    pub fn writes_paused(&self, group: u64) -> bool {
        let all = self.all();
        !all.is_empty() && all.get(&group).is_some_and(|u| *u > Instant::now())
    }
}

/// The longest hold a peer may ask for.
const HOLD_MAX_MS: u64 = 2 * HOLD.as_millis() as u64;

/// How long a member waits for a leader's read index.
pub(crate) const READ_INDEX_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(3);

/// Why a node did not give a read index.
#[derive(Debug, serde::Serialize, serde::Deserialize)]
pub(crate) enum ReadIndexRefused {
    /// It does not lead the group; the leader it knows of.
    NotLeader(Option<u64>),
    /// It could not confirm its leadership (no quorum answered) or stopped.
    Failed(String),
}

/// The read index of a group this node leads (openraft's `get_read_log_id`): the larger of
/// its commit index and its own first entry of the term (so a new leader's covers everything
/// its predecessors committed), taken before a quorum confirmed the leadership with
/// heartbeats. Refused while `held` (a transfer: those heartbeats would renew the followers'
/// lease the transfer waits out) and after `timeout`.
pub(crate) async fn confirmed_read_index(
    raft: &Raft<TypeConfig>,
    held: bool,
    timeout: std::time::Duration,
) -> Result<u64, ReadIndexRefused> {
    if held {
        return Err(ReadIndexRefused::Failed(
            "the group's leadership is being transferred; retry".into(),
        ));
    }
    let Ok(answer) = tokio::time::timeout(timeout, raft.get_read_log_id()).await else {
        return Err(ReadIndexRefused::Failed(format!(
            "no quorum confirmed the leadership within {} ms",
            timeout.as_millis()
        )));
    };
    match answer {
        Ok((read, _)) => Ok(read.map_or(0, |l| l.index)),
        Err(RaftError::APIError(CheckIsLeaderError::ForwardToLeader(f))) => {
            Err(ReadIndexRefused::NotLeader(f.leader_id))
        }
        Err(e) => Err(ReadIndexRefused::Failed(e.to_string())),
    }
}
