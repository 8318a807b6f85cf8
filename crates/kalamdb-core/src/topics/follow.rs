//! A cluster replica following the topics (docs/cluster.md §6): the meta group's entries
//! carry the topics' definitions, messages and floors, written by its leader; a replica
//! applies them to its store and brings its in-memory view in line: next offsets (so
//! long-polling consumers here wake), definitions (routes, as its table writes capture by
//! them), and each partition's flushed segments, re-read from the shared storage before a
//! removal of hot messages is applied, under the partition's lock, so a reader here never
//! misses messages that moved between the tiers.

use super::TopicService;
use super::cold::ColdPartition;
use super::log::{self, Written};
use kalamdb_catalog::catalog::{Catalog, TopicRecord};
use kalamdb_store::{BatchOp, WriteBatch};
use std::sync::Arc;

/// What `batch`'s puts into topics' hot partitions say: the topic and the offset news.
fn topic_writes(batch: &WriteBatch) -> impl Iterator<Item = (&str, Written)> {
    batch.ops().iter().filter_map(|op| match op {
        BatchOp::Put {
            partition,
            key,
            value,
        } => Some((log::topic_of(partition)?, log::written(key, value)?)),
        _ => None,
    })
}

/// The partitions of topics whose floors `batch` writes (a flush, retention or clear).
fn floors(batch: &WriteBatch) -> Vec<(String, u32)> {
    let mut out: Vec<(String, u32)> = Vec::new();
    for (topic, written) in topic_writes(batch) {
        if let Written::Floor { partition: p, .. } = written
            && !out.iter().any(|(t, q)| t == topic && *q == p)
        {
            out.push((topic.to_string(), p));
        }
    }
    out
}

/// Whether `a` and `b` define the same topic, as loaded (its partitions, storage and
/// creation), differing at most in routes and retention.
fn same_incarnation(a: &TopicRecord, b: &TopicRecord) -> bool {
    a.partitions == b.partitions && a.storage_id == b.storage_id && a.created_at == b.created_at
}

/// Held while a replicated removal of hot messages is written: the partitions' cold tiers,
/// already re-read.
pub type Reloaded = Vec<tokio::sync::OwnedRwLockWriteGuard<ColdPartition>>;

impl TopicService {
    /// Before `batch` (another member's) is applied here: re-reads the flushed segments of
    /// each partition whose hot messages it removes, and holds the partition until the
    /// returned guards are dropped (after the write).
    pub async fn prepare_replicated(&self, batch: &WriteBatch) -> Reloaded {
        let mut held = Vec::new();
        for (topic, p) in floors(batch) {
            if let Some(guard) = self.reload_cold(&topic, p).await {
                held.push(guard);
            }
        }
        held
    }

    /// Re-reads partition `p` of `topic`'s segment listing; its lock stays held.
    async fn reload_cold(
        &self,
        topic: &str,
        p: u32,
    ) -> Option<tokio::sync::OwnedRwLockWriteGuard<ColdPartition>> {
        let state = self.state(topic).ok()?;
        let lock = Arc::clone(state.tiers.cold.get(p as usize)?);
        let mut part = lock.write_owned().await;
        if let Err(e) = self.refresh(&state, p, &mut part).await {
            tracing::warn!(topic, partition = p, error = %e, "cannot re-read a topic's segments");
        }
        Some(part)
    }

    /// On a cluster member, re-reads partition `p`'s segment listing from the shared storage
    /// (another member may have changed it since this one read it); `part` is held
    /// exclusively.
    pub(super) async fn refresh(
        &self,
        state: &super::TopicState,
        p: u32,
        part: &mut ColdPartition,
    ) -> kalamdb_catalog::error::Result<()> {
        if self.clustered {
            let fresh = ColdPartition::open(&state.tiers.files, &state.def.topic_id, p).await?;
            *part = fresh.at_least(part.flushed_to());
        }
        Ok(())
    }

