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
use kalamdb_catalog::catalog::Catalog;
use kalamdb_store::{BatchOp, WriteBatch};
use std::sync::Arc;
use std::sync::atomic::Ordering;

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
        match ColdPartition::open(&state.tiers.files, topic, p).await {
            Ok(fresh) => *part = fresh.at_least(part.flushed_to()),
            Err(e) => {
                tracing::warn!(topic, partition = p, error = %e, "cannot re-read a topic's segments");
            }
        }
        Some(part)
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
            if let Some(n) = state.next.get(p as usize) {
                n.fetch_max(next, Ordering::SeqCst);
                state.appended.notify_waiters();
            }
        }
        let changed = Catalog::topics_written(batch);
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
    async fn follow(&self, topic: &str) {
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
            (Some(def), Some(state))
                if def.partitions == state.def.partitions
                    && def.storage_id == state.def.storage_id
                    && def.created_at == state.def.created_at =>
            {
                self.adopt(def)
            }
            (Some(def), _) => self.load(def, false).await,
        };
        if let Err(e) = followed {
            tracing::warn!(topic, error = %e, "cannot follow a replicated topic");
        }
    }

    /// Forgets a topic dropped elsewhere (its partition and files are gone with the drop).
    fn forget(&self, topic: &str) {
        self.topics.write().remove(topic);
        self.rebuild_routes();
        self.groups.lock().retain(|(t, _, _), _| t != topic);
    }
}
