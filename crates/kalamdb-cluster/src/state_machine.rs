//! Applies a group's committed commands to the node's store. An entry is normally one atomic
//! store batch holding the entry's writes **and** the group's applied log id (and membership,
//! when the entry changes it), so after a crash an entry is either applied with its mark or
//! not at all. An entry of several writes ([`Command::Writes`]) that cannot go in one batch
//! (one is refused, or a replica derives changes from writes of one key) is written write by
//! write with the mark in the last one: a crash in between applies the entry again from its
//! first write, which leaves the same store (writes are blind puts and deletions). Partition
//! commands are idempotent and run before their entry's mark.
//!
//! Snapshots hold every key the group owns (its [`Ownership`]: whole partitions for the meta
//! group and SHARED shards, the scopes of some users inside USER-table partitions for user
//! shards), and the layouts of the partitions the log created. Building one records only that
//! a snapshot exists (openraft then purges the log behind it); asking for one (to send it to a
//! member) takes a store snapshot at once, whose applied id and membership describe it, and
//! dumps the keys from it when they are first read ([`SnapshotBytes`]), so a snapshot is
//! always exactly the group at its id. The dump reads the keys into memory: right for the meta
//! group and moderate data groups, to be replaced by streamed store checkpoints for large ones
//! (docs/cluster.md §8).

use crate::io_error;
use crate::proposer::Signals;
use crate::snapshot::SnapshotBytes;
use crate::types::{Applied, Command, Member, SharedBatch, TypeConfig, decode, encode};
use kalamdb_store::{BatchOp, KeyLayout, StorageBackend, StorageRead, WriteBatch};
use openraft::storage::{RaftStateMachine, Snapshot};
use openraft::{
    Entry, EntryPayload, ErrorSubject, ErrorVerb, LogId, RaftSnapshotBuilder, SnapshotMeta,
    StorageError, StoredMembership,
};
use serde::{Deserialize, Serialize};
use std::sync::Arc;

type Result<T> = std::result::Result<T, StorageError<u64>>;
type Membership = StoredMembership<u64, Member>;

const APPLIED: &[u8] = b"applied";
const MEMBERSHIP: &[u8] = b"membership";
const SNAPSHOT: &[u8] = b"snapshot";
/// Layouts of partitions created through the log: `layout:` + name.
const LAYOUT: &[u8] = b"layout:";

/// Which keys a group's state machine owns, and so snapshots and replaces. Groups share the
/// node's store: a USER table's partition holds the scopes of users of every user shard.
pub trait Ownership: Send + Sync {
    /// Whether the group may own keys of `partition` at all.
    fn partition(&self, partition: &str) -> bool;
    /// Whether the group owns `key` of a partition it may own keys of.
    fn key(&self, partition: &str, key: &[u8]) -> bool;
}

/// Owns whole partitions chosen by name.
pub struct Partitions<F>(pub F);

impl<F> std::fmt::Debug for Partitions<F> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Partitions")
    }
}

impl<F: Fn(&str) -> bool + Send + Sync> Ownership for Partitions<F> {
    fn partition(&self, partition: &str) -> bool {
        (self.0)(partition)
    }
    fn key(&self, _: &str, _: &[u8]) -> bool {
        true
    }
}

/// What runs after an applied batch ([`ApplyObserver::before`]).
pub type AfterApply = Box<dyn FnOnce() + Send>;

/// A boxed future of [`ApplyObserver::before`].
pub type Before<'a> =
    std::pin::Pin<Box<dyn std::future::Future<Output = Option<AfterApply>> + Send + 'a>>;

/// Told about the writes a group applies on this node, so that what the engine derives from
/// its store follows (caches of the catalog, live queries).
pub trait ApplyObserver: Send + Sync {
    /// Before `batch` of `group`, proposed by another node, is written: whatever must see the
    /// store as it was (the versions the batch replaces) runs here; the returned closure runs
    /// right after the write (publishing the changes).
    fn before<'a>(&'a self, group: u64, batch: &'a WriteBatch) -> Before<'a>;

    /// After any batch of `group` (whoever proposed it, snapshots included) is in the store.
    fn after(&self, group: u64, batch: &WriteBatch);

    /// After a snapshot of `group` replaced what the group owns here (`batch`: its writes):
    /// what [`Self::before`] would have seen of its entries. Defaults to [`Self::after`].
    fn installed(&self, group: u64, batch: &WriteBatch) {
        self.after(group, batch);
    }
}

/// Where the apply observer is registered once the engine over the store is open.
pub type ApplySlot = Arc<std::sync::OnceLock<Arc<dyn ApplyObserver>>>;

