//! A node's Raft groups (docs/cluster.md §3): the meta group and every data group of the
//! [`ShardMap`], each with its log and state machine in the node's one store, all served to
//! peers by one RPC listener. Every initial member initializes the groups its store does not
//! have yet, with the same member list; restarted nodes reload theirs from the store.

use crate::calls::CallSlot;
pub use crate::error::ClusterError;
use crate::leadership::{HOLD, Holds, READ_INDEX_TIMEOUT, ReadIndexRefused, confirmed_read_index};
use crate::membership::{ChangeRefused, MemberChange};
use crate::network::{Groups, KEY_HEADER, Network, router_with_key};
use crate::proposer::{Proposer, Signals};
use crate::shard::{META, ShardMap};
use crate::state_machine::{ApplySlot, Ownership, Progress};
use crate::types::{Applied, Command, Member, TypeConfig, decode, encode};
use crate::{LogStore, StateMachine};
use kalamdb_store::StorageBackend;
use openraft::error::{InitializeError, RaftError};
use openraft::{Raft, ServerState};
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

/// The pause before a read index is asked again (a leader being elected or moving).
const READ_INDEX_RETRY: std::time::Duration = std::time::Duration::from_millis(50);

/// How long a transfer waits for one member to take its hold (a member that does not may win
/// the election instead; the transfer then says so).
const HOLD_RPC: std::time::Duration = std::time::Duration::from_secs(1);

/// Entries a group may have in flight on a node that still counts as ready.
const READY_LAG: u64 = 100;

/// What a node needs to know to run its groups.
#[derive(Debug, Clone)]
pub struct Topology {
    /// This node's id.
    pub node_id: u64,
    /// The initial members, this node included (with `join`, at least this node). Their client
    /// URLs also stand in for ones a stored membership lacks (memberships written before
    /// members carried them).
    pub members: BTreeMap<u64, Member>,
    /// This node joins a running cluster: it initializes nothing and waits to be added.
    pub join: bool,
    /// The groups.
    pub map: ShardMap,
    /// openraft's settings (timing, snapshots) every group uses.
    pub raft: openraft::Config,
    /// The members' shared secret every RPC carries (`None`: an open RPC port).
    pub key: Option<String>,
    /// mTLS on the RPC port (`None`: plain TCP, for a private network).
    pub tls: Option<crate::Tls>,
}

/// One group as this node sees it (a row of `system.cluster_groups`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupStatus {
    /// The group.
    pub group: u64,
    /// This node's role in it: leader, follower, candidate, learner, shutdown.
    pub state: &'static str,
    /// The leader it knows of.
    pub leader: Option<u64>,
    /// The current term.
    pub term: u64,
    /// The last log index.
    pub last_log: Option<u64>,
    /// The last applied index.
    pub applied: Option<u64>,
    /// The index of the current snapshot.
    pub snapshot: Option<u64>,
    /// The last purged log index.
    pub purged: Option<u64>,
}

/// A command handed to its group's leader ([`ClusterNode::submit`]).
pub struct Proposal {
    group: u64,
    answer: crate::proposer::Answer,
}

impl std::fmt::Debug for Proposal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Proposal")
            .field("group", &self.group)
            .finish()
    }
}

impl Proposal {
    /// Waits until the command is committed and applied on this node.
    pub async fn wait(self) -> Result<Applied, ClusterError> {
        let group = self.group;
        self.answer.await.unwrap_or_else(|_| {
            Err(ClusterError::Raft(format!(
                "group {group} stopped before answering"
            )))
        })
    }
}

/// A node's running groups and their RPC listener.
pub struct ClusterNode {
    node_id: u64,
    map: ShardMap,
    meta_progress: Progress,
    progress: HashMap<u64, Progress>,
    groups: Groups,
    /// Each group's queue of this node's proposals.
    proposers: HashMap<u64, Proposer>,
    /// Each group's log upkeep ([`crate::keeper`]).
    keepers: Vec<tokio::task::JoinHandle<()>>,
    server: tokio::task::JoinHandle<()>,
    http: reqwest::Client,
    /// `https` with mTLS, else `http`.
    scheme: &'static str,
    key: Option<Arc<str>>,
    holds: Holds,
    configured: BTreeMap<u64, Member>,
    calls: CallSlot,
}

