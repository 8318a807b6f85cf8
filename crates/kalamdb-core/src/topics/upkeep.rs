//! Moving a topic's messages between and out of its tiers: flushing the hot log into Parquet
//! segments, retention by age and by bytes, and `CLEAR TOPIC`. Each holds the topic's upkeep
//! lock, so one runs at a time per topic; readers are kept out only while a tier's listing
//! and the hot log change together (see `Tiers`).
//!
//! Retention removes the oldest messages first, whole segments in the cold tier, and (unless
//! the topic says `RETENTION_KEEPS_UNACKED = false`) never a message at or after the lowest
//! next offset of the consumer groups that have acknowledged on the partition.
//! `RETENTION_MAX_BYTES` bounds each partition (as Kafka's `retention.bytes` does), counting
//! segment files and stored hot messages.

use super::cold::{self, SEGMENT_MESSAGES};
use super::log::{self, Message};
use super::{TopicService, TopicState};
use kalamdb_catalog::error::{KalamError, Result};
use kalamdb_store::WriteBatch;
use kalamdb_tables::faults::{Faults, FlushStep};
use std::sync::Arc;
use std::sync::atomic::Ordering;

/// What a flush moved.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Flushed {
    /// Messages written to segments.
    pub messages: u64,
    /// Bytes of the segments written.
    pub bytes: u64,
}

/// How long a cluster member keeps the files of segments it unlisted, for replicas that still
/// read them until they apply the unlisting.
const REPLICA_GRACE: std::time::Duration = std::time::Duration::from_secs(30);

/// Runs blocking store work off the async executor.
async fn blocking<T: Send + 'static>(
    work: impl FnOnce() -> Result<T> + Send + 'static,
) -> Result<T> {
    tokio::task::spawn_blocking(work)
        .await
        .map_err(|e| KalamError::Internal(e.to_string()))?
}

impl TopicService {
    fn states(&self, topic_id: Option<&str>) -> Result<Vec<Arc<TopicState>>> {
        match topic_id {
            Some(id) => Ok(vec![self.state(id)?]),
            None => Ok(self.topics.read().values().cloned().collect()),
        }
    }

    /// Whether `state` is still the registered topic of its id (not dropped, or dropped and
    /// created again, while its upkeep waited for the lock).
    fn current(&self, state: &TopicState) -> bool {
        self.topics
            .read()
            .get(&state.def.topic_id)
            .is_some_and(|t| Arc::ptr_eq(&t.tiers, &state.tiers))
    }

    /// The partition lock of `p`.
    fn partition(state: &TopicState, p: u32) -> Result<&tokio::sync::RwLock<cold::ColdPartition>> {
        state
            .tiers
            .cold
            .get(p as usize)
            .map(|lock| &**lock)
            .ok_or_else(|| KalamError::Internal("topic partition missing".into()))
    }

    /// Whether some topic holds an unflushed message older than `before_ms` (a flush is due).
    /// A partition being flushed or read from its cold tier just now is not looked at.
    pub fn flush_due(&self, before_ms: i64) -> bool {
        self.topics.read().values().any(|t| {
            t.tiers.cold.iter().enumerate().any(|(p, part)| {
                let Ok(part) = part.try_read() else {
                    return false;
                };
                log::first(&*self.backend, &t.store, p as u32, part.flushed_to())
                    .ok()
                    .flatten()
                    .is_some_and(|(_, m)| m.ts_ms < before_ms)
            })
        })
    }

    /// Moves the hot messages of `topic_id` (of every topic: `None`) appended before
    /// `before_ms` (every one: `None`) into Parquet segments of at most [`SEGMENT_MESSAGES`];
    /// messages appended while it runs wait for the next flush. `faults` stop it between its
    /// steps in tests (the same steps as a table flush).
    pub async fn flush(
        &self,
        topic_id: Option<&str>,
        before_ms: Option<i64>,
        faults: &Faults,
    ) -> Result<Flushed> {
        let mut done = Flushed::default();
        for state in self.states(topic_id)? {
            let _upkeep = state.tiers.upkeep.lock().await;
            if !self.current(&state) {
                continue;
            }
            for p in 0..state.def.partitions {
                let lock = Self::partition(&state, p)?;
                // A cluster's previous meta leader may have changed the listing last.
                self.refresh(&state, p, &mut *lock.write().await).await?;
                let end = state.next[p as usize].load(Ordering::SeqCst);
                let mut swept = false;
                while let Some(run) = self.flushable(&state, p, end, before_ms).await? {
                    if !swept {
                        // What a crash left in the folder, before a file of the same name.
                        lock.read().await.remove_strays(&state.tiers.files).await?;
                        swept = true;
                    }
                    let last = run[run.len() - 1].0;
                    done.messages += run.len() as u64;
                    let segment =
                        cold::write_segment(&state.tiers.files, &state.def.topic_id, p, run);
                    let segment = segment.await?;
                    faults.flush_step(FlushStep::SegmentWritten)?;
                    done.bytes += segment.bytes;
                    let mut part = lock.write().await;
                    part.list(&state.tiers.files, segment).await?;
                    faults.flush_step(FlushStep::ManifestCommitted)?;
                    let mut batch = WriteBatch::new();
                    // From 0: also what an earlier flush listed but did not remove.
                    log::remove(&mut batch, &state.store, p, 0, last + 1);
                    // Offsets never go back, even once every message has left the hot log.
                    log::set_floor(&mut batch, &state.store, p, last + 1);
                    self.backend.write(batch)?;
                }
            }
        }
        Ok(done)
    }

