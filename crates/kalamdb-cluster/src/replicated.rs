//! The engine's store on a cluster node (docs/cluster.md §4): a [`StorageBackend`] that reads
//! the node's own store and commits every write through the Raft group that owns it. The
//! engine above it stays unaware of Raft: its commit gate builds a batch as on one node, and
//! [`ReplicatedStore::write`] proposes it and returns once this node applied it (so the
//! writer reads its own write). A node that does not lead the group answers
//! [`StoreError::NotLeader`] with the leader's client URL, having written nothing.
//!
//! [`Router`] says which group owns a key: application-table partitions (`tbl/…`) belong to
//! the data groups (scoped ones, USER and STREAM tables, by the user id that starts each key;
//! flat ones, SHARED tables, by table), everything else (the catalog, topics) to the meta
//! group, except what each node keeps for itself (its `_seq` mark, its job records). The cold
//! tier's manifest records go to the group of the rows they describe; topic messages a table
//! write captured ride in its entry into the outbox, and belong to the group whose state
//! machine keyed them (`kalamdb_store::outbox`). The same function is
//! the groups' snapshot [`Ownership`], so what a group replicates is what it snapshots.

use crate::node::{ClusterError, ClusterNode, Proposal};
use crate::shard::{META, ShardMap};
use crate::state_machine::Ownership;
use crate::types::{Applied, Command};
use kalamdb_store::{
    Committed, EngineStats, KeyLayout, KvIter, Pending, PendingWait, Result, StorageBackend,
    StorageRead, StorageSnapshot, StoreError, Visit, WriteBatch, outbox,
};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

/// Prefix of application-table partitions (`kalamdb_catalog::partitions`).
const TABLE_PREFIX: &str = "tbl/";

/// Keys each node keeps for itself: its `_seq` high-water mark (each node's generator is its
/// own).
const LOCAL_KEYS: &[(&str, &[u8])] = &[("sys/meta", b"seq_high_water")];

/// A partition each node keeps for itself: its job records
/// (`kalamdb_catalog::partitions::JOBS_PARTITION`).
pub const JOBS_PARTITION: &str = "sys/jobs";

/// The cold tier's manifests (`kalamdb_catalog::partitions::MANIFESTS_PARTITION`): a record
/// is keyed by its rows' partition, a NUL and its scope's key prefix, and goes to the group of
/// those rows.
pub const MANIFESTS_PARTITION: &str = "sys/manifests";

/// `ns.table` of a table partition's name (`tbl/<ns>/<table>/…`).
fn table_of(partition: &str) -> String {
    let mut parts = partition
        .strip_prefix(TABLE_PREFIX)
        .unwrap_or(partition)
        .split('/');
    format!(
        "{}.{}",
        parts.next().unwrap_or_default(),
        parts.next().unwrap_or_default()
    )
}

/// The rows' partition and scope prefix a manifest record's key names (as
/// `kalamdb_catalog::partitions::manifest_key_parts` reads them; this crate stays below the
/// catalog).
fn manifest_key_parts(key: &[u8]) -> Option<(&str, &[u8])> {
    let end = key.iter().position(|b| *b == 0)?;
    Some((std::str::from_utf8(&key[..end]).ok()?, &key[end + 1..]))
}

/// How long a write waits for its group to commit and apply it.
const COMMIT_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// Where a write goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Route {
    /// This node's store only.
    Local,
    /// The group's log.
    Group(u64),
}

/// Which group owns a key; see the module doc.
#[derive(Clone)]
pub struct Router {
    map: ShardMap,
    store: Arc<dyn StorageBackend>,
}

impl std::fmt::Debug for Router {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Router").field("map", &self.map).finish()
    }
}

impl Router {
    /// Routes by `map`, reading partition layouts from `store` (the node's own).
    pub fn new(map: ShardMap, store: Arc<dyn StorageBackend>) -> Self {
        Self { map, store }
    }

    /// The group of a whole partition, or `None` for a scoped table partition (its keys go
    /// to the groups of their users).
    fn partition_group(&self, partition: &str) -> Option<u64> {
        if !partition.starts_with(TABLE_PREFIX) {
            return Some(META);
        }
        if self.store.layout(partition) == Some(KeyLayout::Scoped) || partition.ends_with("/log") {
            return None;
        }
        // tbl/<ns>/<table>/<created>/rows: a SHARED table's group, by `ns.table`.
        Some(self.map.shared_group(&table_of(partition)))
    }