impl std::fmt::Debug for ClusterNode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClusterNode")
            .field("node_id", &self.node_id)
            .field("map", &self.map)
            .finish_non_exhaustive()
    }
}

impl ClusterNode {
    /// Starts every group of `topology.map` over `backend`, with the keys `ownership(group)`
    /// names, serving peers on `listener`; initializes the groups that are new when this node
    /// is one of the initial members.
    pub async fn start(
        topology: Topology,
        backend: Arc<dyn StorageBackend>,
        ownership: impl Fn(u64) -> Arc<dyn Ownership>,
        listener: tokio::net::TcpListener,
    ) -> Result<Self, ClusterError> {
        Self::start_with_hook(topology, backend, ownership, listener, ApplySlot::default()).await
    }

    /// [`Self::start`], telling `hook` (once set) about every write any group applies here.
    pub async fn start_with_hook(
        topology: Topology,
        backend: Arc<dyn StorageBackend>,
        ownership: impl Fn(u64) -> Arc<dyn Ownership>,
        listener: tokio::net::TcpListener,
        hook: ApplySlot,
    ) -> Result<Self, ClusterError> {
        let mut http =
            reqwest::Client::builder().connect_timeout(std::time::Duration::from_secs(2));
        if let Some(tls) = &topology.tls {
            http = tls.client(http);
        }
        let http = http
            .build()
            .map_err(|e| ClusterError::Raft(e.to_string()))?;
        let mut groups = HashMap::new();
        let meta_progress = Progress::default();
        let mut progress = HashMap::new();
        let key: Option<Arc<str>> = topology.key.as_deref().map(Arc::from);
        let signals = Signals::default();
        // One set of kept stream connections for every group: a peer's are shared.
        let streams = crate::network::Streams::default();
        for group in topology.map.groups() {
            let log = LogStore::open(Arc::clone(&backend), format!("raft.{group}.log"))?;
            let sm = StateMachine::open_group(
                Arc::clone(&backend),
                format!("raft.{group}.sm"),
                ownership(group),
                (group, topology.node_id),
                (
                    Arc::clone(&hook),
                    meta_progress.clone(),
                    {
                        // The meta group's own progress is the one the data groups wait on.
                        let own = if group == META {
                            meta_progress.clone()
                        } else {
                            Progress::default()
                        };
                        progress.insert(group, own.clone());
                        own
                    },
                    signals.clone(),
                ),
            )?;
            let config = openraft::Config {
                cluster_name: format!("group-{group}"),
                snapshot_max_chunk_size: crate::network::SNAPSHOT_CHUNK_BYTES,
                ..topology.raft.clone()
            }
            .validate()
            .map_err(|e| ClusterError::Raft(e.to_string()))?;
            let raft = Raft::new(
                topology.node_id,
                Arc::new(config),
                Network::new(http.clone(), group)
                    .with_streams(streams.clone())
                    .with_key(key.clone())
                    .with_tls(topology.tls.is_some()),
                log,
                sm,
            )
            .await
            .map_err(|e| ClusterError::Raft(e.to_string()))?;
            groups.insert(group, raft);
        }
        let holds = Holds::default();
        let proposers = groups
            .iter()
            .map(|(g, raft)| {
                (
                    *g,
                    Proposer::start(*g, raft.clone(), holds.clone(), signals.clone()),
                )
            })
            .collect();
        let groups: Groups = Arc::new(groups);
        let calls = CallSlot::default();
        let serving = router_with_key(
            Arc::clone(&groups),
            holds.clone(),
            Arc::clone(&calls),
            key.clone(),
        );
        let server = match &topology.tls {
            Some(tls) => {
                let listener = crate::tls::TlsListener::new(listener, tls);
                tokio::spawn(async move {
                    let _ = axum::serve(listener, serving).await;
                })
            }
            None => tokio::spawn(async move {
                let _ = axum::serve(listener, serving).await;
            }),
        };
        // Every initial member initializes its new groups with the same member list (safe in
        // openraft; the first to win an election leads), so the cluster forms whichever
        // members are up. A store that already has a group's log is never re-initialized.
        if !topology.join && topology.members.contains_key(&topology.node_id) {
            let members = &topology.members;
            for raft in groups.values() {
                let initialized = match raft.is_initialized().await {
                    Ok(initialized) => initialized,
                    Err(e) => {
                        server.abort();
                        return Err(ClusterError::Raft(e.to_string()));
                    }
                };
                if initialized {
                    continue;
                }
                match raft.initialize(members.clone()).await {
                    Ok(()) | Err(RaftError::APIError(InitializeError::NotAllowed(_))) => {}
                    Err(e) => {
                        server.abort();
                        return Err(ClusterError::Raft(e.to_string()));
                    }
                }
            }
        }
        let keep = topology.raft.max_in_snapshot_log_to_keep;
        let keepers = groups
            .values()
            .map(|raft| tokio::spawn(crate::keeper::keep(raft.clone(), keep)))
            .collect();
        Ok(Self {
            node_id: topology.node_id,
            map: topology.map,
            meta_progress,
            progress,
            groups,
            proposers,
            keepers,
            server,
            http,
            scheme: if topology.tls.is_some() {
                "https"
            } else {
                "http"
            },
            key,
            holds,
            configured: topology.members,
            calls,
        })
    }