/// The meta group's applied index on this node, published by its state machine and awaited by
/// the data groups' (the barrier of [`Command::Write`]'s `meta_applied`).
#[derive(Debug, Clone)]
pub struct Progress {
    tx: Arc<tokio::sync::watch::Sender<u64>>,
}

impl Default for Progress {
    fn default() -> Self {
        Self {
            tx: Arc::new(tokio::sync::watch::channel(0).0),
        }
    }
}

impl Progress {
    /// The group's applied index here.
    pub fn applied(&self) -> u64 {
        *self.tx.borrow()
    }

    fn advance(&self, index: u64) {
        self.tx.send_if_modified(|v| {
            let moved = index > *v;
            *v = (*v).max(index);
            moved
        });
    }

    /// Resolves once the group applied `index` here.
    pub async fn reached(&self, index: u64) {
        let mut rx = self.tx.subscribe();
        let _ = rx.wait_for(|v| *v >= index).await;
    }
}

/// One owned partition in a snapshot: name, layout, keys and values.
type PartitionDump = (String, KeyLayout, Vec<(Vec<u8>, Vec<u8>)>);

/// The content of a snapshot.
#[derive(Debug, Serialize, Deserialize)]
struct SnapshotData {
    /// Every owned partition.
    partitions: Vec<PartitionDump>,
    /// How far the dumping member's meta group had applied: a data group's receiver installs
    /// only once its own meta group applied as far (the tables of the rows exist there, as
    /// the entries' barrier ensures for entries).
    #[serde(default)]
    meta_applied: u64,
}

/// A snapshot as kept in the group's meta partition: that one exists (its description is
/// the one openraft built; asking for the snapshot describes the store as it is then), and
/// no bytes. Snapshots stored by earlier versions carry their bytes, still served.
#[derive(Debug, Serialize, Deserialize)]
struct StoredSnapshot {
    meta: SnapshotMeta<u64, Member>,
    data: Vec<u8>,
}

/// A group's state machine over the node's store. Cheap to clone.
#[derive(Clone)]
pub struct StateMachine {
    backend: Arc<dyn StorageBackend>,
    /// Where the applied mark, membership, layouts and current snapshot live.
    meta: String,
    owns: Arc<dyn Ownership>,
    group: u64,
    /// This node's id: its own proposals' changes were published by its engine.
    node: u64,
    hook: ApplySlot,
    meta_progress: Progress,
    /// This group's own applied index, told synchronously as entries apply (openraft's metrics
    /// follow a moment later): read-your-writes marks and waits use it.
    progress: Progress,
    /// Where this node's waiting proposals are told their entries were applied.
    signals: Signals,
}

impl std::fmt::Debug for StateMachine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StateMachine")
            .field("meta", &self.meta)
            .finish_non_exhaustive()
    }
}

impl StateMachine {
    /// The state machine whose marks live in partition `meta` (created when missing) and which
    /// owns the keys `owns` accepts (never those of `meta` itself).
    pub fn open(
        backend: Arc<dyn StorageBackend>,
        meta: impl Into<String>,
        owns: Arc<dyn Ownership>,
    ) -> std::result::Result<Self, kalamdb_store::StoreError> {
        Self::open_group(
            backend,
            meta,
            owns,
            (0, 0),
            (
                ApplySlot::default(),
                Progress::default(),
                Progress::default(),
                Signals::default(),
            ),
        )
    }

    /// [`Self::open`] for group `group` on node `node`, telling `hook` (once set) about every
    /// applied write; every group publishes how far it applied to `progress`, and the data
    /// groups wait on `meta_progress` (for the meta group itself, pass that same channel as
    /// its `progress`).
    pub(crate) fn open_group(
        backend: Arc<dyn StorageBackend>,
        meta: impl Into<String>,
        owns: Arc<dyn Ownership>,
        (group, node): (u64, u64),
        (hook, meta_progress, progress, signals): (ApplySlot, Progress, Progress, Signals),
    ) -> std::result::Result<Self, kalamdb_store::StoreError> {
        let meta = meta.into();
        if !backend.has_partition(&meta) {
            backend.create_partition(&meta, KeyLayout::Flat)?;
        }
        Ok(Self {
            backend,
            meta,
            owns,
            group,
            node,
            hook,
            meta_progress,
            progress,
            signals,
        })
    }

    fn read<T: serde::de::DeserializeOwned>(&self, key: &[u8]) -> Result<Option<T>> {
        self.read_in(&*self.backend, key)
    }

    /// [`Self::read`] in a given view of the store (a snapshot being dumped).
    fn read_in<T: serde::de::DeserializeOwned>(
        &self,
        view: &dyn StorageRead,
        key: &[u8],
    ) -> Result<Option<T>> {
        crate::read_value(view, &self.meta, key, ErrorSubject::StateMachine)
    }

