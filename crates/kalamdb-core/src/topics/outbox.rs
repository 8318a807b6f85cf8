//! Topic messages in a cluster (docs/cluster.md §6). A table change commits in its rows'
//! group, and a topic's offsets must be handed out in one place: so a captured message goes
//! to the outbox with the rows (`kalamdb_store::outbox`, keyed by where its entry landed in
//! the group's log), and the meta group's leader, which holds a replica of every group, moves
//! each group's messages in log order into the topics: one meta entry appends them at the
//! next offsets and records the last outbox key moved ([`outbox::MOVED_PARTITION`]), so a
//! message is moved once even across a change of leader (the new leader reads the record
//! after applying its predecessors' entries). A move whose write failed may still commit:
//! the next move first commits a barrier entry, after which the record says for sure what
//! was moved. Every member then deletes its outbox copies up to the record.

use super::log::{self, Message};
use super::{TopicService, TopicState};
use kalamdb_catalog::catalog::TopicRecord;
use kalamdb_catalog::error::{KalamError, Result};
use kalamdb_store::{StorageBackend, WriteBatch, outbox};
use parking_lot::Mutex;
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

/// Most messages one move takes.
const MOVE_LIMIT: usize = 10_000;

/// Most messages one move takes of one group (a group whose messages wait for their topic
/// leaves the others room).
const GROUP_LIMIT: usize = 2_000;

/// The key the barrier entry writes (in [`outbox::MOVED_PARTITION`], apart from the groups).
const BARRIER: &[u8] = b"barrier";

/// A topic that does not load is tried again after this long at first…
const RETRY_FIRST: Duration = Duration::from_secs(1);

/// …twice as long after each failure, up to this.
const RETRY_MAX: Duration = Duration::from_secs(30);

/// When to try again to load each topic whose messages wait in the outbox but that did not
/// load here (its storage unreachable, its definition unreadable): a move does not retry
/// the load every 200 ms, and each failed try is logged with how many messages wait.
#[derive(Debug, Default)]
struct Retries(HashMap<String, (Instant, Duration)>);

impl Retries {
    /// Whether `topic` may be tried at `now`.
    fn due(&self, topic: &str, now: Instant) -> bool {
        self.0.get(topic).is_none_or(|(at, _)| now >= *at)
    }

    /// `topic` did not load at `now`: the wait before the next try.
    fn failed(&mut self, topic: &str, now: Instant) -> Duration {
        let wait = match self.0.get(topic) {
            Some((_, last)) => (*last * 2).min(RETRY_MAX),
            None => RETRY_FIRST,
        };
        self.0.insert(topic.to_string(), (now + wait, wait));
        wait
    }

    /// `topic` loaded.
    fn clear(&mut self, topic: &str) {
        self.0.remove(topic);
    }

    /// Forgets the topics whose messages no longer wait (dropped, or loaded another way).
    fn keep_only(&mut self, waiting: &[String]) {
        self.0.retain(|topic, _| waiting.contains(topic));
    }
}

/// A captured message waiting in the outbox.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Entry {
    topic: String,
    /// The topic's `created_at`: a message of a dropped topic never goes to one created
    /// again under the same name.
    created: i64,
    partition: u32,
    message: Message,
}

/// What a move does with a message.
enum Fate {
    /// Appends it to this topic.
    Take(Arc<TopicState>),
    /// Drops it: its topic is gone.
    Skip,
    /// Leaves it, and the messages after it, for a later move: its topic is in the catalog
    /// but not loaded here yet.
    Wait,
}

/// A member's outbox bookkeeping.
#[derive(Debug, Default)]
pub(crate) struct OutboxState {
    /// Woken when an applied write put messages in the outbox.
    ready: tokio::sync::Notify,
    /// A move's write failed: it may still commit.
    uncertain: AtomicBool,
    /// Per group, the last key this member deleted up to.
    pruned: Mutex<HashMap<u64, Vec<u8>>>,
    /// Topics whose load failed, and when to try again.
    retries: Mutex<Retries>,
}

/// Adds `message` of `partition` of `topic` to the outbox in `batch` (a table write's).
pub(crate) fn capture(
    batch: &mut WriteBatch,
    topic: &TopicRecord,
    partition: u32,
    message: &Message,
) {
    let entry = Entry {
        topic: topic.topic_id.clone(),
        created: topic.created_at,
        partition,
        message: message.clone(),
    };
    let bytes = postcard::to_stdvec(&entry).unwrap_or_default();
    batch.put(outbox::PARTITION, outbox::capture_key(batch.len()), bytes);
}

/// One group's messages to move, each with its outbox key (`None`: one that does not decode,
/// passed over).
type Pending = (u64, Vec<(Vec<u8>, Option<Entry>)>);

/// Per topic, the `created_at` of its definition in this member's catalog (`None`: dropped),
/// read once per move; a topic whose record cannot be read is left out (its messages wait).
type Catalogued = HashMap<String, Option<i64>>;