    /// Where a write of `key` in `partition` goes.
    pub fn route(&self, partition: &str, key: &[u8]) -> Route {
        if partition == outbox::PARTITION {
            // A table write's captured message rides in its entry (the meta group stands
            // for "any": the batch goes to its rows' group); the outbox's own upkeep
            // (deleting what was moved into the topics) is each node's.
            return match key.len() == outbox::CAPTURE_KEY_LEN {
                true => Route::Group(META),
                false => Route::Local,
            };
        }
        if partition == JOBS_PARTITION
            || LOCAL_KEYS.iter().any(|(p, k)| *p == partition && *k == key)
        {
            return Route::Local;
        }
        if partition == MANIFESTS_PARTITION {
            // A scope's manifest goes with the scope's rows: a user's to the user's group, a
            // SHARED table's to the table's (by the key alone: the table may be gone here).
            return match manifest_key_parts(key) {
                Some((rows, scope)) if rows.starts_with(TABLE_PREFIX) => match scope {
                    [] => Route::Group(self.map.shared_group(&table_of(rows))),
                    _ => self.route_user(scope),
                },
                _ => Route::Group(META),
            };
        }
        match self.partition_group(partition) {
            Some(group) => Route::Group(group),
            None => self.route_user(key),
        }
    }

    /// The group of a scoped key: its user's, the user id being the key up to its first NUL.
    fn route_user(&self, key: &[u8]) -> Route {
        let end = key.iter().position(|b| *b == 0).unwrap_or(key.len());
        Route::Group(self.map.user_group(&String::from_utf8_lossy(&key[..end])))
    }

    /// Where a batch goes: the group of its first replicated write. A batch is one group's
    /// log entry, so its other writes ride in that entry (a table write's topic capture); a
    /// batch of application rows of two data groups is refused (a transaction over the
    /// scopes of users of different shards), as is one with nothing replicated but something
    /// local mixed with it.
    pub fn route_batch(&self, batch: &WriteBatch) -> Result<Route> {
        let mut first: Option<u64> = None;
        let mut data: Option<u64> = None;
        let mut local = false;
        for op in batch.ops() {
            let (partition, key) = op_target(op);
            match self.route(partition, key) {
                Route::Local => local = true,
                Route::Group(g) => {
                    first.get_or_insert(g);
                    if g != META {
                        match data {
                            Some(d) if d != g => {
                                return Err(StoreError::SpansGroups(format!(
                                    "one transaction writes rows of two cluster groups ({d} \
                                     and {g}: different users' rows, or USER and SHARED \
                                     tables); a cluster commits one group's rows at a time"
                                )));
                            }
                            _ => data = Some(g),
                        }
                    }
                }
            }
        }
        match (data.or(first), local) {
            (Some(g), false) => Ok(Route::Group(g)),
            (None, _) => Ok(Route::Local),
            (Some(_), true) => Err(StoreError::SpansGroups(
                "a batch mixes node-local and replicated keys".into(),
            )),
        }
    }

    /// The ownership of `group`'s state machine: the keys this router sends to it.
    pub fn ownership(&self, group: u64) -> Arc<dyn Ownership> {
        Arc::new(Owned {
            router: self.clone(),
            group,
        })
    }
}

fn op_target(op: &kalamdb_store::BatchOp) -> (&str, &[u8]) {
    match op {
        kalamdb_store::BatchOp::Put { partition, key, .. }
        | kalamdb_store::BatchOp::Delete { partition, key } => (partition, key),
        kalamdb_store::BatchOp::DeleteRange {
            partition, from, ..
        } => (partition, from),
    }
}

/// A group's keys as the [`Router`] assigns them.
struct Owned {
    router: Router,
    group: u64,
}

impl Ownership for Owned {
    fn partition(&self, partition: &str) -> bool {
        if partition == JOBS_PARTITION {
            return false; // each node's own
        }
        if partition == MANIFESTS_PARTITION {
            return true; // keys of every group, as their rows
        }
        if partition == outbox::PARTITION {
            return self.group != META; // each data group its own range
        }
        match self.router.partition_group(partition) {
            Some(g) => g == self.group,
            None => self.router.map.kind(self.group) == Some(crate::shard::GroupKind::User),
        }
    }