    /// Brings every topic in line with this member's store: once its engine follows the
    /// groups' applied writes (what was applied while it opened changed nothing in memory).
    pub async fn resync(&self) {
        let mut ids: Vec<String> = self.topics.read().keys().cloned().collect();
        match self.catalog.topics() {
            Ok(defs) => ids.extend(defs.into_iter().map(|d| d.topic_id)),
            Err(e) => tracing::warn!(error = %e, "cannot list the topics to follow"),
        }
        ids.sort();
        ids.dedup();
        for id in ids {
            self.follow(&id).await;
            let Ok(state) = self.state(&id) else {
                continue;
            };
            match log::next_offsets(&*self.backend, &state.store, state.def.partitions) {
                Ok(next) => {
                    for (p, stored) in next.into_iter().enumerate() {
                        state.applied_to(p, stored);
                    }
                }
                Err(e) => tracing::warn!(topic = %id, error = %e, "cannot read a topic's offsets"),
            }
            for p in 0..state.def.partitions {
                drop(self.reload_cold(&id, p).await);
            }
        }
        // Offsets may be handed out from now on (`Self::leads`).
        self.synced.store(true, std::sync::atomic::Ordering::SeqCst);
    }

    /// After `batch` was applied here (any member's, snapshots included): next offsets move
    /// on, consumers waiting here wake, the mover is told of outbox messages, and topics
    /// whose definitions changed are followed.
    pub(crate) fn replicated(self: &Arc<Self>, batch: &WriteBatch) {
        self.outbox_written(batch);
        for (topic, written) in topic_writes(batch) {
            let Ok(state) = self.state(topic) else {
                continue;
            };
            let (p, next) = match written {
                Written::Message { partition, offset } => (partition, offset + 1),
                Written::Floor { partition, next } => (partition, next),
            };
            state.applied_to(p as usize, next);
        }
        // A changed definition of a loaded topic (its routes) is taken at once, so this
        // member's next table write captures by it; a new or dropped one is followed later.
        let mut changed = Catalog::topics_written(batch);
        changed.retain(|topic| !self.adopt_in_place(topic));
        // A snapshot's floors had no `prepare_replicated`: their listings are re-read now.
        let moved = floors(batch);
        if !changed.is_empty() || !moved.is_empty() {
            let this = Arc::clone(self);
            self.runtime.spawn(async move {
                for topic in changed {
                    this.follow(&topic).await;
                }
                for (topic, p) in moved {
                    drop(this.reload_cold(&topic, p).await);
                }
            });
        }
    }

    /// Brings `topic` in line with its definition in this member's catalog: loaded, changed,
    /// or forgotten when dropped. One at a time, each reading the catalog as it is then, so
    /// the last one leaves the latest definition whatever order they ran in.
    pub(super) async fn follow(&self, topic: &str) {
        let _one = self.following.lock().await;
        let def = match self.catalog.topic(topic) {
            Ok(def) => def,
            Err(e) => {
                tracing::warn!(topic, error = %e, "cannot read a replicated topic");
                return;
            }
        };
        let known = self.topics.read().get(topic).cloned();
        let followed = match (def, known) {
            (None, Some(_)) => {
                self.forget(topic);
                Ok(())
            }
            (None, None) => Ok(()),
            (Some(def), Some(state)) if same_incarnation(&def, &state.def) => self.adopt(def),
            (Some(def), _) => self.load(def, false).await,
        };
        if let Err(e) = followed {
            tracing::warn!(topic, error = %e, "cannot follow a replicated topic");
        }
    }

    /// Takes the stored definition of `topic` when it is the loaded topic's, changed only in
    /// what [`Self::adopt`] changes; whether it did.
    fn adopt_in_place(&self, topic: &str) -> bool {
        let Ok(Some(def)) = self.catalog.topic(topic) else {
            return false;
        };
        let Ok(state) = self.state(topic) else {
            return false;
        };
        same_incarnation(&def, &state.def) && self.adopt(def).is_ok()
    }

    /// Forgets a topic dropped elsewhere (its partition and files are gone with the drop).
    fn forget(&self, topic: &str) {
        self.topics.write().remove(topic);
        self.rebuild_routes();
        self.groups.lock().retain(|(t, _, _), _| t != topic);
    }
}