    fn put<T: Serialize>(&self, batch: &mut WriteBatch, key: &[u8], value: &T) -> Result<()> {
        let bytes =
            encode(value).map_err(|e| io_error(ErrorSubject::StateMachine, ErrorVerb::Write, e))?;
        batch.put(&self.meta, key.to_vec(), bytes);
        Ok(())
    }

    fn write(&self, batch: WriteBatch) -> Result<()> {
        self.backend
            .write(batch)
            .map_err(|e| io_error(ErrorSubject::StateMachine, ErrorVerb::Write, e))
    }

    /// Tells how far this group applied.
    fn progressed(&self, index: u64) {
        self.progress.advance(index);
    }

    fn published(&self, applied: Option<LogId<u64>>) {
        if let Some(id) = applied {
            self.progressed(id.index);
        }
    }

    /// Applies the writes of entry `id` in order and writes the entry's applied mark, all
    /// before returning; answers per write why it was refused (its partition is gone: the same
    /// on every replica, so a refusal is an answer, not a failure that would stop the group).
    /// The writes go to the store in one write when that is the same as writing them one by
    /// one: always for this node's own (their changes were published by its engine), and for
    /// another node's when no key is written by two of them (the observer's `before` reads the
    /// versions they replace, in one pass, and a key written twice would show it the older
    /// one). Otherwise, or when one is refused, they go one by one, each between the
    /// observer's `before` and the closure it returns. A crash between two of those writes
    /// leaves the entry unapplied, and applying it again is harmless: a batch's operations are
    /// blind puts and deletions.
    async fn apply_writes(
        &self,
        id: LogId<u64>,
        batches: &[SharedBatch],
        origin: u64,
    ) -> Result<Vec<Option<String>>> {
        let observer = self.hook.get().cloned();
        let derives = origin != self.node && observer.is_some();
        if !derives || one_pass(batches) {
            // The observer sees the writes as one batch (joined only when several).
            let joined;
            let publish = match &observer {
                Some(o) if derives => {
                    let all: &WriteBatch = match batches {
                        [one] => one,
                        _ => {
                            joined = WriteBatch::joined(batches.iter().map(|b| &**b));
                            &joined
                        }
                    };
                    o.before(self.group, all).await
                }
                _ => None,
            };
            let mut mark = WriteBatch::new();
            self.put(&mut mark, APPLIED, &Some(id))?;
            let mut parts: Vec<&WriteBatch> = batches.iter().map(|b| &**b).collect();
            parts.push(&mark);
            match self.backend.write_parts(&parts) {
                Ok(()) => {
                    if let Some(o) = &observer {
                        for batch in batches {
                            o.after(self.group, batch);
                        }
                    }
                    if let Some(publish) = publish {
                        publish();
                    }
                    return Ok(vec![None; batches.len()]);
                }
                // One of them is refused: find which, one by one.
                Err(kalamdb_store::StoreError::PartitionNotFound(_)) => {}
                Err(e) => return Err(io_error(ErrorSubject::Apply(id), ErrorVerb::Write, e)),
            }
        }
        let mut refusals = Vec::with_capacity(batches.len());
        for (i, writes) in batches.iter().enumerate() {
            let last = i + 1 == batches.len();
            let publish = match &observer {
                Some(o) if origin != self.node => o.before(self.group, writes).await,
                _ => None,
            };
            let mut mark = WriteBatch::new();
            if last {
                self.put(&mut mark, APPLIED, &Some(id))?;
            }
            match self.backend.write_parts(&[writes, &mark]) {
                Ok(()) => {
                    if let Some(o) = &observer {
                        o.after(self.group, writes);
                    }
                    if let Some(publish) = publish {
                        publish();
                    }
                    refusals.push(None);
                }
                Err(kalamdb_store::StoreError::PartitionNotFound(p)) => {
                    refusals.push(Some(format!("partition {p} does not exist")));
                    if last {
                        let mut mark = WriteBatch::new();
                        self.put(&mut mark, APPLIED, &Some(id))?;
                        self.write(mark)?;
                    }
                }
                Err(e) => return Err(io_error(ErrorSubject::Apply(id), ErrorVerb::Write, e)),
            }
        }
        Ok(refusals)
    }

    fn owned(&self) -> Vec<String> {
        let mut names: Vec<String> = self
            .backend
            .list_partitions()
            .into_iter()
            // Never a group's own log or marks, whatever the ownership says.
            .filter(|p| !p.starts_with("raft.") && self.owns.partition(p))
            .collect();
        names.sort();
        names
    }

    fn layout_key(name: &str) -> Vec<u8> {
        [LAYOUT, name.as_bytes()].concat()
    }

