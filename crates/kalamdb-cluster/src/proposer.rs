//! Group commit of a group's proposals (docs/cluster.md §4): the commands this node hands to
//! a group it leads queue here, and one task per group proposes them. While
//! [`IN_FLIGHT`] of its entries are still unanswered the task waits, and the writes that
//! queued meanwhile go into the next entry together ([`Command::Writes`]): concurrent writers
//! share one log append, one replication round and one apply write instead of paying one
//! each, and a lone writer still goes at once. Commands keep the order they were queued in:
//! it is the order of their log positions. A slot is free again once this node applied the
//! entry and openraft answered it. Whether this node may propose is checked when a command is
//! queued and again when it is proposed ([`may_propose`]).

use crate::error::ClusterError;
use crate::leadership::Holds;
use crate::types::{Applied, Command, TypeConfig};
use openraft::error::{ClientWriteError, ForwardToLeader};
use openraft::{Raft, ServerState};
use std::collections::HashMap;
use std::collections::hash_map::RandomState;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use tokio::sync::{Semaphore, mpsc, oneshot};

/// How many entries of one group this node may have proposed and not yet seen applied.
pub(crate) const IN_FLIGHT: usize = 2;

/// At most this many writes go into one entry.
const MAX_WRITES: usize = 512;

/// And at most about this many bytes of them (one more write may pass it).
const MAX_BYTES: usize = 4 * 1024 * 1024;

/// What a queued command is answered with.
pub(crate) type Answer = oneshot::Receiver<Result<Applied, ClusterError>>;

/// A command waiting in the queue, with where its answer goes.
struct Queued {
    command: Command,
    answer: oneshot::Sender<Result<Applied, ClusterError>>,
}

/// The queue of one group; see the module doc. Dropping it ends the task once the queue is
/// drained.
#[derive(Debug)]
pub(crate) struct Proposer {
    queue: mpsc::UnboundedSender<Queued>,
}

impl Proposer {
    /// Starts the task proposing to `raft`, group `group`, on the current runtime; `holds`
    /// pause it during leadership transfers.
    pub(crate) fn start(
        group: u64,
        raft: Raft<TypeConfig>,
        holds: Holds,
        signals: Signals,
    ) -> Self {
        let (queue, commands) = mpsc::unbounded_channel();
        tokio::spawn(run(group, raft, holds, signals, commands));
        Self { queue }
    }

    /// Queues `command`; the answer comes once this node applied it (or it failed).
    pub(crate) fn submit(&self, group: u64, command: Command) -> Result<Answer, ClusterError> {
        let (answer, answered) = oneshot::channel();
        self.queue
            .send(Queued { command, answer })
            .map_err(|_| ClusterError::Raft(format!("group {group} is shutting down")))?;
        Ok(answered)
    }
}

/// Whether this node may propose to `group` now: it leads it, it applied an entry of its own
/// term (a new leader first applies what earlier leaders committed, so a writer holding the
/// engine's locks never waits behind entries whose apply needs those locks), and no transfer
/// of the leadership is under way (CLUSTER TRANSFER LEADER: retry shortly).
pub(crate) fn may_propose(
    group: u64,
    raft: &Raft<TypeConfig>,
    holds: &Holds,
) -> Result<(), ClusterError> {
    let (state, leader, settled) = {
        let m = raft.metrics();
        let m = m.borrow();
        let settled = m.last_applied.map(|l| l.leader_id.term) == Some(m.current_term);
        (m.state, m.current_leader, settled)
    };
    if state != ServerState::Leader {
        return Err(ClusterError::NotLeader { group, leader });
    }
    if !settled {
        return Err(ClusterError::Raft(format!(
            "group {group}'s new leader is still applying its predecessors' entries; retry"
        )));
    }
    if holds.writes_paused(group) {
        return Err(ClusterError::NotLeader {
            group,
            leader: None,
        });
    }
    Ok(())
}

/// The proposing task of one group.
async fn run(
    group: u64,
    raft: Raft<TypeConfig>,
    holds: Holds,
    signals: Signals,
    mut queue: mpsc::UnboundedReceiver<Queued>,
) {
    let slots = Arc::new(Semaphore::new(IN_FLIGHT));
    let mut carried: Option<Queued> = None;
    loop {
        let Ok(slot) = Arc::clone(&slots).acquire_owned().await else {
            return;
        };
        let first = match carried.take() {
            Some(next) => next,
            None => match queue.recv().await {
                Some(next) => next,
                None => return,
            },
        };
        let mut taken = vec![first];
        if let Command::Write { batch, origin, .. } = &taken[0].command {
            let origin = *origin;
            let mut bytes = batch.bytes();
            while taken.len() < MAX_WRITES && bytes < MAX_BYTES {
                let Ok(next) = queue.try_recv() else { break };
                match &next.command {
                    Command::Write {
                        batch, origin: o, ..
                    } if *o == origin => {
                        bytes += batch.bytes();
                        taken.push(next);
                    }
                    _ => {
                        carried = Some(next);
                        break;
                    }
                }
            }
        }
        // Checked again: the leadership may have moved (and come back) while they queued.
        if let Err(refused) = may_propose(group, &raft, &holds) {
            for q in taken {
                let _ = q.answer.send(Err(refused.share()));
            }
            continue;
        }
        let (command, answers) = combine(taken, &signals);
        let proposal = match &command {
            Command::Writes { proposal, .. } => *proposal,
            _ => 0,
        };
        let signal = signals.register(proposal);
        match raft.client_write_ff(command).await {
            Ok(written) => {
                let signals = signals.clone();
                tokio::spawn(async move {
                    // This node's state machine tells as soon as it applied the entry;
                    // openraft answers after the whole apply batch, and for failures.
                    let applied = tokio::select! {
                        Ok(applied) = signal => Ok(applied),
                        outcome = written => {
                            signals.forget(proposal);
                            outcome_of(group, outcome)
                        }
                    };
                    drop(slot);
                    answer(applied, answers);
                });
            }
            Err(e) => {
                signals.forget(proposal);
                answer(Err(ClusterError::Raft(e.to_string())), answers);
            }
        }
    }
}