    /// Where the engine registers the calls other members make of it ([`crate::calls`]).
    pub fn engine_calls(&self) -> &CallSlot {
        &self.calls
    }

    /// Makes call `name` of member `to`'s engine, waiting at most `timeout` for its answer.
    pub async fn call(
        &self,
        to: u64,
        name: &str,
        body: Vec<u8>,
        timeout: std::time::Duration,
    ) -> Result<Vec<u8>, String> {
        self.post_bytes(to, META, &format!("engine/{name}"), body, timeout)
            .await
    }

    /// This node's id.
    pub fn node_id(&self) -> u64 {
        self.node_id
    }

    /// The shard map.
    pub fn map(&self) -> ShardMap {
        self.map
    }

    /// A group's Raft handle.
    pub fn group(&self, group: u64) -> Option<&Raft<TypeConfig>> {
        self.groups.get(&group)
    }

    /// Proposes `command` to `group` and waits until this node (its leader) applied it.
    pub async fn write(&self, group: u64, command: Command) -> Result<Applied, ClusterError> {
        self.submit(group, command).await?.wait().await
    }

    /// Hands `command` to `group`'s leader (this node) without waiting for it to commit:
    /// commands submitted one after another take log positions in that order.
    pub async fn submit(&self, group: u64, command: Command) -> Result<Proposal, ClusterError> {
        let raft = self.group(group).ok_or(ClusterError::NoGroup(group))?;
        crate::proposer::may_propose(group, raft, &self.holds)?;
        let proposer = self
            .proposers
            .get(&group)
            .ok_or(ClusterError::NoGroup(group))?;
        let answer = proposer.submit(group, command)?;
        Ok(Proposal { group, answer })
    }

    /// Member `id` as the meta group's membership records it (this node's view).
    pub fn member(&self, id: u64) -> Option<Member> {
        let raft = self.group(META)?;
        let metrics = raft.metrics().borrow().clone();
        let member = metrics
            .membership_config
            .membership()
            .get_node(&id)
            .cloned()?;
        Some(self.with_configured_url(id, member))
    }

    /// `member` with the configured client URL of node `id` when the membership lacks one.
    fn with_configured_url(&self, id: u64, mut member: Member) -> Member {
        if member.api_url.is_empty()
            && let Some(known) = self.configured.get(&id)
        {
            member.api_url = known.api_url.clone();
        }
        member
    }

    /// Every member of the meta group (voters and learners) as this node knows them, by id,
    /// with whether it votes.
    pub fn members(&self) -> Vec<(u64, Member, bool)> {
        let Some(raft) = self.group(META) else {
            return Vec::new();
        };
        let metrics = raft.metrics().borrow().clone();
        let membership = metrics.membership_config.membership();
        let voters: Vec<u64> = membership.voter_ids().collect();
        membership
            .nodes()
            .map(|(id, m)| {
                let member = self.with_configured_url(*id, m.clone());
                (*id, member, voters.contains(id))
            })
            .collect()
    }