    /// The next gap-free run of hot messages of `partition` before offset `end` to flush
    /// (appended before `before_ms`), at most [`SEGMENT_MESSAGES`]; `None` when there is none.
    async fn flushable(
        &self,
        state: &TopicState,
        partition: u32,
        end: u64,
        before_ms: Option<i64>,
    ) -> Result<Option<Vec<(u64, Message)>>> {
        let from = Self::partition(state, partition)?.read().await.flushed_to();
        let (backend, store) = (Arc::clone(&self.backend), state.store.clone());
        let run = blocking(move || {
            let mut run: Vec<(u64, Message)> = Vec::new();
            log::each(&*backend, &store, partition, from, &mut |offset, bytes| {
                let m = log::decode(bytes)?;
                let gap = run.last().is_some_and(|(last, _)| offset != last + 1);
                if offset >= end || gap || before_ms.is_some_and(|b| m.ts_ms >= b) {
                    return Ok(false);
                }
                run.push((offset, m));
                Ok(run.len() < SEGMENT_MESSAGES)
            })?;
            Ok(run)
        })
        .await?;
        Ok((!run.is_empty()).then_some(run))
    }

    /// Removes every message of a topic appended before it, flushed or not (offsets go on from
    /// where they were; groups' committed offsets stay). Returns how many were removed.
    pub async fn clear(&self, topic_id: &str) -> Result<u64> {
        let state = self.state(topic_id)?;
        let _upkeep = state.tiers.upkeep.lock().await;
        let mut removed = 0;
        for p in 0..state.def.partitions {
            let mut part = Self::partition(&state, p)?.write().await;
            self.refresh(&state, p, &mut part).await?;
            let count = part.segments().len();
            let gone = part.unlist_first(&state.tiers.files, count).await?;
            // Only what was appended before now: a message committed meanwhile stays.
            let end = state.next[p as usize].load(Ordering::SeqCst);
            let from = part.flushed_to();
            let first = log::first(&*self.backend, &state.store, p, from)?.map_or(end, |(o, _)| o);
            let mut batch = WriteBatch::new();
            log::set_floor(&mut batch, &state.store, p, end);
            log::remove(&mut batch, &state.store, p, 0, end);
            // Each partition whole before the next: a failure leaves no partition half-cleared.
            self.backend.write(batch)?;
            drop(part);
            removed += end.saturating_sub(first);
            removed += self.delete_segments(&state, p, gone).await;
        }
        Ok(removed)
    }

    /// Applies every topic's retention at `now_ms` (see the module doc). Returns how many
    /// messages were removed.
    pub async fn apply_retention(&self, now_ms: i64) -> Result<u64> {
        let mut removed = 0;
        for state in self.states(None)? {
            let def = &state.def;
            if def.retention_seconds.is_none() && def.retention_max_bytes.is_none() {
                continue;
            }
            let cutoff = def.retention_seconds.map(|secs| {
                now_ms.saturating_sub(i64::try_from(secs.saturating_mul(1000)).unwrap_or(i64::MAX))
            });
            let _upkeep = state.tiers.upkeep.lock().await;
            if !self.current(&state) {
                continue;
            }
            // Read under the lock: an ACK made while retention waited for it counts.
            let groups = self.catalog.topic_offsets(Some(&def.topic_id))?;
            for p in 0..def.partitions {
                let guard = if def.retention_keeps_unacked {
                    groups
                        .iter()
                        .filter(|g| g.partition_id == p)
                        .map(|g| g.last_acked_offset + 1)
                        .min()
                } else {
                    None
                };
                let rule = Rule {
                    cutoff,
                    max_bytes: def.retention_max_bytes,
                    guard,
                };
                removed += self.retain_partition(&state, p, rule).await?;
            }
        }
        Ok(removed)
    }

