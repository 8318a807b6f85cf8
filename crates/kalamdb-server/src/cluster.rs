//! Starting a cluster member (`[cluster]`, docs/cluster.md): the node's groups over its store,
//! the replicated store the engine runs on, and the order the engine may open in.
//!
//! The meta group's leader opens the engine first; its start-up writes (system partitions,
//! the root user, repairs) become the first meta entries. Every other member waits until it
//! applied the mark that leader writes once it is open (or until it leads the meta group
//! itself), so it opens on a store that already holds the catalog; start-up writes it would
//! still make are for the leader to make, and are skipped while it starts.

use kalamdb_cluster::shard::{GroupKind, META, ShardMap};
use kalamdb_cluster::{
    AfterApply, ApplyObserver, ApplySlot, Before, CallFuture, ClusterNode, EngineCalls,
    MemberChange, ReplicatedStore, Router, Topology,
};
use kalamdb_core::AppContext;
use kalamdb_core::cluster_view::{
    CallsFuture, ClusterFuture, ClusterOpError, ClusterView, GroupInfo, MemberInfo,
    MembershipChange, ReadMarksFuture,
};
use kalamdb_core::config::Config;
use kalamdb_core::config::cluster::ClusterConfig;
use kalamdb_store::{StorageBackend, WriteBatch};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

/// The mark the first engine to open on the cluster leaves in the meta group; its value is
/// that member's shard map ([`ShardMap::settings`]; one byte in marks of clusters started
/// before the map was recorded), the cluster's from then on.
const OPENED: (&str, &[u8]) = ("sys/meta", b"cluster_opened");

/// A started member: its groups and the store the engine runs on.
pub(crate) struct Member {
    pub(crate) node: Arc<ClusterNode>,
    pub(crate) store: Arc<ReplicatedStore>,
    map: ShardMap,
    hook: ApplySlot,
    runtime: Option<tokio::runtime::Runtime>,
}

/// The members' RPC key: derived from the token secret they share (never the secret itself,
/// which signs users' tokens).
fn cluster_key(jwt_secret: &str) -> String {
    use sha2::Digest;
    let digest = sha2::Sha256::digest(format!("kalamdb-cluster-rpc\0{jwt_secret}").as_bytes());
    digest.iter().map(|b| format!("{b:02x}")).collect()
}

/// Opens the store, starts every group and waits until the engine may open (see the module
/// doc).
pub(crate) async fn start(config: &Config, cluster: &ClusterConfig) -> Result<Member, String> {
    let local: Arc<dyn StorageBackend> =
        kalamdb_core::engine::open_store(config).map_err(|e| e.to_string())?;
    let listener = tokio::net::TcpListener::bind(&cluster.rpc_addr)
        .await
        .map_err(|e| {
            format!(
                "cannot listen on cluster.rpc_addr {}: {e}",
                cluster.rpc_addr
            )
        })?;
    let map = ShardMap::new(cluster.user_shards, cluster.shared_shards);
    // Before any group starts: a member with another map would own (and snapshot, and
    // clear on a snapshot's install) other groups' keys.
    check_map(&*local, &map)?;
    let members: BTreeMap<u64, kalamdb_cluster::Member> = cluster
        .peers
        .iter()
        .map(|p| {
            (
                p.node_id,
                kalamdb_cluster::Member::new(&p.rpc_addr, &p.api_addr),
            )
        })
        .collect();
    let raft = openraft::Config {
        heartbeat_interval: cluster.heartbeat_interval_ms,
        election_timeout_min: cluster.election_timeout_ms[0],
        election_timeout_max: cluster.election_timeout_ms[1],
        snapshot_policy: openraft::SnapshotPolicy::LogsSinceLast(cluster.snapshot_threshold),
        max_in_snapshot_log_to_keep: cluster.snapshot_threshold,
        // The last chunk's answer waits for the whole install (and a data group's for its
        // meta group to catch up): a timeout would send a fresh dump again.
        install_snapshot_timeout: 30_000,
        ..Default::default()
    };
    let router = Router::new(map, Arc::clone(&local));
    let hook = ApplySlot::default();
    // The groups run on their own threads: a request path that blocks its worker (a lock held
    // across a replicated write) cannot starve the heartbeats and appends its write awaits.
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name("kalamdb-raft")
        .enable_all()
        .build()
        .map_err(|e| format!("cannot start the cluster's threads: {e}"))?;
    let tls = match &cluster.tls {
        Some(files) => Some(
            kalamdb_cluster::Tls::from_files(
                std::path::Path::new(&files.ca),
                std::path::Path::new(&files.cert),
                std::path::Path::new(&files.key),
            )
            .map_err(|e| e.to_string())?,
        ),
        None => None,
    };
    let topology = Topology {
        node_id: cluster.node_id,
        members,
        // A joining node initializes nothing: the members that add it tell it the membership.
        join: cluster.join,
        map,
        raft,
        key: Some(cluster_key(&config.auth.jwt_secret)),
        tls,
    };
    let store_for_groups = Arc::clone(&local);
    let groups_hook = Arc::clone(&hook);
    let node = runtime
        .spawn(async move {
            ClusterNode::start_with_hook(
                topology,
                store_for_groups,
                |group| router.ownership(group),
                listener
                    .into_std()
                    .and_then(tokio::net::TcpListener::from_std)?,
                groups_hook,
            )
            .await
            .map_err(|e| std::io::Error::other(e.to_string()))
        })
        .await
        .map_err(|e| e.to_string())?
        .map_err(|e| e.to_string())?;
    let node = Arc::new(node);
    tracing::info!(
        node = cluster.node_id,
        rpc = %cluster.rpc_addr,
        groups = map.groups().count(),
        "cluster groups started"
    );
    let store = Arc::new(ReplicatedStore::new(
        local,
        Arc::clone(&node),
        runtime.handle().clone(),
    ));
    store.set_starting(true);
    Ok(Member {
        node,
        store,
        map,
        hook,
        runtime: Some(runtime),
    })
}