    /// Runs a partition command (idempotent) and records the layout of created ones in
    /// `batch`, which commits with the entry's mark.
    fn partition_change(&self, command: &Command, batch: &mut WriteBatch) -> Result<()> {
        let fail = |e: kalamdb_store::StoreError| {
            io_error(ErrorSubject::StateMachine, ErrorVerb::Write, e)
        };
        match command {
            Command::CreatePartition { name, layout } => {
                if !self.backend.has_partition(name) {
                    self.backend.create_partition(name, *layout).map_err(fail)?;
                }
                self.put(batch, &Self::layout_key(name), layout)
            }
            Command::DropPartition { name } => {
                if self.backend.has_partition(name) {
                    self.backend.drop_partition(name).map_err(fail)?;
                }
                batch.delete(&self.meta, Self::layout_key(name));
                Ok(())
            }
            Command::Write { .. } | Command::Writes { .. } => Ok(()),
        }
    }

    /// The owned keys of `partition`, with their values.
    fn owned_pairs(
        &self,
        view: &dyn StorageRead,
        partition: &str,
    ) -> Result<Vec<(Vec<u8>, Vec<u8>)>> {
        let mut pairs = Vec::new();
        view.scan_each(partition, &[], None, &mut |k, v| {
            if self.owns.key(partition, k) {
                pairs.push((k.to_vec(), v.to_vec()));
            }
            Ok(true)
        })
        .map_err(|e| io_error(ErrorSubject::StateMachine, ErrorVerb::Read, e))?;
        Ok(pairs)
    }

    /// The applied mark and membership in `view`.
    fn marks_in(&self, view: &dyn StorageRead) -> Result<(Option<LogId<u64>>, Membership)> {
        let applied = self.read_in::<Option<LogId<u64>>>(view, APPLIED)?.flatten();
        let membership = self
            .read_in::<Membership>(view, MEMBERSHIP)?
            .unwrap_or_default();
        Ok((applied, membership))
    }

    /// The layouts recorded for partitions the log created (the meta group's), by name.
    fn layouts_in(&self, view: &dyn StorageRead) -> Result<Vec<(String, KeyLayout)>> {
        let mut found = Vec::new();
        view.scan_each(&self.meta, LAYOUT, None, &mut |k, v| {
            found.push((k[LAYOUT.len()..].to_vec(), v.to_vec()));
            Ok(true)
        })
        .map_err(|e| io_error(ErrorSubject::StateMachine, ErrorVerb::Read, e))?;
        found
            .into_iter()
            .map(|(name, layout)| {
                let layout = decode(&layout)
                    .map_err(|e| io_error(ErrorSubject::StateMachine, ErrorVerb::Read, e))?;
                Ok((String::from_utf8_lossy(&name).into_owned(), layout))
            })
            .collect()
    }

    /// Every owned key of the partitions `owned` in `view`, with the partitions' layouts, and
    /// the partitions the log created that no group owns (a node's local records, such as
    /// its jobs: named without keys, so a member that joins by snapshot creates them too).
    fn dump_in(
        &self,
        view: &dyn StorageRead,
        owned: Vec<String>,
        meta_applied: u64,
    ) -> Result<SnapshotData> {
        let layouts: std::collections::BTreeMap<String, KeyLayout> =
            self.layouts_in(view)?.into_iter().collect();
        let meta_group = self.group == crate::shard::META;
        let mut partitions = Vec::new();
        for name in owned {
            let layout = match layouts.get(&name) {
                Some(layout) => *layout,
                // The meta group records every partition it creates: one without a record
                // in the view was created after it (its entry is after the view's mark).
                None if meta_group => continue,
                // A data group's receiver writes into partitions its meta group made.
                None => KeyLayout::Flat,
            };
            // A partition dropped since the view was taken fails the dump (openraft asks
            // again): skipping it would not be the group at the view's id.
            let pairs = self.owned_pairs(view, &name)?;
            partitions.push((name, layout, pairs));
        }
        for (name, layout) in layouts {
            if !partitions.iter().any(|(owned, _, _)| *owned == name) {
                partitions.push((name, layout, Vec::new()));
            }
        }
        Ok(SnapshotData {
            partitions,
            meta_applied,
        })
    }

