//! Three Raft nodes in this process, each with its own RocksDB in a temp folder and its RPC on
//! a loopback port, replicate one group: writes reach every node's store; a follower refuses
//! writes and names the leader; the leader is stopped and the others elect a new one and go
//! on; the stopped node restarts on its folder and catches up; a fourth node joins and catches
//! up by snapshot (the log it lacks was purged); a voter leaves and the rest go on. Node 3
//! serves no message streams, as a member of an earlier version: its peers fall back to one
//! request per message, and everyone else's messages travel on streams.

use axum::response::IntoResponse;
use kalamdb_cluster::Member;
use kalamdb_cluster::network::{Network, router};
use kalamdb_cluster::state_machine::Partitions;
use kalamdb_cluster::{Command, LogStore, StateMachine, TypeConfig};
use kalamdb_store::{KeyLayout, RocksBackend, StorageBackend, StoreOptions, WriteBatch};
use openraft::error::{ClientWriteError, ForwardToLeader, RaftError};
use openraft::{Config, Raft, ServerState, SnapshotPolicy};
use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

const GROUP: u64 = 1;
const TABLE: &str = "app.t";

/// The node that answers `/raft/stream` with 404, as a member of an earlier version does.
const OLD_NODE: u64 = 3;

struct Node {
    id: u64,
    dir: PathBuf,
    addr: String,
    backend: Arc<dyn StorageBackend>,
    raft: Raft<TypeConfig>,
    server: tokio::task::JoinHandle<()>,
    /// How many Raft messages reached it one per HTTP request (not on a stream).
    per_request: Arc<AtomicUsize>,
    /// How many stream connections were opened to it.
    upgrades: Arc<AtomicUsize>,
}

impl Node {
    async fn start(id: u64, dir: &Path, listener: tokio::net::TcpListener) -> Self {
        let addr = listener.local_addr().unwrap().to_string();
        let backend: Arc<dyn StorageBackend> =
            Arc::new(RocksBackend::open(dir, &StoreOptions::default()).unwrap());
        let log = LogStore::open(Arc::clone(&backend), "raft.1.log").unwrap();
        let sm = StateMachine::open(
            Arc::clone(&backend),
            "raft.1.sm",
            Arc::new(Partitions(|p: &str| !p.starts_with("raft."))),
        )
        .unwrap();
        let config = Config {
            heartbeat_interval: 100,
            election_timeout_min: 500,
            election_timeout_max: 1000,
            // Snapshots every 20 entries, and no log kept behind them: a node that missed more
            // than that catches up by snapshot.
            snapshot_policy: SnapshotPolicy::LogsSinceLast(20),
            max_in_snapshot_log_to_keep: 0,
            ..Default::default()
        }
        .validate()
        .unwrap();
        let network = Network::new(reqwest::Client::new(), GROUP);
        let raft = Raft::new(id, Arc::new(config), network, log, sm)
            .await
            .unwrap();
        let groups = Arc::new(HashMap::from([(GROUP, raft.clone())]));
        let per_request = Arc::new(AtomicUsize::new(0));
        let upgrades = Arc::new(AtomicUsize::new(0));
        let (counted, opened) = (Arc::clone(&per_request), Arc::clone(&upgrades));
        let served = router(groups).layer(axum::middleware::from_fn(
            move |request: axum::extract::Request, next: axum::middleware::Next| {
                let (counted, opened) = (Arc::clone(&counted), Arc::clone(&opened));
                async move {
                    let path = request.uri().path();
                    if id == OLD_NODE && path == "/raft/stream" {
                        return axum::http::StatusCode::NOT_FOUND.into_response();
                    }
                    if path == "/raft/stream" {
                        opened.fetch_add(1, Ordering::SeqCst);
                    }
                    let message = ["append", "vote", "snapshot"]
                        .iter()
                        .any(|m| path == format!("/raft/{GROUP}/{m}"));
                    if message {
                        counted.fetch_add(1, Ordering::SeqCst);
                    }
                    next.run(request).await
                }
            },
        ));
        let server = tokio::spawn(async move {
            let _ = axum::serve(listener, served).await;
        });
        Self {
            id,
            dir: dir.to_path_buf(),
            addr,
            backend,
            raft,
            server,
            per_request,
            upgrades,
        }
    }