    async fn retain_partition(&self, state: &TopicState, p: u32, rule: Rule) -> Result<u64> {
        let lock = Self::partition(state, p)?;
        let from = lock.read().await.flushed_to();
        let hot = self.hot_sizes(state, p, from, &rule).await?;
        let mut part = lock.write().await;
        self.refresh(state, p, &mut part).await?;
        let hot_bytes: u64 = hot.iter().map(|h| h.bytes).sum();
        let mut excess = rule
            .max_bytes
            .map_or(0, |max| (part.bytes() + hot_bytes).saturating_sub(max));
        // Whole segments, oldest first.
        let mut unlisted = 0;
        for s in part.segments() {
            let old = rule
                .cutoff
                .is_some_and(|c| cold::newest_ms(s).is_some_and(|n| n < c));
            if !(old || excess > 0) || !rule.allows(s.max_seq as u64) {
                break;
            }
            excess = excess.saturating_sub(s.bytes);
            unlisted += 1;
        }
        let every_segment = unlisted == part.segments().len();
        let gone = part.unlist_first(&state.tiers.files, unlisted).await?;
        let mut removed = 0;
        // Then hot messages, oldest first.
        let mut upto = None;
        for h in hot.iter().take_while(|_| every_segment) {
            let old = rule.cutoff.is_some_and(|c| h.ts_ms < c);
            if !(old || excess > 0) || !rule.allows(h.offset) {
                break;
            }
            excess = excess.saturating_sub(h.bytes);
            upto = Some(h.offset);
            removed += 1;
        }
        if upto.is_some() || !gone.is_empty() {
            let mut batch = WriteBatch::new();
            let next = state.next[p as usize].load(Ordering::SeqCst);
            if let Some(last) = upto {
                log::remove(&mut batch, &state.store, p, 0, last + 1);
            }
            // Offsets never go back, even once every message is gone. (Written also when
            // only segments went: a cluster replica re-reads the listing when it applies it.)
            log::set_floor(
                &mut batch,
                &state.store,
                p,
                next.max(upto.map_or(0, |l| l + 1)),
            );
            self.backend.write(batch)?;
        }
        drop(part);
        removed += self.delete_segments(state, p, gone).await;
        Ok(removed)
    }

    /// Deletes the files of segments unlisted from partition `p`; returns how many messages
    /// they held. On a cluster member, a while later: replicas that have not applied the
    /// unlisting yet may still read them.
    async fn delete_segments(
        &self,
        state: &TopicState,
        p: u32,
        gone: Vec<kalamdb_filestore::SegmentMeta>,
    ) -> u64 {
        let (files, topic) = (state.tiers.files.clone(), state.def.topic_id.clone());
        if !self.clustered {
            return cold::delete_segments(&files, &topic, p, &gone).await;
        }
        let count = gone.iter().map(|s| s.row_count).sum();
        tokio::spawn(async move {
            tokio::time::sleep(REPLICA_GRACE).await;
            cold::delete_segments(&files, &topic, p, &gone).await;
        });
        count
    }

    /// The unflushed messages of partition `p` (from offset `from`) retention may look at: all
    /// of them when it counts bytes, else those up to the first one younger than the cutoff.
    async fn hot_sizes(
        &self,
        state: &TopicState,
        p: u32,
        from: u64,
        rule: &Rule,
    ) -> Result<Vec<HotMessage>> {
        let (backend, store) = (Arc::clone(&self.backend), state.store.clone());
        let (cutoff, all) = (rule.cutoff, rule.max_bytes.is_some());
        blocking(move || {
            let mut out = Vec::new();
            log::each(&*backend, &store, p, from, &mut |offset, bytes| {
                let ts_ms = log::decode(bytes)?.ts_ms;
                out.push(HotMessage {
                    offset,
                    ts_ms,
                    bytes: bytes.len() as u64,
                });
                Ok(all || cutoff.is_some_and(|c| ts_ms < c))
            })?;
            Ok(out)
        })
        .await
    }
}

/// A topic's retention as it applies to one partition.
#[derive(Debug, Clone, Copy)]
struct Rule {
    /// Messages appended before this (ms) are past retention.
    cutoff: Option<i64>,
    /// The partition's most bytes.
    max_bytes: Option<u64>,
    /// Messages at or after this offset are kept (not acknowledged by some group).
    guard: Option<u64>,
}

impl Rule {
    /// Whether a message (or a segment ending) at `offset` may go.
    fn allows(&self, offset: u64) -> bool {
        self.guard.is_none_or(|g| offset < g)
    }
}

/// What retention needs of a hot message.
#[derive(Debug, Clone, Copy)]
struct HotMessage {
    offset: u64,
    ts_ms: i64,
    bytes: u64,
}