    /// Makes `change` in every group, each on its leader: the meta group first when a node
    /// joins (it then has the catalog before any row), last when one leaves. Returns once
    /// every group made it; a failure leaves the groups before it changed (run it again).
    pub async fn change_members(&self, change: &MemberChange) -> Result<(), ClusterError> {
        let mut order: Vec<u64> = self.map.groups().collect();
        if matches!(change, MemberChange::Remove { .. }) {
            order.reverse();
        }
        for group in order {
            self.change_group(group, change).await?;
        }
        Ok(())
    }

    /// Makes `change` in `group` on its leader, following leader changes for up to a minute
    /// (catching a new node up has no bound of its own).
    async fn change_group(&self, group: u64, change: &MemberChange) -> Result<(), ClusterError> {
        let raft = self.group(group).ok_or(ClusterError::NoGroup(group))?;
        let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(60);
        loop {
            let leader = raft.metrics().borrow().current_leader;
            let outcome = match leader {
                Some(id) if id == self.node_id => crate::membership::apply_here(raft, change).await,
                Some(id) => self.change_on(id, group, change).await,
                None => Err(ChangeRefused::NotLeader { leader: None }),
            };
            match outcome {
                Ok(()) => return Ok(()),
                Err(ChangeRefused::NotLeader { .. }) if tokio::time::Instant::now() < deadline => {
                    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
                }
                Err(ChangeRefused::Invalid(why)) => {
                    return Err(ClusterError::MembershipRefused { group, why });
                }
                Err(e) => {
                    return Err(ClusterError::Membership {
                        group,
                        why: e.to_string(),
                    });
                }
            }
        }
    }

    /// Asks node `leader` to make `change` in `group` (it answers `NotLeader` when it no
    /// longer leads it).
    async fn change_on(
        &self,
        leader: u64,
        group: u64,
        change: &MemberChange,
    ) -> Result<(), ChangeRefused> {
        let timeout = crate::membership::CATCH_UP + std::time::Duration::from_secs(10);
        match self
            .post::<_, Result<(), ChangeRefused>>(leader, group, "members", change, timeout)
            .await
        {
            Ok(answer) => answer,
            // An unreachable leader is retried like a lost one (until the caller's deadline).
            Err(e) => {
                tracing::debug!(leader, group, error = %e, "membership change: leader unreachable");
                Err(ChangeRefused::NotLeader { leader: None })
            }
        }
    }

    /// Sends `body` to node `to`'s route `/raft/{group}/{route}` and decodes its answer.
    async fn post<B: serde::Serialize, A: serde::de::DeserializeOwned>(
        &self,
        to: u64,
        group: u64,
        route: &str,
        body: &B,
        timeout: std::time::Duration,
    ) -> Result<A, String> {
        let body = encode(body).map_err(|e| e.to_string())?;
        let bytes = self
            .post_bytes(to, group, &format!("raft/{group}/{route}"), body, timeout)
            .await?;
        decode(&bytes).map_err(|e| e.to_string())
    }

    /// Posts `body` to `path` of member `to` (its address as this node, or else `group`'s
    /// membership, knows it); its answer's bytes.
    async fn post_bytes(
        &self,
        to: u64,
        group: u64,
        path: &str,
        body: Vec<u8>,
        timeout: std::time::Duration,
    ) -> Result<Vec<u8>, String> {
        let member = self
            .member(to)
            .or_else(|| {
                let raft = self.group(group)?;
                let metrics = raft.metrics().borrow().clone();
                metrics
                    .membership_config
                    .membership()
                    .get_node(&to)
                    .cloned()
            })
            .ok_or_else(|| format!("node {to} has no known address"))?;
        let mut post = self
            .http
            .post(format!("{}://{}/{path}", self.scheme, member.rpc_addr))
            .timeout(timeout)
            .body(body);
        if let Some(key) = &self.key {
            post = post.header(KEY_HEADER, key.as_ref());
        }
        let sent = post.send().await.map_err(|e| e.to_string())?;
        let status = sent.status();
        let bytes = sent.bytes().await.map_err(|e| e.to_string())?;
        if !status.is_success() {
            return Err(format!(
                "node {to} answered {status}: {}",
                String::from_utf8_lossy(&bytes)
            ));
        }
        Ok(bytes.to_vec())
    }