    fn key(&self, partition: &str, key: &[u8]) -> bool {
        if partition == outbox::PARTITION {
            return outbox::group_of(key) == Some(self.group);
        }
        self.router.route(partition, key) == Route::Group(self.group)
    }
}

/// The engine's store on a cluster node; see the module doc.
pub struct ReplicatedStore {
    inner: Arc<dyn StorageBackend>,
    node: Arc<ClusterNode>,
    router: Router,
    /// The runtime the groups run on (a write blocks on it when it cannot finish at once).
    runtime: tokio::runtime::Handle,
    /// While the engine opens, writes for groups another node leads are skipped.
    starting: AtomicBool,
}

impl std::fmt::Debug for ReplicatedStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ReplicatedStore")
            .field("node", &self.node.node_id())
            .finish_non_exhaustive()
    }
}

impl ReplicatedStore {
    /// The store of `node`, whose groups run over `inner` on `runtime` (a refused write names
    /// the leader's client URL as the membership records it).
    pub fn new(
        inner: Arc<dyn StorageBackend>,
        node: Arc<ClusterNode>,
        runtime: tokio::runtime::Handle,
    ) -> Self {
        let router = Router::new(node.map(), Arc::clone(&inner));
        Self {
            inner,
            node,
            router,
            runtime,
            starting: AtomicBool::new(false),
        }
    }

    /// Marks the engine opening (`true`) or open. While it opens, a write for a group another
    /// node leads is skipped instead of refused: the engine's start-up writes (system
    /// partitions, the root user, repairs) are the meta leader's to make, and a member opens
    /// only once it holds what that leader's start-up wrote (see `kalamdb-server`).
    pub fn set_starting(&self, starting: bool) {
        self.starting.store(starting, Ordering::SeqCst);
    }

    /// The node's groups.
    pub fn node(&self) -> &Arc<ClusterNode> {
        &self.node
    }

    /// The node's own store (what the groups apply to).
    pub fn local(&self) -> &Arc<dyn StorageBackend> {
        &self.inner
    }

    /// Runs `run` to completion on the groups' runtime. The store's API is synchronous (the
    /// engine calls it inside its commit gate), so the calling thread blocks; on a Tokio
    /// worker it first hands its other tasks to the rest of the pool.
    fn block_on<T>(&self, run: impl std::future::Future<Output = T>) -> T {
        if tokio::runtime::Handle::try_current().is_ok() {
            tokio::task::block_in_place(|| self.runtime.block_on(run))
        } else {
            self.runtime.block_on(run)
        }
    }

    /// Hands `command` to `group` (see [`StorageBackend::submit`]). Handing over is a send on
    /// an unbounded channel, so it completes at its first poll; only otherwise does the
    /// calling thread block.
    fn submit_to(&self, group: u64, command: Command) -> Result<Box<dyn Pending>> {
        let node = Arc::clone(&self.node);
        let mut handing = std::pin::pin!(async move { node.submit(group, command).await });
        let polled = handing
            .as_mut()
            .poll(&mut std::task::Context::from_waker(std::task::Waker::noop()));
        let submitted = match polled {
            std::task::Poll::Ready(done) => done,
            std::task::Poll::Pending => self.block_on(handing),
        };
        match submitted {
            Ok(proposal) => Ok(Box::new(Submitted {
                store: self.handle(),
                proposal,
            })),
            Err(e) => self
                .outcome(Err(e))
                .map(|()| Box::new(Committed) as Box<dyn Pending>),
        }
    }

    fn handle(&self) -> Handle {
        Handle {
            node: Arc::clone(&self.node),
            starting: self.starting.load(Ordering::SeqCst),
        }
    }

    /// Proposes `command` to `group` and waits until this node applied it.
    fn propose(&self, group: u64, command: Command) -> Result<()> {
        let pending = self.submit_to(group, command)?;
        self.block_on(pending.wait())
    }

    fn outcome(&self, outcome: std::result::Result<Applied, ClusterError>) -> Result<()> {
        self.handle().outcome(outcome)
    }
}

/// What a submitted write needs of its store to finish.
struct Handle {
    node: Arc<ClusterNode>,
    starting: bool,
}