/// The key just after `key`.
fn after(key: &[u8]) -> Vec<u8> {
    [key, &[0]].concat()
}

/// The last key moved of `group`, as this member's store holds it.
fn moved(backend: &dyn StorageBackend, group: u64) -> Result<Option<Vec<u8>>> {
    Ok(backend.get(outbox::MOVED_PARTITION, &group.to_be_bytes())?)
}

/// Calls `f` with each group that has keys in the outbox here.
fn each_group(backend: &dyn StorageBackend, f: &mut dyn FnMut(u64) -> Result<bool>) -> Result<()> {
    let mut from = 0u64;
    loop {
        let mut first = None;
        backend.scan_each(
            outbox::PARTITION,
            &[],
            Some(&outbox::group_start(from, 0)),
            &mut |k, _| {
                first = outbox::group_of(k);
                Ok(false)
            },
        )?;
        let Some(group) = first else {
            return Ok(());
        };
        if !f(group)? {
            return Ok(());
        }
        match group.checked_add(1) {
            Some(next) => from = next,
            None => return Ok(()),
        }
    }
}

/// The messages of every group not moved yet, at most [`MOVE_LIMIT`].
fn pending(backend: &dyn StorageBackend) -> Result<Vec<Pending>> {
    let mut out = Vec::new();
    let mut total = 0;
    each_group(backend, &mut |group| {
        let start =
            moved(backend, group)?.map_or_else(|| outbox::group_start(group, 0), |k| after(&k));
        let mut entries = Vec::new();
        let mut taken = 0;
        backend.scan_each(
            outbox::PARTITION,
            &group.to_be_bytes(),
            Some(&start),
            &mut |k, v| {
                if total >= MOVE_LIMIT || taken >= GROUP_LIMIT {
                    return Ok(false);
                }
                taken += 1;
                let entry = postcard::from_bytes::<Entry>(v)
                    .inspect_err(|e| {
                        tracing::error!(error = %e, "a corrupt outbox message is skipped");
                    })
                    .ok();
                entries.push((k.to_vec(), entry));
                total += 1;
                Ok(true)
            },
        )?;
        if !entries.is_empty() {
            out.push((group, entries));
        }
        Ok(total < MOVE_LIMIT)
    })?;
    Ok(out)
}

impl TopicService {
    /// Whether this node hands out topic offsets now: always on one server; on a cluster
    /// member, when it leads the meta group and applied what its predecessors committed.
    pub fn leads(&self) -> bool {
        self.synced.load(Ordering::SeqCst) && self.backend.leads(outbox::MOVED_PARTITION, BARRIER)
    }

    /// Wakes the mover when `batch`, just applied here, wrote the outbox.
    pub(crate) fn outbox_written(&self, batch: &WriteBatch) {
        if self.clustered && outbox::touches(batch) {
            self.outbox.ready.notify_one();
        }
    }

    /// Waits until the outbox may hold messages to move, at most `timeout`.
    pub async fn outbox_wait(&self, timeout: std::time::Duration) {
        let _ = tokio::time::timeout(timeout, self.outbox.ready.notified()).await;
    }