    /// Hands `group`'s leadership to voter `target` (see [`crate::leadership`]): holds every
    /// other voter's elections and the leader's heartbeats and writes until `target` leads,
    /// at most [`HOLD`]. Returns once `target` leads, as this node sees it.
    pub async fn transfer_leader(&self, group: u64, target: u64) -> Result<(), ClusterError> {
        let raft = self.group(group).ok_or(ClusterError::NoGroup(group))?;
        let metrics = raft.metrics().borrow().clone();
        let voters: Vec<u64> = metrics.membership_config.membership().voter_ids().collect();
        let refused = |why: String| ClusterError::Membership { group, why };
        if !voters.contains(&target) {
            return Err(refused(format!(
                "node {target} is not a voter of group {group}"
            )));
        }
        if metrics.current_leader == Some(target) {
            return Ok(());
        }
        let others: Vec<u64> = voters.into_iter().filter(|v| *v != target).collect();
        let hold = |millis: u64| {
            let others = &others;
            async move {
                for &node in others {
                    if node == self.node_id {
                        self.holds.hold(group, raft, millis);
                    } else if let Err(e) = self
                        .post::<_, Result<(), String>>(node, group, "hold", &millis, HOLD_RPC)
                        .await
                    {
                        // A member not held may win the election instead: the transfer then
                        // reports that the target did not take over.
                        tracing::warn!(node, group, error = %e, "transfer: a member was not held");
                    }
                }
            }
        };
        hold(HOLD.as_millis() as u64).await;
        let until = tokio::time::Instant::now() + HOLD;
        let mut leader = metrics.current_leader;
        while leader != Some(target) && tokio::time::Instant::now() < until {
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
            leader = raft.metrics().borrow().current_leader;
        }
        hold(0).await;
        if leader == Some(target) {
            Ok(())
        } else {
            Err(ClusterError::Membership {
                group,
                why: format!(
                    "node {target} did not take over within {} s (leader: {leader:?})",
                    HOLD.as_secs()
                ),
            })
        }
    }

    /// Each group's applied index on this node, as its state machine tells it (a writer's
    /// entry is counted before the writer is answered).
    pub fn applied_marks(&self) -> Vec<(u64, u64)> {
        let mut marks: Vec<(u64, u64)> = self
            .progress
            .iter()
            .map(|(g, p)| (*g, p.applied()))
            .collect();
        marks.sort_unstable();
        marks
    }

    /// Whether this node applied each group at least to its mark in `marks` within `timeout`
    /// (groups it does not run are ignored).
    pub async fn wait_applied(&self, marks: &[(u64, u64)], timeout: std::time::Duration) -> bool {
        let all = async {
            for (group, index) in marks {
                if let Some(progress) = self.progress.get(group) {
                    progress.reached(*index).await;
                }
            }
        };
        tokio::time::timeout(timeout, all).await.is_ok()
    }

    /// The meta group's applied index on this node (the barrier data entries carry).
    pub fn meta_applied(&self) -> u64 {
        self.meta_progress.applied()
    }

    /// Whether this node leads `group`, applied an entry of its own term (so everything its
    /// predecessors committed) and is not handing the group over: its state is the group's
    /// latest, and what it proposes next lands on it.
    pub fn leads(&self, group: u64) -> bool {
        self.group(group)
            .is_some_and(|raft| crate::proposer::may_propose(group, raft, &self.holds).is_ok())
    }