    /// Stops the node (as a crash would, minus the OS: its files stay).
    async fn stop(self) -> (u64, PathBuf, String) {
        self.raft.shutdown().await.unwrap();
        self.server.abort();
        let _ = self.server.await;
        (self.id, self.dir, self.addr)
    }

    fn keys(&self) -> Vec<Vec<u8>> {
        if !self.backend.has_partition(TABLE) {
            return Vec::new();
        }
        let mut keys = Vec::new();
        self.backend
            .scan_each(TABLE, &[], None, &mut |k, _| {
                keys.push(k.to_vec());
                Ok(true)
            })
            .unwrap();
        keys
    }

    async fn applied(&self) -> u64 {
        self.raft
            .metrics()
            .borrow()
            .last_applied
            .map(|l| l.index)
            .unwrap_or(0)
    }
}

/// Waits until every node applied `index`, then checks each holds exactly rows 0..`rows`.
async fn settled(nodes: &[Node], index: u64, rows: u32) {
    wait_applied(&nodes.iter().collect::<Vec<_>>(), index).await;
    for n in nodes {
        assert_eq!(
            n.keys(),
            (0..rows).map(key).collect::<Vec<_>>(),
            "node {}",
            n.id
        );
    }
}

fn key(i: u32) -> Vec<u8> {
    format!("row-{i:05}").into_bytes()
}