/// Refuses `map` when the cluster's first engine opened with another one (its mark in
/// `local`, this node's store): rows would be routed to other groups here than on the other
/// members. Checked when the member starts (its store holds the mark when it was a member
/// before) and again before its engine opens (a new member has applied it by then).
fn check_map(local: &dyn StorageBackend, map: &ShardMap) -> Result<(), String> {
    // No mark (no engine opened yet: its partition may not exist either), or a mark from
    // before maps were recorded: nothing to compare with.
    let stored = local.get(OPENED.0, OPENED.1).ok().flatten();
    let Some(stored) = stored.filter(|v| v.len() > 1) else {
        return Ok(());
    };
    let (stored, mine) = (String::from_utf8_lossy(&stored), map.settings());
    if stored != mine {
        return Err(format!(
            "this member's shard map ({mine}) is not the cluster's ({stored}): every member \
             needs the same [cluster] user_shards and shared_shards"
        ));
    }
    Ok(())
}

/// How many times a member opens its engine before the first engine of the cluster opened
/// (half a second apart).
const OPEN_ATTEMPTS: u32 = 20;

/// Whether this node applied the mark of an opened engine.
fn mark_seen(store: &ReplicatedStore) -> bool {
    store
        .local()
        .get(OPENED.0, OPENED.1)
        .ok()
        .flatten()
        .is_some()
}