impl Handle {
    fn outcome(&self, outcome: std::result::Result<Applied, ClusterError>) -> Result<()> {
        match outcome {
            Ok(applied) => match applied.refused {
                Some(why) => Err(StoreError::PartitionNotFound(why)),
                None => Ok(()),
            },
            Err(ClusterError::NotLeader { group, .. }) if self.starting => {
                tracing::debug!(group, "start-up write left to the group's leader");
                Ok(())
            }
            Err(ClusterError::NotLeader { leader, .. }) => Err(StoreError::NotLeader {
                leader: leader
                    .and_then(|id| self.node.member(id))
                    .map(|m| m.api_url)
                    .filter(|url| !url.is_empty()),
            }),
            Err(e) => Err(StoreError::Unavailable(e.to_string())),
        }
    }
}

/// A write in its group's log.
struct Submitted {
    store: Handle,
    proposal: Proposal,
}

impl Pending for Submitted {
    fn wait(self: Box<Self>) -> PendingWait {
        let Submitted { store, proposal } = *self;
        Box::pin(async move {
            let outcome = tokio::time::timeout(COMMIT_TIMEOUT, proposal.wait())
                .await
                .unwrap_or_else(|_| {
                    Err(ClusterError::Raft(format!(
                        "no commit within {} s (no quorum?); the write may or may not take \
                         effect",
                        COMMIT_TIMEOUT.as_secs()
                    )))
                });
            store.outcome(outcome)
        })
    }
}

impl StorageRead for ReplicatedStore {
    fn get(&self, partition: &str, key: &[u8]) -> Result<Option<Vec<u8>>> {
        self.inner.get(partition, key)
    }

    fn multi_get(&self, partition: &str, keys: &[Vec<u8>]) -> Result<Vec<Option<Vec<u8>>>> {
        self.inner.multi_get(partition, keys)
    }

    fn scan<'a>(
        &'a self,
        partition: &str,
        prefix: &[u8],
        start: Option<&[u8]>,
    ) -> Result<KvIter<'a>> {
        self.inner.scan(partition, prefix, start)
    }

    fn scan_each(
        &self,
        partition: &str,
        prefix: &[u8],
        start: Option<&[u8]>,
        visit: &mut Visit<'_>,
    ) -> Result<()> {
        self.inner.scan_each(partition, prefix, start, visit)
    }
}

impl StorageBackend for ReplicatedStore {
    fn create_partition(&self, name: &str, layout: KeyLayout) -> Result<()> {
        if self.inner.has_partition(name) {
            return Ok(());
        }
        self.propose(
            META,
            Command::CreatePartition {
                name: name.to_string(),
                layout,
            },
        )
    }

    fn drop_partition(&self, name: &str) -> Result<()> {
        if !self.inner.has_partition(name) {
            return Ok(());
        }
        self.propose(
            META,
            Command::DropPartition {
                name: name.to_string(),
            },
        )
    }

    fn has_partition(&self, name: &str) -> bool {
        self.inner.has_partition(name)
    }

    fn layout(&self, name: &str) -> Option<KeyLayout> {
        self.inner.layout(name)
    }

    fn list_partitions(&self) -> Vec<String> {
        self.inner.list_partitions()
    }

    fn write(&self, batch: WriteBatch) -> Result<()> {
        let pending = self.submit(batch)?;
        self.block_on(pending.wait())
    }

    fn leads(&self, partition: &str, key: &[u8]) -> bool {
        match self.router.route(partition, key) {
            Route::Local => true,
            Route::Group(group) => self.node.leads(group),
        }
    }

    fn defers_commits(&self) -> bool {
        true
    }

    fn submit(&self, batch: WriteBatch) -> Result<Box<dyn Pending>> {
        if batch.is_empty() {
            return Ok(Box::new(Committed));
        }
        match self.router.route_batch(&batch)? {
            Route::Local => {
                self.inner.write(batch)?;
                Ok(Box::new(Committed))
            }
            Route::Group(group) => self.submit_to(
                group,
                Command::Write {
                    batch: batch.into(),
                    origin: self.node.node_id(),
                    meta_applied: self.node.meta_applied(),
                },
            ),
        }
    }