    /// `group`'s read index: the log index a linearizable read must see applied, as the
    /// group's leader confirms it with a quorum (Raft's ReadIndex; see
    /// [`confirmed_read_index`]). Asked of the leader over the RPC port when another node
    /// leads; retried (following leader hints, waiting out an election) for at most
    /// [`READ_INDEX_TIMEOUT`].
    pub async fn read_index(&self, group: u64) -> Result<u64, ClusterError> {
        let raft = self.group(group).ok_or(ClusterError::NoGroup(group))?;
        let deadline = tokio::time::Instant::now() + READ_INDEX_TIMEOUT;
        // Where to ask next: this node, or the leader it was told of.
        let mut ask = Some(self.node_id);
        loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            let asked = ask;
            let answer = match ask {
                Some(node) if node != self.node_id => self
                    .post::<_, Result<u64, ReadIndexRefused>>(
                        node,
                        group,
                        "read_index",
                        &(),
                        // The leader's own quorum wait, and the trip.
                        READ_INDEX_TIMEOUT + std::time::Duration::from_secs(1),
                    )
                    .await
                    .unwrap_or_else(|e| Err(ReadIndexRefused::Failed(e))),
                _ => confirmed_read_index(raft, self.holds.writes_paused(group), left).await,
            };
            let why = match answer {
                Ok(index) => return Ok(index),
                Err(ReadIndexRefused::NotLeader(hint)) => {
                    ask = hint.or_else(|| self.leader_of(group));
                    if ask.is_some() && ask != asked && tokio::time::Instant::now() < deadline {
                        continue; // told where the leader is: ask it at once
                    }
                    format!("no leader of group {group} answered")
                }
                Err(ReadIndexRefused::Failed(why)) => {
                    ask = self.leader_of(group);
                    format!("group {group}: {why}")
                }
            };
            if tokio::time::Instant::now() + READ_INDEX_RETRY >= deadline {
                return Err(ClusterError::Raft(why));
            }
            tokio::time::sleep(READ_INDEX_RETRY).await;
        }
    }

    /// Every group's read index ([`Self::read_index`]), by group, asked together.
    pub async fn read_marks(&self) -> Result<Vec<(u64, u64)>, ClusterError> {
        let asks = self
            .map
            .groups()
            .map(|group| async move { Ok((group, self.read_index(group).await?)) });
        futures::future::try_join_all(asks).await
    }

    /// The leader of `group` this node knows of.
    pub fn leader_of(&self, group: u64) -> Option<u64> {
        self.group(group)
            .and_then(|raft| raft.metrics().borrow().current_leader)
    }

    /// Whether every group has a leader and this node applied what its logs hold, give or
    /// take the entries in flight (readiness: its reads are about as fresh as the leader's).
    pub fn caught_up(&self) -> bool {
        self.groups.values().all(|raft| {
            let m = raft.metrics().borrow().clone();
            let applied = m.last_applied.map_or(0, |l| l.index);
            m.current_leader.is_some()
                && m.last_log_index.unwrap_or(0).saturating_sub(applied) <= READY_LAG
        })
    }

    /// [`Self::caught_up`] for one group.
    pub fn group_caught_up(&self, group: u64) -> bool {
        self.group(group).is_some_and(|raft| {
            let m = raft.metrics().borrow().clone();
            m.current_leader.is_some() && m.last_applied.map(|l| l.index) == m.last_log_index
        })
    }

    /// Every group as this node sees it, by group id.
    pub fn status(&self) -> Vec<GroupStatus> {
        let mut rows: Vec<GroupStatus> = self
            .groups
            .iter()
            .map(|(group, raft)| {
                let m = raft.metrics().borrow().clone();
                GroupStatus {
                    group: *group,
                    state: match m.state {
                        ServerState::Leader => "leader",
                        ServerState::Follower => "follower",
                        ServerState::Candidate => "candidate",
                        ServerState::Learner => "learner",
                        ServerState::Shutdown => "shutdown",
                    },
                    leader: m.current_leader,
                    term: m.current_term,
                    last_log: m.last_log_index,
                    applied: m.last_applied.map(|l| l.index),
                    snapshot: m.snapshot.map(|l| l.index),
                    purged: m.purged.map(|l| l.index),
                }
            })
            .collect();
        rows.sort_by_key(|r| r.group);
        rows
    }

    /// Stops every group and the RPC listener.
    pub async fn shutdown(&self) {
        for keeper in &self.keepers {
            keeper.abort();
        }
        for raft in self.groups.values() {
            let _ = raft.shutdown().await;
        }
        self.server.abort();
    }
}