/// Waits until this node leads the meta group, or applied the mark of an opened engine and
/// everything its meta log holds.
async fn wait_for_catalog(node: &ClusterNode, store: &ReplicatedStore) {
    let mut waited = 0u64;
    loop {
        let leads = node.leader_of(META) == Some(node.node_id());
        if (leads || mark_seen(store)) && node.group_caught_up(META) {
            return;
        }
        if waited.is_multiple_of(50) {
            tracing::info!(
                meta_leader = ?node.leader_of(META),
                "waiting for the cluster's catalog (a majority of members must be up)"
            );
        }
        waited += 1;
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

impl Drop for Member {
    fn drop(&mut self) {
        // A runtime may not be dropped (joined) inside another one.
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
    }
}

impl Member {
    /// Stops the groups and their threads.
    pub(crate) async fn shutdown(mut self) {
        self.node.shutdown().await;
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
    }

    /// Opens the engine over this member's store once the catalog is there (see the module
    /// doc). When this node opened first as the meta group's leader and lost that leadership
    /// half way (its start-up writes were then skipped as another leader's to make), the open
    /// fails on a missing catalog partition: it waits for the new leader's catalog and opens
    /// again.
    pub(crate) async fn open_engine(
        &self,
        config: Config,
    ) -> Result<Arc<AppContext>, crate::ServerError> {
        // Its view of the meta leadership may lag: a failed open is tried again a few times
        // while no engine has opened in the cluster yet.
        let mut attempt = 0;
        loop {
            attempt += 1;
            wait_for_catalog(&self.node, &self.store).await;
            check_map(&**self.store.local(), &self.map).map_err(crate::ServerError::Cluster)?;
            let store = Arc::clone(&self.store) as Arc<dyn StorageBackend>;
            match kalamdb_core::engine::open_on(config.clone(), store).await {
                Ok(app) => {
                    self.opened(&app).map_err(crate::ServerError::Cluster)?;
                    return Ok(app);
                }
                Err(e) if !mark_seen(&self.store) && attempt < OPEN_ATTEMPTS => {
                    tracing::warn!(
                        error = %e,
                        "the meta group's leader changed while the engine opened; opening again \
                         on the new leader's catalog"
                    );
                    tokio::time::sleep(Duration::from_millis(500)).await;
                }
                Err(e) => return Err(e.into()),
            }
        }
    }

    /// The engine opened over this member's store: start-up is over, applied writes now
    /// reach its caches, and the first engine to open leaves the mark others wait for.
    fn opened(&self, app: &Arc<AppContext>) -> Result<(), String> {
        app.set_cluster_view(Arc::new(View::new(Arc::clone(&self.node))));
        self.store.set_starting(false);
        let _ = self.hook.set(Arc::new(EngineHooks(Arc::downgrade(app))));
        // What the groups applied while the engine opened reached no topic in memory.
        let engine = Arc::clone(app);
        tokio::spawn(async move { engine.topics().resync().await });
        let _ = self
            .node
            .engine_calls()
            .set(Arc::new(EngineHooks(Arc::downgrade(app))));
        if self
            .store
            .local()
            .get(OPENED.0, OPENED.1)
            .map_err(|e| e.to_string())?
            .is_none()
        {
            let mut batch = WriteBatch::new();
            batch.put(
                OPENED.0,
                OPENED.1.to_vec(),
                self.map.settings().into_bytes(),
            );
            match self.store.write(batch) {
                Ok(()) | Err(kalamdb_store::StoreError::NotLeader { .. }) => {}
                Err(e) => return Err(e.to_string()),
            }
        }
        Ok(())
    }
}

/// The engine as the cluster calls it: told about the writes the groups apply here (catalog
/// caches follow them, and other nodes' row changes reach this node's live queries), and
/// serving other members' engine calls. Holds the engine weakly (the engine holds the store
/// that holds the groups).
struct EngineHooks(std::sync::Weak<AppContext>);

impl ApplyObserver for EngineHooks {
    fn before<'a>(&'a self, _group: u64, batch: &'a WriteBatch) -> Before<'a> {
        Box::pin(async move {
            let app = self.0.upgrade()?;
            // Topic partitions whose hot messages the batch removes, their segments re-read.
            let held = app.topics().prepare_replicated(batch).await;
            let changes = app.tables().prepare_replicated(batch).await;
            if held.is_empty() && changes.is_none() {
                return None;
            }
            Some(Box::new(move || {
                if let Some(changes) = changes {
                    changes.publish();
                }
                drop(held);
            }) as AfterApply)
        })
    }

    fn after(&self, _group: u64, batch: &WriteBatch) {
        if let Some(app) = self.0.upgrade() {
            app.apply_replicated(batch);
        }
    }

    fn installed(&self, _group: u64, batch: &WriteBatch) {
        if let Some(app) = self.0.upgrade() {
            // An entry's manifest records reach the cold tier before it is written; a
            // snapshot's, only now.
            app.tables().replicated_manifests(batch);
            app.apply_replicated(batch);
        }
    }
}

/// Serves the calls other members make of this engine (`kalamdb_cluster::calls`).
impl EngineCalls for EngineHooks {
    fn call(&self, name: String, body: Vec<u8>) -> CallFuture<'_> {
        Box::pin(async move {
            let app = self.0.upgrade().ok_or("the engine is closing")?;
            match name.as_str() {
                kalamdb_core::sql::ddl::STORAGE_JOB_CALL => {
                    kalamdb_core::sql::ddl::member_storage_job(&app, &body)
                        .await
                        .map(String::into_bytes)
                        .map_err(|e| e.to_string())
                }
                kalamdb_core::backup::HOLD_FILES_CALL
                | kalamdb_core::backup::RELEASE_FILES_CALL => {
                    kalamdb_core::backup::member_files_call(&app, &name, &body)
                        .await
                        .map_err(|e| e.to_string())
                }
                other => Err(format!("no engine call '{other}'")),
            }
        })
    }
}

/// The engine's view of this member's cluster (`system.cluster`, readiness).
#[derive(Debug)]
pub(crate) struct View {
    node: Arc<ClusterNode>,
}

impl View {
    pub(crate) fn new(node: Arc<ClusterNode>) -> Self {
        Self { node }
    }

    fn metrics(&self, group: u64) -> Option<openraft::RaftMetrics<u64, kalamdb_cluster::Member>> {
        self.node
            .group(group)
            .map(|raft| raft.metrics().borrow().clone())
    }
}

/// A cluster operation's failure as the engine reports it.
fn op_error(e: kalamdb_cluster::ClusterError) -> ClusterOpError {
    match e {
        kalamdb_cluster::ClusterError::MembershipRefused { .. } => {
            ClusterOpError::Invalid(e.to_string())
        }
        other => ClusterOpError::Unavailable(other.to_string()),
    }
}

fn state_name(state: openraft::ServerState) -> &'static str {
    match state {
        openraft::ServerState::Leader => "leader",
        openraft::ServerState::Follower => "follower",
        openraft::ServerState::Candidate => "candidate",
        openraft::ServerState::Learner => "learner",
        openraft::ServerState::Shutdown => "shutdown",
    }
}