    fn snapshot(&self) -> Box<dyn StorageSnapshot + '_> {
        self.inner.snapshot()
    }

    fn owned_snapshot(self: Arc<Self>) -> Arc<dyn StorageSnapshot + Send + Sync> {
        Arc::clone(&self.inner).owned_snapshot()
    }

    fn flush(&self) -> Result<()> {
        self.inner.flush()
    }

    fn last_key(&self, partition: &str, prefix: &[u8]) -> Result<Option<Vec<u8>>> {
        self.inner.last_key(partition, prefix)
    }

    fn estimated_keys(&self, name: &str) -> Option<u64> {
        self.inner.estimated_keys(name)
    }

    fn checkpoint(&self, dir: &std::path::Path) -> Result<()> {
        self.inner.checkpoint(dir)
    }

    fn engine_stats(&self) -> EngineStats {
        self.inner.engine_stats()
    }

    fn compact_range(&self, name: &str, from: &[u8], to: &[u8]) -> Result<()> {
        self.inner.compact_range(name, from, to)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kalamdb_store::{RocksBackend, StoreOptions};

    #[test]
    fn manifest_records_go_with_their_rows_and_job_records_stay_local() {
        let dir = tempfile::tempdir().unwrap();
        let store: Arc<dyn StorageBackend> =
            Arc::new(RocksBackend::open(dir.path(), &StoreOptions::default()).unwrap());
        let user_rows = "tbl/app/u/1/rows";
        store
            .create_partition(user_rows, KeyLayout::Scoped)
            .unwrap();
        let shared_rows = "tbl/app/s/1/rows";
        store
            .create_partition(shared_rows, KeyLayout::Flat)
            .unwrap();
        let map = ShardMap::new(4, 2);
        let router = Router::new(map, store);
        let record = |rows: &str, scope: &[u8]| [rows.as_bytes(), b"\0", scope].concat();

        for user in ["ann", "bob", "cat", "dan"] {
            let scope = [user.as_bytes(), b"\0"].concat();
            let rows = router.route(user_rows, &[scope.as_slice(), b"pk"].concat());
            assert_eq!(rows, Route::Group(map.user_group(user)));
            let manifest = router.route(MANIFESTS_PARTITION, &record(user_rows, &scope));
            assert_eq!(manifest, rows, "{user}");
            // Its group snapshots it; no other group does.
            for group in map.groups() {
                let owns = router.ownership(group);
                assert!(owns.partition(MANIFESTS_PARTITION));
                let key = record(user_rows, &scope);
                assert_eq!(
                    owns.key(MANIFESTS_PARTITION, &key),
                    Route::Group(group) == rows
                );
            }
        }
        assert_eq!(
            router.route(MANIFESTS_PARTITION, &record(shared_rows, b"")),
            Route::Group(map.shared_group("app.s"))
        );
        // A key that names no table partition stays with the catalog.
        assert_eq!(
            router.route(MANIFESTS_PARTITION, b"garbage"),
            Route::Group(META)
        );
        assert_eq!(router.route(JOBS_PARTITION, b"42"), Route::Local);
        assert!(
            map.groups()
                .all(|g| !router.ownership(g).partition(JOBS_PARTITION))
        );
    }

    #[test]
    fn outbox_messages_ride_with_their_rows_and_belong_to_the_group_that_sequenced_them() {
        let dir = tempfile::tempdir().unwrap();
        let store: Arc<dyn StorageBackend> =
            Arc::new(RocksBackend::open(dir.path(), &StoreOptions::default()).unwrap());
        let shared_rows = "tbl/app/s/1/rows";
        store
            .create_partition(shared_rows, KeyLayout::Flat)
            .unwrap();
        let map = ShardMap::new(2, 1);
        let router = Router::new(map, store);
        let mut batch = WriteBatch::new();
        batch.put(outbox::PARTITION, outbox::capture_key(0), b"m".to_vec());
        batch.put(shared_rows, b"pk".to_vec(), b"row".to_vec());
        let group = map.shared_group("app.s");
        assert_eq!(
            router.route_batch(&batch).unwrap(),
            Route::Group(group),
            "a captured message goes in its rows' entry, wherever it stands in the batch"
        );
        outbox::sequence(&mut batch, group, 9, 0);
        let kalamdb_store::BatchOp::Put { key, .. } = &batch.ops()[0] else {
            panic!("a put");
        };
        for g in map.groups() {
            let owns = router.ownership(g);
            assert_eq!(owns.partition(outbox::PARTITION), g != META, "group {g}");
            assert_eq!(owns.key(outbox::PARTITION, key), g == group, "group {g}");
        }
        // Deleting moved messages is each node's own upkeep.
        let mut prune = WriteBatch::new();
        prune.delete_range(
            outbox::PARTITION,
            outbox::group_start(group, 0),
            outbox::group_start(group, 10),
        );
        assert_eq!(router.route_batch(&prune).unwrap(), Route::Local);
    }
}