    /// The batch that makes the group here what `data` (a snapshot described by `meta`) holds:
    /// the owned keys deleted (other groups' keys in shared partitions stay) and the
    /// snapshot's written, with its marks. The meta group also drops the partitions the log
    /// created here that the snapshot no longer has (dropped while this member was away) and
    /// creates those it lacks; a data group writes only into partitions its meta group made.
    fn install_batch(
        &self,
        meta: &SnapshotMeta<u64, Member>,
        data: &SnapshotData,
    ) -> Result<WriteBatch> {
        let fail = |e: kalamdb_store::StoreError| {
            io_error(ErrorSubject::StateMachine, ErrorVerb::Write, e)
        };
        let meta_group = self.group == crate::shard::META;
        let mut batch = WriteBatch::new();
        if meta_group {
            for (name, _) in self.layouts_in(&*self.backend)? {
                if !data.partitions.iter().any(|(named, _, _)| *named == name) {
                    if self.backend.has_partition(&name) {
                        self.backend.drop_partition(&name).map_err(fail)?;
                    }
                    batch.delete(&self.meta, Self::layout_key(&name));
                }
            }
        }
        for name in self.owned() {
            match self.owned_pairs(&*self.backend, &name) {
                Ok(pairs) => pairs.into_iter().for_each(|(k, _)| batch.delete(&name, k)),
                Err(_) if !self.backend.has_partition(&name) => continue,
                Err(e) => return Err(e),
            }
        }
        for (name, layout, pairs) in &data.partitions {
            if meta_group {
                if !self.backend.has_partition(name) {
                    self.backend.create_partition(name, *layout).map_err(fail)?;
                }
                self.put(&mut batch, &Self::layout_key(name), layout)?;
            } else if !self.backend.has_partition(name) {
                continue;
            }
            for (k, v) in pairs {
                batch.put(name, k.clone(), v.clone());
            }
        }
        self.put(&mut batch, APPLIED, &meta.last_log_id)?;
        self.put(&mut batch, MEMBERSHIP, &meta.last_membership)?;
        self.record_snapshot(&mut batch, meta)?;
        Ok(batch)
    }

    /// Puts the record that snapshot `meta` exists into `batch`.
    fn record_snapshot(
        &self,
        batch: &mut WriteBatch,
        meta: &SnapshotMeta<u64, Member>,
    ) -> Result<()> {
        let stored = StoredSnapshot {
            meta: meta.clone(),
            data: Vec::new(),
        };
        self.put(batch, SNAPSHOT, &stored)
    }

    /// The bytes of the group in `view`, dumped when first read (`owned`: the partitions to
    /// dump, listed then when `None`).
    fn lazy_dump(
        &self,
        view: Arc<dyn kalamdb_store::StorageSnapshot + Send + Sync>,
        owned: Option<Vec<String>>,
        meta_applied: u64,
    ) -> SnapshotBytes {
        let sm = self.clone();
        SnapshotBytes::lazy(Box::new(move || {
            let owned = owned.unwrap_or_else(|| sm.owned());
            let data = sm
                .dump_in(&*view, owned, meta_applied)
                .map_err(std::io::Error::other)?;
            encode(&data).map_err(std::io::Error::other)
        }))
    }

    /// The same id for the same group state (the dump is in a fixed order).
    fn snapshot_id(applied: Option<LogId<u64>>, meta_applied: u64) -> String {
        match applied {
            Some(id) => format!("{}-{}-m{meta_applied}", id.leader_id, id.index),
            None => format!("--m{meta_applied}"),
        }
    }

    /// A snapshot of the group as the store is now: its log id and membership read from one
    /// store snapshot taken here (openraft asks on the state machine's task, between applies),
    /// its keys dumped from that same store snapshot when first read.
    fn current(&self) -> Result<Snapshot<TypeConfig>> {
        let view = Arc::clone(&self.backend).owned_snapshot();
        let (last_applied, membership) = self.marks_in(&*view)?;
        let owned = self.owned();
        let meta_applied = self.meta_progress.applied();
        let snapshot_id = Self::snapshot_id(last_applied, meta_applied);
        let bytes = self.lazy_dump(view, Some(owned), meta_applied);
        Ok(Snapshot {
            meta: SnapshotMeta {
                last_log_id: last_applied,
                last_membership: membership,
                snapshot_id,
            },
            snapshot: Box::new(bytes),
        })
    }
}

impl RaftSnapshotBuilder<TypeConfig> for StateMachine {
    /// Records that a snapshot exists (cheap: two marks read, one record written; openraft
    /// purges the log behind it and keeps only this description); its keys are dumped when a
    /// snapshot is sent ([`Self::current`]).
    async fn build_snapshot(&mut self) -> Result<Snapshot<TypeConfig>> {
        let view = Arc::clone(&self.backend).owned_snapshot();
        let (last_applied, last_membership) = self.marks_in(&*view)?;
        let meta_applied = self.meta_progress.applied();
        let meta = SnapshotMeta {
            last_log_id: last_applied,
            last_membership,
            snapshot_id: Self::snapshot_id(last_applied, meta_applied),
        };
        let mut batch = WriteBatch::new();
        self.record_snapshot(&mut batch, &meta)?;
        self.write(batch)?;
        let bytes = self.lazy_dump(view, None, meta_applied);
        Ok(Snapshot {
            meta,
            snapshot: Box::new(bytes),
        })
    }
}

impl RaftStateMachine<TypeConfig> for StateMachine {
    type SnapshotBuilder = Self;