impl ClusterView for View {
    fn cluster_id(&self) -> String {
        "kalamdb".into()
    }

    fn node_id(&self) -> u64 {
        self.node.node_id()
    }

    fn members(&self) -> Vec<MemberInfo> {
        let map = self.node.map();
        let leaders: Vec<Option<u64>> = map.groups().map(|g| self.node.leader_of(g)).collect();
        let meta = self.metrics(META);
        let replication = meta.as_ref().and_then(|m| m.replication.clone());
        self.node
            .members()
            .into_iter()
            .map(|(id, member, voter)| {
                let id = &id;
                let is_self = *id == self.node.node_id();
                let leads_meta = leaders.first().copied().flatten() == Some(*id);
                let matched = replication
                    .as_ref()
                    .and_then(|r| r.get(id).cloned())
                    .map(|l| l.map_or(0, |l| l.index));
                let last_log = meta.as_ref().and_then(|m| m.last_log_index);
                MemberInfo {
                    node_id: *id,
                    rpc_addr: member.rpc_addr,
                    api_addr: member.api_url,
                    is_self,
                    role: if leads_meta {
                        "leader"
                    } else if voter {
                        "follower"
                    } else {
                        "learner"
                    }
                    .into(),
                    status: match (&replication, matched) {
                        _ if is_self || leads_meta => "active",
                        (Some(_), Some(_)) => "active",
                        (Some(_), None) => "unreachable",
                        (None, _) => "unknown",
                    }
                    .into(),
                    groups_leading: leaders.iter().filter(|l| **l == Some(*id)).count() as u32,
                    current_term: meta.as_ref().map(|m| m.current_term),
                    last_applied: meta
                        .as_ref()
                        .filter(|_| is_self)
                        .and_then(|m| m.last_applied.map(|l| l.index)),
                    leader_last_log: replication.as_ref().and(last_log),
                    snapshot_index: meta
                        .as_ref()
                        .filter(|_| is_self)
                        .and_then(|m| m.snapshot.map(|l| l.index)),
                    lag: match (&replication, matched, last_log) {
                        (Some(_), Some(m), Some(l)) if !is_self => Some(l.saturating_sub(m)),
                        (Some(_), _, _) if is_self => Some(0),
                        _ => None,
                    },
                }
            })
            .collect()
    }

    fn groups(&self) -> Vec<GroupInfo> {
        let map = self.node.map();
        map.groups()
            .filter_map(|g| {
                let m = self.metrics(g)?;
                Some(GroupInfo {
                    group: g,
                    kind: match map.kind(g) {
                        Some(GroupKind::Meta) => "meta",
                        Some(GroupKind::User) => "user_shard",
                        _ => "shared_shard",
                    }
                    .into(),
                    term: m.current_term,
                    vote: m
                        .vote
                        .is_committed()
                        .then_some(m.vote.leader_id().voted_for())
                        .flatten(),
                    last_log: m.last_log_index,
                    applied: m.last_applied.map(|l| l.index),
                    snapshot: m.snapshot.map(|l| l.index),
                    purged: m.purged.map(|l| l.index),
                    committed: None,
                    state: state_name(m.state).into(),
                    leader: m.current_leader,
                    millis_since_quorum_ack: m.millis_since_quorum_ack,
                })
            })
            .collect()
    }

    fn ready(&self) -> bool {
        self.node.caught_up()
    }