    /// On the meta leader of a cluster, moves waiting outbox messages into their topics (one
    /// meta entry); returns how many. Elsewhere does nothing.
    pub async fn move_outbox(&self, tables: &kalamdb_tables::TableStore) -> Result<usize> {
        if !self.clustered || !self.leads() {
            return Ok(0);
        }
        if self.outbox.uncertain.load(Ordering::SeqCst) {
            // Once this commits, an earlier move of this leader committed before it or never
            // will (a later entry commits only after every earlier one).
            let stamp = chrono::Utc::now().timestamp_micros().to_be_bytes().to_vec();
            tables
                .commit_other(|b| b.put(outbox::MOVED_PARTITION, BARRIER.to_vec(), stamp))
                .await?;
            self.outbox.uncertain.store(false, Ordering::SeqCst);
        }
        let backend = Arc::clone(&self.backend);
        let pending = tokio::task::spawn_blocking(move || pending(&*backend))
            .await
            .map_err(|e| KalamError::Internal(e.to_string()))??;
        // Each topic's catalog record once; topics not followed here yet (a load still
        // running, or one that failed) are followed once each.
        let mut catalogued = Catalogued::new();
        let mut waiting: Vec<String> = Vec::new();
        for e in pending
            .iter()
            .flat_map(|(_, es)| es)
            .filter_map(|(_, e)| e.as_ref())
        {
            if !catalogued.contains_key(&e.topic) {
                match self.catalog.topic(&e.topic) {
                    Ok(def) => {
                        catalogued.insert(e.topic.clone(), def.map(|d| d.created_at));
                    }
                    Err(err) => {
                        tracing::warn!(topic = %e.topic, error = %err, "cannot read a topic; its messages wait");
                    }
                }
            }
            if matches!(self.fate(e, &catalogued), Fate::Wait) && !waiting.contains(&e.topic) {
                waiting.push(e.topic.clone());
            }
        }
        let now = Instant::now();
        self.outbox.retries.lock().keep_only(&waiting);
        for topic in &waiting {
            if !self.outbox.retries.lock().due(topic, now) {
                continue;
            }
            self.follow(topic).await;
            let loaded = self.topics.read().get(topic).map(|t| t.def.created_at);
            let wanted = catalogued.get(topic).copied().flatten();
            let mut retries = self.outbox.retries.lock();
            if loaded.is_some() && loaded == wanted {
                retries.clear(topic);
                continue;
            }
            // From the failed try's end: a slow failing load is not due again at once.
            let wait = retries.failed(topic, Instant::now());
            let messages = pending
                .iter()
                .flat_map(|(_, es)| es)
                .filter(|(_, e)| e.as_ref().is_some_and(|e| &e.topic == topic))
                .count();
            tracing::warn!(topic, messages, retry_in = ?wait,
                "a topic's messages wait in the outbox: it does not load on the meta leader");
        }
        let mut plan = Vec::with_capacity(pending.len());
        for (group, entries) in pending {
            let mut taken = Vec::with_capacity(entries.len());
            let mut last = None;
            for (key, e) in entries {
                if let Some(e) = e {
                    match self.fate(&e, &catalogued) {
                        Fate::Take(topic) => taken.push((topic, e)),
                        Fate::Skip => {}
                        Fate::Wait => break,
                    }
                }
                last = Some(key);
            }
            if let Some(last) = last {
                plan.push((group, last, taken));
            }
        }
        let count: usize = plan.iter().map(|(_, _, t)| t.len()).sum();
        if plan.is_empty() {
            return Ok(0);
        }
        let moved = tables
            .commit_other(|batch| {
                let mut reserved = self.reserved.lock();
                for (group, last, taken) in &plan {
                    for (topic, e) in taken {
                        let Some(next) = topic.next.get(e.partition as usize) else {
                            continue;
                        };
                        let offset = next.fetch_add(1, Ordering::SeqCst);
                        super::reserve(&mut reserved, topic, e.partition, offset);
                        log::append(batch, &topic.store, e.partition, offset, &e.message);
                    }
                    batch.put(
                        outbox::MOVED_PARTITION,
                        group.to_be_bytes().to_vec(),
                        last.clone(),
                    );
                }
            })
            .await;
        if moved.is_err() {
            self.outbox.uncertain.store(true, Ordering::SeqCst);
        }
        moved.map(|()| count)
    }

    /// What a move does with `e` (see [`Fate`]): the catalog decides whether its topic is
    /// still there; the loaded topic must be that one.
    fn fate(&self, e: &Entry, catalogued: &Catalogued) -> Fate {
        match catalogued.get(&e.topic) {
            // Unreadable: wait.
            None => Fate::Wait,
            Some(Some(created)) if *created == e.created => {
                match self.topics.read().get(&e.topic) {
                    Some(topic) if topic.def.created_at == e.created => {
                        Fate::Take(Arc::clone(topic))
                    }
                    _ => Fate::Wait,
                }
            }
            Some(_) => Fate::Skip,
        }
    }

    /// Deletes this member's outbox copies of what the meta group recorded as moved (each
    /// member its own: the outbox's upkeep is not replicated).
    pub fn prune_outbox(&self) -> Result<()> {
        if !self.clustered {
            return Ok(());
        }
        let mut marks = Vec::new();
        each_group(&*self.backend, &mut |group| {
            if let Some(last) = moved(&*self.backend, group)? {
                marks.push((group, last));
            }
            Ok(true)
        })?;
        for (group, last) in marks {
            if self.outbox.pruned.lock().get(&group) == Some(&last) {
                continue;
            }
            let mut batch = WriteBatch::new();
            batch.delete_range(
                outbox::PARTITION,
                outbox::group_start(group, 0),
                after(&last),
            );
            self.backend.write(batch)?;
            self.outbox.pruned.lock().insert(group, last);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_topic_that_does_not_load_is_tried_less_and_less_often() {
        let mut retries = Retries::default();
        let t0 = Instant::now();
        assert!(retries.due("t", t0));
        assert_eq!(retries.failed("t", t0), RETRY_FIRST);
        assert!(!retries.due("t", t0 + Duration::from_millis(500)));
        assert!(retries.due("t", t0 + RETRY_FIRST));
        // Doubling up to the cap.
        let mut waits = Vec::new();
        for _ in 0..7 {
            waits.push(retries.failed("t", t0).as_secs());
        }
        assert_eq!(waits, [2, 4, 8, 16, 30, 30, 30]);
        // Another topic has its own; a loaded one starts over; one no longer waiting goes.
        assert!(retries.due("u", t0));
        retries.failed("u", t0);
        retries.clear("t");
        assert!(retries.due("t", t0));
        assert_eq!(retries.failed("t", t0), RETRY_FIRST);
        retries.keep_only(&["t".to_string()]);
        assert!(retries.due("u", t0));
        assert!(!retries.due("t", t0));
    }
}