async fn leader_of(nodes: &[&Node]) -> u64 {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        for n in nodes {
            let m = n.raft.metrics().borrow().clone();
            if m.state == ServerState::Leader {
                return n.id;
            }
        }
        assert!(Instant::now() < deadline, "no leader within 15 s");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn write_rows(raft: &Raft<TypeConfig>, rows: std::ops::Range<u32>) -> u64 {
    let mut last = 0;
    for i in rows {
        let mut batch = WriteBatch::new();
        batch.put(TABLE, key(i), format!("value {i}").into_bytes());
        last = raft
            .client_write(Command::write(batch))
            .await
            .unwrap()
            .log_id
            .index;
    }
    last
}

async fn wait_applied(nodes: &[&Node], index: u64) {
    let deadline = Instant::now() + Duration::from_secs(15);
    for n in nodes {
        while n.applied().await < index {
            assert!(
                Instant::now() < deadline,
                "node {} applied {} of {index}",
                n.id,
                n.applied().await
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nodes_replicate_fail_over_rejoin_and_change_membership() {
    let root = tempfile::tempdir().unwrap();
    let mut listeners = Vec::new();
    for _ in 0..3 {
        listeners.push(tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap());
    }
    let mut nodes = Vec::new();
    for (i, l) in listeners.into_iter().enumerate() {
        let dir = root.path().join(format!("n{}", i + 1));
        nodes.push(Node::start(i as u64 + 1, &dir, l).await);
    }
    let members: BTreeMap<u64, Member> = nodes
        .iter()
        .map(|n| (n.id, Member::new(&n.addr, "")))
        .collect();
    nodes[0].raft.initialize(members).await.unwrap();

    let leader = leader_of(&nodes.iter().collect::<Vec<_>>()).await;
    let l = nodes.iter().find(|n| n.id == leader).unwrap();
    l.raft
        .client_write(Command::CreatePartition {
            name: TABLE.into(),
            layout: KeyLayout::Flat,
        })
        .await
        .unwrap();
    let last = write_rows(&l.raft, 0..30).await;
    settled(&nodes, last, 30).await;
    // Messages reached nodes 1 and 2 on streams only; node 3, as a follower, got them one
    // request each.
    for n in &nodes {
        let per_request = n.per_request.load(Ordering::SeqCst);
        match n.id {
            OLD_NODE if leader != OLD_NODE => assert!(per_request > 0, "node 3: {per_request}"),
            OLD_NODE => {}
            _ => assert_eq!(per_request, 0, "node {} got messages per request", n.id),
        }
    }
    // Linearizable reads' rounds (a new openraft client per follower each time) reuse the
    // kept connections: a handful opened, not one per read and follower.
    let opened = |nodes: &[Node]| -> usize {
        nodes
            .iter()
            .map(|n| n.upgrades.load(Ordering::SeqCst))
            .sum()
    };
    let before = opened(&nodes);
    for _ in 0..20 {
        l.raft.ensure_linearizable().await.unwrap();
    }
    let more = opened(&nodes) - before;
    assert!(more <= 4, "{more} stream connections opened for 20 reads");

    // A write to a partition no replica has is answered as refused; the group goes on.
    let mut batch = WriteBatch::new();
    batch.put("app.missing", b"k".to_vec(), b"v".to_vec());
    let refused = l.raft.client_write(Command::write(batch)).await.unwrap();
    assert!(
        refused
            .data
            .refused
            .as_deref()
            .is_some_and(|r| r.contains("app.missing")),
        "{refused:?}"
    );

    // A follower does not take writes: it names the leader.
    let follower = nodes.iter().find(|n| n.id != leader).unwrap();
    match follower
        .raft
        .client_write(Command::write(WriteBatch::new()))
        .await
    {
        Err(RaftError::APIError(ClientWriteError::ForwardToLeader(ForwardToLeader {
            leader_id,
            ..
        }))) => assert_eq!(leader_id, Some(leader)),
        other => panic!("a follower accepted a write: {other:?}"),
    }

    // The leader stops; the other two elect one of themselves and go on.
    let at = nodes.iter().position(|n| n.id == leader).unwrap();
    let stopped = nodes.remove(at).stop().await;
    let stopped_at = Instant::now();
    let survivors: Vec<&Node> = nodes.iter().collect();
    let new_leader = leader_of(&survivors).await;
    assert_ne!(new_leader, leader);
    eprintln!("new leader after {:?}", stopped_at.elapsed());
    let nl = nodes.iter().find(|n| n.id == new_leader).unwrap();
    let last = write_rows(&nl.raft, 30..80).await;
    settled(&nodes, last, 80).await;

    // The old leader restarts on its folder and port and catches up from the log.
    let (id, dir, addr) = stopped;
    let listener = tokio::net::TcpListener::bind(&addr).await.unwrap();
    nodes.push(Node::start(id, &dir, listener).await);
    settled(&nodes, last, 80).await;

    // A fourth node joins: the leader's log no longer starts at 1 (purged behind a snapshot),
    // so the newcomer can only catch up by installing the snapshot.
    let nl = nodes.iter().find(|n| n.id == new_leader).unwrap();
    let purged = nl.raft.metrics().borrow().purged.map(|p| p.index);
    assert!(purged.is_some_and(|p| p > 0), "the leader purged nothing");
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let fourth = Node::start(4, &root.path().join("n4"), listener).await;
    nl.raft
        .add_learner(4, Member::new(&fourth.addr, ""), true)
        .await
        .unwrap();
    let voters: std::collections::BTreeSet<u64> = [1, 2, 3, 4].into();
    nl.raft.change_membership(voters, false).await.unwrap();
    wait_applied(&[&fourth], last).await;
    assert_eq!(fourth.keys(), (0..80).map(key).collect::<Vec<_>>());
    let installed = fourth.raft.metrics().borrow().snapshot;
    assert!(
        installed.is_some_and(|s| Some(s.index) >= purged),
        "node 4 caught up without the snapshot: {installed:?}, purged {purged:?}"
    );
    assert_eq!(
        fourth.per_request.load(Ordering::SeqCst),
        0,
        "the snapshot went on a stream"
    );
    nodes.push(fourth);

    // One voter leaves (not the leader); the other three go on and hold every row.
    let leaving = nodes.iter().find(|n| n.id != new_leader).unwrap().id;
    let voters: std::collections::BTreeSet<u64> =
        [1, 2, 3, 4].into_iter().filter(|i| *i != leaving).collect();
    let nl = nodes.iter().find(|n| n.id == new_leader).unwrap();
    nl.raft.change_membership(voters, false).await.unwrap();
    let last = write_rows(&nl.raft, 80..100).await;
    let at = nodes.iter().position(|n| n.id == leaving).unwrap();
    nodes.remove(at).stop().await;
    settled(&nodes, last, 100).await;
    for n in nodes {
        n.stop().await;
    }
}

/// Three nodes run every group of a shard map (meta, two user shards, one shared shard)
/// behind one RPC port each: every group elects a leader; each group's writes reach every
/// node; the node leading the most groups stops and every group it led elects another
/// leader and takes writes again.
/// Three members of `map` on loopback ports, each over its own store in `root` (group g owns
/// the partitions named `g<g>.*`), with `tls` on their RPC port.
async fn start_members(
    root: &Path,
    map: kalamdb_cluster::shard::ShardMap,
    tls: Option<kalamdb_cluster::Tls>,
) -> (
    Vec<kalamdb_cluster::ClusterNode>,
    HashMap<u64, Arc<dyn StorageBackend>>,
) {
    use kalamdb_cluster::{ClusterNode, Topology};
    let mut listeners = Vec::new();
    for _ in 0..3 {
        listeners.push(tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap());
    }
    let members: BTreeMap<u64, Member> = listeners
        .iter()
        .enumerate()
        .map(|(i, l)| {
            let addr = l.local_addr().unwrap().to_string();
            (i as u64 + 1, Member::new(addr, ""))
        })
        .collect();
    let raft = Config {
        heartbeat_interval: 100,
        election_timeout_min: 500,
        election_timeout_max: 1000,
        ..Default::default()
    };
    let mut backends = HashMap::new();
    let mut nodes = Vec::new();
    for (i, listener) in listeners.into_iter().enumerate() {
        let id = i as u64 + 1;
        let backend: Arc<dyn StorageBackend> = Arc::new(
            RocksBackend::open(&root.join(format!("n{id}")), &StoreOptions::default()).unwrap(),
        );
        backends.insert(id, Arc::clone(&backend));
        let topology = Topology {
            join: false,
            node_id: id,
            members: members.clone(),
            map,
            raft: raft.clone(),
            key: Some("test-cluster-key".into()),
            tls: tls.clone(),
        };
        let node = ClusterNode::start(
            topology,
            backend,
            |g| Arc::new(Partitions(move |p: &str| p.starts_with(&format!("g{g}.")))),
            listener,
        )
        .await
        .unwrap();
        nodes.push(node);
    }
    (nodes, backends)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_group_of_the_shard_map_fails_over() {
    use kalamdb_cluster::shard::ShardMap;
    use kalamdb_cluster::{ClusterError, ClusterNode};

    let root = tempfile::tempdir().unwrap();
    let map = ShardMap::new(2, 1);
    let (mut nodes, backends) = start_members(root.path(), map, None).await;

    let leaders = |nodes: &[ClusterNode]| -> Option<BTreeMap<u64, u64>> {
        let mut found = BTreeMap::new();
        for n in nodes {
            for s in n.status() {
                if s.state == "leader" {
                    found.insert(s.group, n.node_id());
                }
            }
        }
        (found.len() == map.groups().count()).then_some(found)
    };
    let wait_leaders = async |nodes: &[ClusterNode]| {
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            if let Some(l) = leaders(nodes) {
                return l;
            }
            assert!(
                Instant::now() < deadline,
                "not every group elected a leader"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    };
    // Proposes `command` to `group` through whichever node leads it, retrying as a client
    // does while an election is settling (NotLeader: the entry was not appended).
    let propose = async |nodes: &[ClusterNode], group: u64, command: Command| {
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            let leader = wait_leaders(nodes).await[&group];
            let node = nodes.iter().find(|n| n.node_id() == leader).unwrap();
            match node.write(group, command.clone()).await {
                Ok(applied) => return applied.index,
                Err(ClusterError::NotLeader { .. }) if Instant::now() < deadline => {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                Err(e) => panic!("group {group}: {e}"),
            }
        }
    };
    // Writes `rows` to every group; answers the last index per group.
    let write_all = async |nodes: &[ClusterNode], rows: std::ops::Range<u32>, create: bool| {
        let mut last = BTreeMap::new();
        for group in map.groups() {
            let table = format!("g{group}.t");
            if create {
                let layout = KeyLayout::Flat;
                let name = table.clone();
                propose(nodes, group, Command::CreatePartition { name, layout }).await;
            }
            for i in rows.clone() {
                let mut batch = WriteBatch::new();
                batch.put(&table, key(i), b"v".to_vec());
                last.insert(group, propose(nodes, group, Command::write(batch)).await);
            }
        }
        last
    };
    let check = async |nodes: &[ClusterNode], last: &BTreeMap<u64, u64>, rows: u32| {
        let deadline = Instant::now() + Duration::from_secs(15);
        for n in nodes {
            for (group, index) in last {
                let raft = n.group(*group).unwrap();
                while raft.metrics().borrow().last_applied.map(|l| l.index) < Some(*index) {
                    assert!(
                        Instant::now() < deadline,
                        "node {} group {group} behind",
                        n.node_id()
                    );
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
                let backend = &backends[&n.node_id()];
                let mut keys = Vec::new();
                backend
                    .scan_each(&format!("g{group}.t"), &[], None, &mut |k, _| {
                        keys.push(k.to_vec());
                        Ok(true)
                    })
                    .unwrap();
                assert_eq!(keys, (0..rows).map(key).collect::<Vec<_>>());
            }
        }
    };

    let last = write_all(&nodes, 0..10, true).await;
    check(&nodes, &last, 10).await;
    // Once every member has them, the entries are purged from every group's leader.
    let purged = |nodes: &[ClusterNode], group: u64, leader: u64| -> u64 {
        let node = nodes.iter().find(|n| n.node_id() == leader).unwrap();
        let metrics = node.group(group).unwrap().metrics().borrow().clone();
        metrics.purged.map_or(0, |p| p.index)
    };
    let deadline = Instant::now() + Duration::from_secs(10);
    for (group, index) in &last {
        while purged(&nodes, *group, wait_leaders(&nodes).await[group]) < *index {
            assert!(
                Instant::now() < deadline,
                "group {group}: log not purged up to {index}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    // A write to a group's follower names the leader.
    let leaders = wait_leaders(&nodes).await;
    let (group, leader) = leaders.iter().next().map(|(g, l)| (*g, *l)).unwrap();
    let follower = nodes.iter().find(|n| n.node_id() != leader).unwrap();
    match follower
        .write(group, Command::write(WriteBatch::new()))
        .await
    {
        Err(ClusterError::NotLeader { leader: l, .. }) => assert_eq!(l, Some(leader)),
        other => panic!("a follower took a write: {other:?}"),
    }

    // The node leading the most groups stops; every group elects a leader among the others.
    let mut led: BTreeMap<u64, usize> = BTreeMap::new();
    for l in leaders.values() {
        *led.entry(*l).or_default() += 1;
    }
    let busiest = led
        .iter()
        .max_by_key(|(_, n)| **n)
        .map(|(id, _)| *id)
        .unwrap();
    let at = nodes.iter().position(|n| n.node_id() == busiest).unwrap();
    // What the stopped member has: no leader may purge past it while it is away.
    let had: BTreeMap<u64, u64> = map
        .groups()
        .map(|g| {
            let metrics = nodes[at].group(g).unwrap().metrics().borrow().clone();
            (g, metrics.last_log_index.unwrap_or(0))
        })
        .collect();
    nodes.remove(at).shutdown().await;
    let stopped = Instant::now();
    let after = wait_leaders(&nodes).await;
    eprintln!("every group led again after {:?}", stopped.elapsed());
    assert!(after.values().all(|l| *l != busiest));
    let last = write_all(&nodes, 10..20, false).await;
    check(&nodes, &last, 20).await;

    // Writes submitted together share entries (group commit): 40 writes, one of them to a
    // partition no replica has, all handed over before any is awaited. Each is answered on
    // its own: the refused one names its partition, the others land on every node.
    let leaders = wait_leaders(&nodes).await;
    let mut last = BTreeMap::new();
    for (group, leader) in &leaders {
        let node = nodes.iter().find(|n| n.node_id() == *leader).unwrap();
        let mut proposals = Vec::new();
        for i in 20..60 {
            let mut batch = WriteBatch::new();
            let table = match i {
                33 => format!("g{group}.missing"),
                _ => format!("g{group}.t"),
            };
            batch.put(&table, key(i), b"v".to_vec());
            proposals.push(node.submit(*group, Command::write(batch)).await.unwrap());
        }
        let mut indexes = std::collections::BTreeSet::new();
        for (i, proposal) in (20..60).zip(proposals) {
            let applied = proposal.wait().await.unwrap();
            match i {
                33 => assert!(
                    applied
                        .refused
                        .as_deref()
                        .is_some_and(|r| r.contains("missing")),
                    "{applied:?}"
                ),
                _ => assert_eq!(applied.refused, None, "write {i}"),
            }
            indexes.insert(applied.index);
            last.insert(*group, applied.index);
        }
        assert!(
            indexes.len() < 20,
            "group {group}: 40 concurrent writes took {} entries",
            indexes.len()
        );
    }
    // Row 33 went to the missing partition: write it where check expects it.
    for group in map.groups() {
        let mut batch = WriteBatch::new();
        batch.put(&format!("g{group}.t"), key(33), b"v".to_vec());
        last.insert(group, propose(&nodes, group, Command::write(batch)).await);
    }
    check(&nodes, &last, 60).await;
    // Several rounds of log upkeep later, the entries the stopped member lacks are all kept.
    tokio::time::sleep(Duration::from_millis(800)).await;
    for (group, leader) in wait_leaders(&nodes).await {
        let kept_from = purged(&nodes, group, leader);
        assert!(
            kept_from <= had[&group],
            "group {group}: purged to {kept_from}, the stopped member has only {}",
            had[&group]
        );
    }
    for n in nodes {
        n.shutdown().await;
    }
}

/// A CA and a certificate it signed for 127.0.0.1, as PEM: (CA, certificate, key).
fn certificates() -> (String, String, String) {
    let ca_key = rcgen::KeyPair::generate().unwrap();
    let mut ca = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    ca.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    let ca = ca.self_signed(&ca_key).unwrap();
    let key = rcgen::KeyPair::generate().unwrap();
    let cert = rcgen::CertificateParams::new(vec!["127.0.0.1".to_string()])
        .unwrap()
        .signed_by(&key, &ca, &ca_key)
        .unwrap();
    (ca.pem(), cert.pem(), key.serialize_pem())
}

/// With mTLS the members replicate as without it, and the RPC port refuses whoever does not
/// present a certificate of the cluster's CA: a plain HTTP client, a TLS client without a
/// certificate, and one whose certificate another CA signed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn members_talk_over_mtls_and_refuse_strangers() {
    use kalamdb_cluster::shard::ShardMap;
    use kalamdb_cluster::{ClusterError, Tls};
    use rustls::pki_types::pem::PemObject;

    let (ca, cert, node_key) = certificates();
    let tls = Tls::from_pem(ca.as_bytes(), cert.as_bytes(), node_key.as_bytes()).unwrap();
    assert!(matches!(
        Tls::from_pem(b"", cert.as_bytes(), node_key.as_bytes()),
        Err(ClusterError::Tls(_))
    ));
    let root = tempfile::tempdir().unwrap();
    let map = ShardMap::new(1, 1);
    let (nodes, backends) = start_members(root.path(), map, Some(tls)).await;

    // Every group elects a leader over TLS and replicates a write to every member.
    let deadline = Instant::now() + Duration::from_secs(15);
    let write = async |group: u64, command: Command| loop {
        for n in &nodes {
            if let Ok(applied) = n.write(group, command.clone()).await {
                return applied.index;
            }
        }
        assert!(
            Instant::now() < deadline,
            "group {group} never took a write"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    for group in map.groups() {
        let table = format!("g{group}.t");
        let layout = KeyLayout::Flat;
        let name = table.clone();
        write(group, Command::CreatePartition { name, layout }).await;
        let mut batch = WriteBatch::new();
        batch.put(&table, key(1), b"v".to_vec());
        let index = write(group, Command::write(batch)).await;
        for n in &nodes {
            let raft = n.group(group).unwrap();
            while raft.metrics().borrow().last_applied.map(|l| l.index) < Some(index) {
                assert!(Instant::now() < deadline, "group {group} not replicated");
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            let backend = &backends[&n.node_id()];
            assert_eq!(backend.get(&table, &key(1)).unwrap(), Some(b"v".to_vec()));
        }
    }

    let addr = nodes[0].member(1).unwrap().rpc_addr;
    let vote = |client: reqwest::Client, scheme: &str| {
        let url = format!("{scheme}://{addr}/raft/0/vote");
        async move {
            client
                .post(url)
                .header("x-kalamdb-cluster-key", "test-cluster-key")
                .body(Vec::new())
                .timeout(Duration::from_secs(5))
                .send()
                .await
        }
    };
    // A member's own client gets through (the request itself is nonsense: 400).
    let (stranger_ca, stranger_cert, stranger_key) = certificates();
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let roots = |pem: &str| {
        let mut roots = rustls::RootCertStore::empty();
        for c in rustls::pki_types::CertificateDer::pem_slice_iter(pem.as_bytes()) {
            roots.add(c.unwrap()).unwrap();
        }
        roots
    };
    let client = |auth: Option<(&str, &str)>| {
        let builder = rustls::ClientConfig::builder_with_provider(Arc::clone(&provider))
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots(&ca));
        let config = match auth {
            Some((cert, key)) => {
                let chain = rustls::pki_types::CertificateDer::pem_slice_iter(cert.as_bytes())
                    .collect::<Result<Vec<_>, _>>()
                    .unwrap();
                let key = rustls::pki_types::PrivateKeyDer::from_pem_slice(key.as_bytes()).unwrap();
                builder.with_client_auth_cert(chain, key).unwrap()
            }
            None => builder.with_no_client_auth(),
        };
        reqwest::Client::builder()
            .use_preconfigured_tls(config)
            .build()
            .unwrap()
    };
    let member = vote(client(Some((&cert, &node_key))), "https")
        .await
        .unwrap();
    assert_eq!(member.status(), 400);
    assert!(vote(reqwest::Client::new(), "http").await.is_err());
    assert!(vote(client(None), "https").await.is_err());
    assert!(
        vote(client(Some((&stranger_cert, &stranger_key))), "https")
            .await
            .is_err()
    );
    let _ = stranger_ca;
    for n in nodes {
        n.shutdown().await;
    }
}