    async fn applied_state(&mut self) -> Result<(Option<LogId<u64>>, Membership)> {
        let applied = self.read::<Option<LogId<u64>>>(APPLIED)?.flatten();
        self.published(applied);
        let membership = self.read::<Membership>(MEMBERSHIP)?.unwrap_or_default();
        Ok((applied, membership))
    }

    async fn apply<I>(&mut self, entries: I) -> Result<Vec<Applied>>
    where
        I: IntoIterator<Item = Entry<TypeConfig>> + Send,
        I::IntoIter: Send,
    {
        let mut answers = Vec::new();
        for entry in entries {
            let id = entry.log_id;
            let (mut batches, origin, meta_applied, single, proposal) = match entry.payload {
                EntryPayload::Normal(Command::Write {
                    batch,
                    origin,
                    meta_applied,
                }) => (vec![batch], origin, meta_applied, true, 0),
                EntryPayload::Normal(Command::Writes {
                    batches,
                    origin,
                    meta_applied,
                    proposal,
                }) => (batches, origin, meta_applied, false, proposal),
                payload => {
                    let mut batch = WriteBatch::new();
                    match payload {
                        EntryPayload::Normal(command) => {
                            self.partition_change(&command, &mut batch)?
                        }
                        EntryPayload::Membership(m) => {
                            let stored = Membership::new(Some(id), m);
                            self.put(&mut batch, MEMBERSHIP, &stored)?;
                        }
                        EntryPayload::Blank => {}
                    }
                    self.put(&mut batch, APPLIED, &Some(id))?;
                    self.write(batch)?;
                    answers.push(Applied {
                        index: id.index,
                        ..Applied::default()
                    });
                    continue;
                }
            };
            if self.group != crate::shard::META && meta_applied > 0 {
                self.meta_progress.reached(meta_applied).await;
            }
            // Topic messages a data write left in the outbox are keyed by where they landed
            // in this group's log (the same on every replica).
            for (position, batch) in batches.iter_mut().enumerate() {
                if kalamdb_store::outbox::touches(batch) {
                    let batch = batch.make_mut();
                    kalamdb_store::outbox::sequence(batch, self.group, id.index, position as u32);
                }
            }
            let parts = self.apply_writes(id, &batches, origin).await?;
            if origin == self.node && proposal != 0 {
                // The writers wait for this (their answers carry the applied marks).
                self.progressed(id.index);
                let applied = Applied {
                    index: id.index,
                    refused: None,
                    parts: parts.clone(),
                };
                self.signals.applied(proposal, applied);
            }
            answers.push(match single {
                true => Applied {
                    index: id.index,
                    refused: parts.into_iter().next().flatten(),
                    parts: Vec::new(),
                },
                false => Applied {
                    index: id.index,
                    refused: None,
                    parts,
                },
            });
        }
        if let Some(last) = answers.last() {
            self.progressed(last.index);
        }
        Ok(answers)
    }

    async fn get_snapshot_builder(&mut self) -> Self::SnapshotBuilder {
        self.clone()
    }

    async fn begin_receiving_snapshot(&mut self) -> Result<Box<SnapshotBytes>> {
        Ok(Box::new(SnapshotBytes::ready(Vec::new())))
    }

    async fn install_snapshot(
        &mut self,
        meta: &SnapshotMeta<u64, Member>,
        snapshot: Box<SnapshotBytes>,
    ) -> Result<()> {
        let unreadable = |e: String| {
            io_error(
                ErrorSubject::Snapshot(Some(meta.signature())),
                ErrorVerb::Read,
                e,
            )
        };
        let bytes = snapshot
            .into_bytes()
            .map_err(|e| unreadable(e.to_string()))?;
        let data: SnapshotData = decode(&bytes).map_err(|e| unreadable(e.to_string()))?;
        if self.group != crate::shard::META && data.meta_applied > 0 {
            // As for entries: the rows' tables exist here first.
            self.meta_progress.reached(data.meta_applied).await;
        }
        // Another group's state machine (the meta group's) may drop a partition meanwhile:
        // the batch is then built again without it.
        let mut attempts = 0;
        let batch = loop {
            let batch = self.install_batch(meta, &data)?;
            match self.backend.write(batch.clone()) {
                Ok(()) => break batch,
                Err(kalamdb_store::StoreError::PartitionNotFound(_)) if attempts < 5 => {
                    attempts += 1;
                }
                Err(e) => return Err(io_error(ErrorSubject::StateMachine, ErrorVerb::Write, e)),
            }
        };
        if let Some(observer) = self.hook.get() {
            // Told after the write, as for entries: everything the group owns was replaced.
            observer.installed(self.group, &batch);
        }
        self.published(meta.last_log_id);
        Ok(())
    }