    fn snapshot(&self) -> usize {
        let groups: Vec<_> = self
            .node
            .map()
            .groups()
            .filter_map(|g| self.node.group(g).cloned())
            .collect();
        let n = groups.len();
        tokio::spawn(async move {
            for raft in groups {
                if let Err(e) = raft.trigger().snapshot().await {
                    tracing::warn!(error = %e, "CLUSTER SNAPSHOT: a group refused");
                }
            }
        });
        n
    }

    fn elect(&self, group: Option<u64>) -> usize {
        let groups: Vec<_> = self
            .node
            .map()
            .groups()
            .filter(|g| group.is_none_or(|only| only == *g))
            .filter(|g| self.node.leader_of(*g) != Some(self.node.node_id()))
            .filter_map(|g| self.node.group(g).cloned())
            .collect();
        let n = groups.len();
        tokio::spawn(async move {
            for raft in groups {
                if let Err(e) = raft.trigger().elect().await {
                    tracing::warn!(error = %e, "election refused");
                }
            }
        });
        n
    }

    fn change_members(&self, change: MembershipChange) -> ClusterFuture<'_> {
        let change = match change {
            MembershipChange::Add {
                node_id,
                rpc_addr,
                api_url,
            } => MemberChange::Add {
                id: node_id,
                member: kalamdb_cluster::Member::new(rpc_addr, api_url),
            },
            MembershipChange::Remove { node_id } => MemberChange::Remove { id: node_id },
        };
        Box::pin(async move { self.node.change_members(&change).await.map_err(op_error) })
    }

    fn transfer_leader(&self, node: u64, group: Option<u64>) -> ClusterFuture<'_> {
        Box::pin(async move {
            let groups: Vec<u64> = self
                .node
                .map()
                .groups()
                .filter(|g| group.is_none_or(|only| only == *g))
                .collect();
            // The groups move together: each waits out its own leader lease.
            let mut moves = tokio::task::JoinSet::new();
            for g in groups {
                let member = Arc::clone(&self.node);
                moves.spawn(async move { member.transfer_leader(g, node).await });
            }
            let mut outcome = Ok(());
            while let Some(moved) = moves.join_next().await {
                match moved {
                    Ok(Ok(())) => {}
                    Ok(Err(e)) => outcome = Err(op_error(e)),
                    Err(e) => outcome = Err(ClusterOpError::Unavailable(e.to_string())),
                }
            }
            outcome
        })
    }

    fn applied(&self) -> Vec<(u64, u64)> {
        self.node.applied_marks()
    }

    fn read_marks(&self) -> ReadMarksFuture<'_> {
        Box::pin(async move { self.node.read_marks().await.map_err(|e| e.to_string()) })
    }

    fn call_member<'a>(
        &'a self,
        node: u64,
        name: &'a str,
        body: Vec<u8>,
        timeout: Duration,
    ) -> kalamdb_core::cluster_view::CallFuture<'a> {
        Box::pin(self.node.call(node, name, body, timeout))
    }

    fn call_others<'a>(
        &'a self,
        name: &'a str,
        body: Vec<u8>,
        timeout: Duration,
    ) -> CallsFuture<'a> {
        let me = self.node.node_id();
        let mut calls = tokio::task::JoinSet::new();
        let mut callee = std::collections::HashMap::new();
        for (id, _, _) in self.node.members() {
            if id != me {
                let (node, name, body) = (Arc::clone(&self.node), name.to_string(), body.clone());
                let task =
                    calls.spawn(async move { (id, node.call(id, &name, body, timeout).await) });
                callee.insert(task.id(), id);
            }
        }
        Box::pin(async move {
            let mut answers = Vec::new();
            while let Some(joined) = calls.join_next_with_id().await {
                answers.push(match joined {
                    Ok((_, answer)) => answer,
                    Err(e) => (
                        callee.get(&e.id()).copied().unwrap_or_default(),
                        Err(e.to_string()),
                    ),
                });
            }
            answers.sort_by_key(|(id, _)| *id);
            answers
        })
    }

    fn wait_applied<'a>(
        &'a self,
        marks: &'a [(u64, u64)],
        timeout: Duration,
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = bool> + Send + 'a>> {
        Box::pin(self.node.wait_applied(marks, timeout))
    }

    fn meta_leader_url(&self) -> Option<String> {
        let leader = self.node.leader_of(META)?;
        if leader == self.node.node_id() {
            return None;
        }
        self.node
            .member(leader)
            .map(|m| m.api_url)
            .filter(|url| !url.is_empty())
    }
}