/// Where a node's state machines tell its waiting proposals that their entries were applied
/// (by proposal number, unique per process). Shared by the node's groups.
#[derive(Debug, Clone)]
pub(crate) struct Signals {
    waiting: Arc<std::sync::Mutex<HashMap<u64, oneshot::Sender<Applied>>>>,
    next: Arc<AtomicU64>,
}

impl Default for Signals {
    fn default() -> Self {
        // Numbers start at a random point: entries of an earlier process, applied again after
        // a restart, carry numbers this one does not wait for.
        let start = std::hash::BuildHasher::hash_one(&RandomState::new(), 0u8);
        Self {
            waiting: Arc::default(),
            next: Arc::new(AtomicU64::new(start)),
        }
    }
}

impl Signals {
    fn waiting(&self) -> std::sync::MutexGuard<'_, HashMap<u64, oneshot::Sender<Applied>>> {
        self.waiting.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A new proposal number (never 0).
    fn number(&self) -> u64 {
        loop {
            let n = self.next.fetch_add(1, Ordering::Relaxed);
            if n != 0 {
                return n;
            }
        }
    }

    /// Waits for the entry of proposal `n` (0: never told).
    fn register(&self, n: u64) -> oneshot::Receiver<Applied> {
        let (tell, told) = oneshot::channel();
        if n != 0 {
            self.waiting().insert(n, tell);
        }
        told
    }

    fn forget(&self, n: u64) {
        self.waiting().remove(&n);
    }

    /// The entry of proposal `n` was applied here, answering `applied`.
    pub(crate) fn applied(&self, n: u64, applied: Applied) {
        if let Some(tell) = self.waiting().remove(&n) {
            let _ = tell.send(applied);
        }
    }
}

/// One command for what was taken: a partition command alone as it is, writes as one
/// [`Command::Writes`] in order, with a proposal number from `signals`.
fn combine(
    mut taken: Vec<Queued>,
    signals: &Signals,
) -> (Command, Vec<oneshot::Sender<Result<Applied, ClusterError>>>) {
    if taken.len() == 1 && !matches!(taken[0].command, Command::Write { .. }) {
        let Queued { command, answer } = taken.remove(0);
        return (command, vec![answer]);
    }
    let mut batches = Vec::with_capacity(taken.len());
    let mut answers = Vec::with_capacity(taken.len());
    let (mut from, mut barrier) = (0, 0);
    for Queued { command, answer } in taken {
        if let Command::Write {
            batch,
            origin,
            meta_applied,
        } = command
        {
            batches.push(batch);
            from = origin;
            barrier = barrier.max(meta_applied);
        }
        answers.push(answer);
    }
    let command = Command::Writes {
        batches,
        origin: from,
        meta_applied: barrier,
        proposal: signals.number(),
    };
    (command, answers)
}

/// What openraft answered for an entry.
fn outcome_of(
    group: u64,
    outcome: Result<openraft::raft::ClientWriteResult<TypeConfig>, oneshot::error::RecvError>,
) -> Result<Applied, ClusterError> {
    match outcome {
        Ok(Ok(written)) => Ok(written.data),
        Ok(Err(ClientWriteError::ForwardToLeader(ForwardToLeader { leader_id, .. }))) => {
            Err(ClusterError::NotLeader {
                group,
                leader: leader_id,
            })
        }
        Ok(Err(e)) => Err(ClusterError::Raft(e.to_string())),
        Err(_) => Err(ClusterError::Raft(format!(
            "group {group} stopped before answering"
        ))),
    }
}

/// Hands each writer its part of the entry's outcome (a [`Command::Writes`] answers per write
/// in `parts`; a partition command answers as a whole).
fn answer(
    applied: Result<Applied, ClusterError>,
    answers: Vec<oneshot::Sender<Result<Applied, ClusterError>>>,
) {
    for (i, a) in answers.into_iter().enumerate() {
        let mine = match &applied {
            Ok(applied) if applied.parts.is_empty() => Ok(applied.clone()),
            Ok(applied) => Ok(Applied {
                index: applied.index,
                refused: applied.parts.get(i).cloned().flatten(),
                parts: Vec::new(),
            }),
            Err(e) => Err(e.share()),
        };
        let _ = a.send(mine);
    }
}
