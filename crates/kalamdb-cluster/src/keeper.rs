//! Keeps a group's Raft log short (docs/cluster.md §8): a few times a second, on every member,
//! it records a snapshot (cheap: a log id, see [`crate::snapshot`]) and purges the entries no
//! member needs any more. A leader purges what every member has ([`purge_target`]), so a
//! member a little behind is sent entries, never a snapshot; one that misses more than the
//! configured number of entries (down, or far behind) gets a snapshot instead. A follower
//! keeps a short tail for the followers it may lead after a failover. Entries so live for a
//! moment, and most are deleted while still in the store's memtable, never written to a file.

use crate::types::TypeConfig;
use openraft::{Raft, RaftMetrics, ServerState};
use std::time::Duration;

/// How often a group's log is looked at.
pub(crate) const PERIOD: Duration = Duration::from_millis(200);

/// Entries a follower keeps behind what it applied, for the members it may lead.
pub(crate) const FOLLOWER_TAIL: u64 = 64;

/// Up to which index `metrics`' node may purge its log, at most `keep` entries behind what it
/// applied being kept for a member that lacks them; `None` when nothing may go.
pub(crate) fn purge_target(metrics: &RaftMetrics<u64, crate::Member>, keep: u64) -> Option<u64> {
    let applied = metrics.last_applied?.index;
    let target = match (&metrics.state, &metrics.replication) {
        (ServerState::Leader, Some(members)) => {
            // What every other member has; a member that has nothing yet holds it all back.
            let shared = members
                .iter()
                .filter(|(id, _)| **id != metrics.id)
                .map(|(_, matched)| matched.map_or(0, |m| m.index))
                .min()
                .unwrap_or(applied);
            shared.max(applied.saturating_sub(keep)).min(applied)
        }
        (ServerState::Leader, None) => return None,
        _ => applied.saturating_sub(FOLLOWER_TAIL),
    };
    let purged = metrics.purged.map(|p| p.index);
    match purged {
        Some(p) if target <= p => None,
        _ if target == 0 => None,
        _ => Some(target),
    }
}

/// Runs [`purge_target`] on `raft` every [`PERIOD`] until the group shuts down: a snapshot is
/// recorded when entries were applied since the last one, and openraft purges up to the
/// target or the latest snapshot, whichever is lower.
pub(crate) async fn keep(raft: Raft<TypeConfig>, keep: u64) {
    let mut ticks = tokio::time::interval(PERIOD);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticks.tick().await;
        let metrics = raft.metrics().borrow().clone();
        if metrics.running_state.is_err() {
            return;
        }
        let Some(target) = purge_target(&metrics, keep) else {
            continue;
        };
        let snapshot = metrics.snapshot.map_or(0, |s| s.index);
        let applied = metrics.last_applied.map_or(0, |a| a.index);
        if snapshot < target && applied > snapshot && raft.trigger().snapshot().await.is_err() {
            return;
        }
        // openraft purges only what a snapshot covers: up to the previous one now, the rest
        // at a later tick once the one just asked for is recorded.
        if snapshot > metrics.purged.map_or(0, |p| p.index)
            && raft
                .trigger()
                .purge_log(target.min(snapshot))
                .await
                .is_err()
        {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use openraft::{CommittedLeaderId, LogId};
    use std::collections::BTreeMap;

    fn id(index: u64) -> LogId<u64> {
        LogId::new(CommittedLeaderId::new(1, 1), index)
    }

    fn metrics(
        state: ServerState,
        applied: u64,
        purged: Option<u64>,
    ) -> RaftMetrics<u64, crate::Member> {
        let mut m = RaftMetrics::new_initial(1);
        m.state = state;
        m.last_applied = Some(id(applied));
        m.purged = purged.map(id);
        m
    }

    #[test]
    fn a_leader_purges_what_every_member_has_up_to_a_bound() {
        let mut m = metrics(ServerState::Leader, 1_000, None);
        m.replication = Some(BTreeMap::from([
            (1, Some(id(1_000))),
            (2, Some(id(990))),
            (3, Some(id(700))),
        ]));
        assert_eq!(purge_target(&m, 50_000), Some(700));
        // A member that has nothing (a learner just added) holds everything back ...
        m.replication = Some(BTreeMap::from([(2, Some(id(990))), (4, None)]));
        assert_eq!(purge_target(&m, 50_000), None);
        // ... until it misses more than `keep` entries: then it will get a snapshot.
        assert_eq!(purge_target(&m, 300), Some(700));
        // Nothing new since the last purge.
        m.replication = Some(BTreeMap::from([(2, Some(id(990))), (3, Some(id(700)))]));
        m.purged = Some(id(700));
        assert_eq!(purge_target(&m, 50_000), None);
        // Not yet told who the members are.
        m.replication = None;
        assert_eq!(purge_target(&m, 50_000), None);
    }

    #[test]
    fn a_follower_keeps_a_tail() {
        let m = metrics(ServerState::Follower, 1_000, Some(10));
        assert_eq!(purge_target(&m, 50_000), Some(1_000 - FOLLOWER_TAIL));
        let young = metrics(ServerState::Follower, FOLLOWER_TAIL, None);
        assert_eq!(purge_target(&young, 50_000), None);
        let mut none = metrics(ServerState::Learner, 5, None);
        none.last_applied = None;
        assert_eq!(purge_target(&none, 50_000), None);
    }
}