    /// Once a snapshot was built or installed: the group as the store is now ([`Self::current`];
    /// openraft accepts a snapshot newer than the one it recorded). A snapshot an earlier
    /// version stored with its bytes is served as stored.
    async fn get_current_snapshot(&mut self) -> Result<Option<Snapshot<TypeConfig>>> {
        match self.read::<StoredSnapshot>(SNAPSHOT)? {
            None => Ok(None),
            Some(stored) if stored.data.is_empty() => self.current().map(Some),
            Some(stored) => Ok(Some(Snapshot {
                meta: stored.meta,
                snapshot: Box::new(SnapshotBytes::ready(stored.data)),
            })),
        }
    }
}

/// Whether `batches` written as one batch read the same to an observer deriving changes as
/// written one by one: all of one kind (upkeep or not), no range deletion, and no key written
/// by two of them.
fn one_pass(batches: &[SharedBatch]) -> bool {
    if batches.len() <= 1 {
        return true;
    }
    let upkeep = batches[0].is_upkeep();
    let mut earlier: std::collections::HashSet<(&str, &[u8])> = Default::default();
    for batch in batches {
        if batch.is_upkeep() != upkeep {
            return false;
        }
        let mut mine = Vec::with_capacity(batch.len());
        for op in batch.ops() {
            let target = match op {
                BatchOp::Put { partition, key, .. } | BatchOp::Delete { partition, key } => {
                    (partition.as_str(), key.as_slice())
                }
                BatchOp::DeleteRange { .. } => return false,
            };
            if earlier.contains(&target) {
                return false;
            }
            mine.push(target);
        }
        earlier.extend(mine);
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::Ordering;

    #[test]
    fn writes_go_in_one_pass_only_when_no_key_is_written_twice() {
        let put = |key: &[u8]| {
            let mut b = WriteBatch::new();
            b.put("t", key.to_vec(), b"v".to_vec());
            b
        };
        fn shared<const N: usize>(batches: [WriteBatch; N]) -> Vec<SharedBatch> {
            batches.into_iter().map(SharedBatch::from).collect()
        }
        assert!(one_pass(&[]));
        assert!(one_pass(&shared([put(b"a")])));
        assert!(one_pass(&shared([put(b"a"), put(b"b"), put(b"c")])));
        // A key twice in one batch is that batch's business; in two, the second replaces
        // what the first wrote.
        let mut twice = put(b"a");
        twice.put("t", b"a".to_vec(), b"w".to_vec());
        assert!(one_pass(&shared([twice, put(b"b")])));
        assert!(!one_pass(&shared([put(b"a"), put(b"b"), put(b"a")])));
        let mut delete = WriteBatch::new();
        delete.delete("t", b"a".to_vec());
        assert!(!one_pass(&shared([put(b"a"), delete])));
        // The same key in another partition is another key.
        let mut other = WriteBatch::new();
        other.put("u", b"a".to_vec(), b"v".to_vec());
        assert!(one_pass(&shared([put(b"a"), other])));
        let mut range = WriteBatch::new();
        range.delete_range("t", b"x".to_vec(), b"y".to_vec());
        assert!(!one_pass(&shared([put(b"a"), range])));
        let mut upkeep = WriteBatch::upkeep();
        upkeep.delete("t", b"z".to_vec());
        assert!(!one_pass(&shared([put(b"a"), upkeep])));
    }
    use crate::log_store::LogStore;
    use kalamdb_store::{RocksBackend, StoreOptions};
    use openraft::testing::{StoreBuilder, Suite};

    struct OnRocks;

    impl StoreBuilder<TypeConfig, LogStore, StateMachine, tempfile::TempDir> for OnRocks {
        async fn build(&self) -> Result<(tempfile::TempDir, LogStore, StateMachine)> {
            let dir = tempfile::tempdir()
                .map_err(|e| io_error(ErrorSubject::Store, ErrorVerb::Write, e))?;
            let backend: Arc<dyn StorageBackend> = Arc::new(
                RocksBackend::open(dir.path(), &StoreOptions::default())
                    .map_err(|e| io_error(ErrorSubject::Store, ErrorVerb::Write, e))?,
            );
            let log = LogStore::open(Arc::clone(&backend), "raft.1.log")
                .map_err(|e| io_error(ErrorSubject::Store, ErrorVerb::Write, e))?;
            let sm = StateMachine::open(
                backend,
                "raft.1.sm",
                Arc::new(Partitions(|p: &str| !p.starts_with("raft."))),
            )
            .map_err(|e| io_error(ErrorSubject::Store, ErrorVerb::Write, e))?;
            Ok((dir, log, sm))
        }
    }

    /// Counts what the observer is told.
    #[derive(Default)]
    struct Counted {
        before: std::sync::atomic::AtomicUsize,
        after: std::sync::atomic::AtomicUsize,
        installed: std::sync::atomic::AtomicUsize,
    }

    impl ApplyObserver for Counted {
        fn before<'a>(&'a self, _: u64, _: &'a WriteBatch) -> Before<'a> {
            self.before.fetch_add(1, Ordering::SeqCst);
            Box::pin(async { None })
        }
        fn after(&self, _: u64, _: &WriteBatch) {
            self.after.fetch_add(1, Ordering::SeqCst);
        }
        fn installed(&self, _: u64, _: &WriteBatch) {
            self.installed.fetch_add(1, Ordering::SeqCst);
        }
    }

    fn entry(index: u64, command: Command) -> Entry<TypeConfig> {
        Entry {
            log_id: LogId::new(openraft::CommittedLeaderId::new(1, 1), index),
            payload: EntryPayload::Normal(command),
        }
    }

    fn put(key: &str, value: &str) -> Command {
        let mut batch = WriteBatch::new();
        batch.put("t", key.as_bytes().to_vec(), value.as_bytes().to_vec());
        Command::write(batch)
    }

    fn rows(backend: &dyn StorageBackend) -> Vec<(Vec<u8>, Vec<u8>)> {
        let mut rows = Vec::new();
        backend
            .scan_each("t", &[], None, &mut |k, v| {
                rows.push((k.to_vec(), v.to_vec()));
                Ok(true)
            })
            .unwrap();
        rows
    }

    /// Building a snapshot reads nothing; asking for it describes and dumps the group as it is
    /// then, so a receiver is exactly at the snapshot's id. A receiver of the meta group drops
    /// the partitions the log created that the group no longer has.
    #[tokio::test]
    async fn a_snapshot_is_the_group_as_it_is_when_asked_for() -> Result<()> {
        let open = |dir: &std::path::Path, node: u64, hook: ApplySlot| {
            let backend: Arc<dyn StorageBackend> =
                Arc::new(RocksBackend::open(dir, &StoreOptions::default()).unwrap());
            let sm = StateMachine::open_group(
                Arc::clone(&backend),
                "raft.0.sm",
                Arc::new(Partitions(|p: &str| !p.starts_with("raft."))),
                (crate::shard::META, node),
                (
                    hook,
                    Progress::default(),
                    Progress::default(),
                    Signals::default(),
                ),
            )
            .unwrap();
            (backend, sm)
        };
        let create = |name: &str| Command::CreatePartition {
            name: name.into(),
            layout: KeyLayout::Flat,
        };
        let (a_dir, b_dir) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        let (a_store, mut a) = open(a_dir.path(), 1, ApplySlot::default());
        a.apply(vec![entry(1, create("t")), entry(2, put("k", "v1"))])
            .await?;
        let built = a.get_snapshot_builder().await.build_snapshot().await?;
        assert_eq!(built.meta.last_log_id.map(|l| l.index), Some(2));
        a.apply(vec![entry(3, put("k", "v2")), entry(4, put("j", "x"))])
            .await?;
        let current = a.get_current_snapshot().await?.unwrap();
        assert_eq!(current.meta.last_log_id.map(|l| l.index), Some(4));

        // B once had a partition the group dropped while B was away.
        let observer = Arc::new(Counted::default());
        let hook = ApplySlot::default();
        let _ = hook.set(Arc::clone(&observer) as Arc<dyn ApplyObserver>);
        let (b_store, mut b) = open(b_dir.path(), 2, hook);
        b.apply(vec![entry(1, create("gone"))]).await?;
        assert!(b_store.has_partition("gone"));
        b.install_snapshot(&current.meta, current.snapshot).await?;
        assert_eq!(observer.installed.load(Ordering::SeqCst), 1);
        assert_eq!(
            rows(&*b_store),
            rows(&*a_store),
            "the snapshot is as of entry 4"
        );
        assert!(!b_store.has_partition("gone"));
        assert_eq!(b.applied_state().await?.0.map(|l| l.index), Some(4));

        let last = entry(5, put("m", "y"));
        a.apply(vec![last.clone()]).await?;
        b.apply(vec![last]).await?;
        assert_eq!(observer.before.load(Ordering::SeqCst), 1);
        assert_eq!(rows(&*b_store), rows(&*a_store));
        // B serves the group as it has it now.
        let from_b = b.get_current_snapshot().await?.unwrap();
        assert_eq!(from_b.meta.last_log_id.map(|l| l.index), Some(5));
        Ok(())
    }

    /// openraft's own conformance suite for log stores and state machines, on RocksDB.
    #[test]
    fn the_log_store_and_state_machine_pass_openraft_s_suite() -> Result<()> {
        Suite::test_all(OnRocks)
    }
}
