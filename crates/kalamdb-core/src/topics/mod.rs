//! Topics (`docs/protocol.md` §7.1): partitioned, append-only logs of messages that tables'
//! changes feed (`ALTER TOPIC … ADD SOURCE`), read by consumers and consumer groups.
//!
//! - Definitions live in the catalog ([`kalamdb_catalog::catalog::TopicRecord`]); messages in
//!   the hot store ([`log`]) until a flush moves them to Parquet segments ([`cold`]); reads
//!   span both tiers by offset. Flush, retention and `CLEAR TOPIC` are in [`upkeep`].
//! - **Capture.** The [`TopicService`] is the table store's `ChangeCapture`: inside the commit
//!   gate, with the batch a table change commits in, it appends one message per matching route
//!   and change, so a change and its messages commit together or not at all, and offsets are
//!   handed out in commit order without gaps (a failed batch gives its offsets back).
//! - **Consuming.** A read without a group starts where the caller says. A group starts after
//!   its committed offset (`ACK`), and each fetch *claims* the range it returns: another member
//!   never gets a claimed range until it is acked or its claim is older than
//!   `[topics] visibility_timeout_secs`, when it is handed out again (at-least-once).
//! - **In a cluster** ([`outbox`], docs/cluster.md §6) a table change's messages go to the
//!   outbox with its rows, and the meta group's leader moves them into the topics, handing out
//!   offsets; every member applies the topics' logs (the meta group's) and follows their
//!   definitions, offsets and flushed segments. Statements and requests that hand out offsets
//!   or claims (publishing, group fetches, ACK, DDL, upkeep) run on the meta leader.

pub mod cold;
mod follow;
pub mod log;
pub mod outbox;
pub mod upkeep;

pub use follow::Reloaded;

use crate::auth::Identity;
use crate::encode::value_json;
use crate::row_filter::Filter;
use cold::ColdPartition;
use datafusion::execution::SessionState;
use kalamdb_catalog::catalog::{Catalog, TopicOffsetRecord, TopicRecord, TopicRoute};
use kalamdb_catalog::error::{KalamError, Result};
use kalamdb_catalog::schema_registry::CachedTable;
use kalamdb_commons::{TableId, UserId};
use kalamdb_filestore::FileStore;
use kalamdb_store::{KeyLayout, StorageBackend, WriteBatch};
use kalamdb_tables::changes::{ChangeCapture, ChangeEvent, ChangeKind};
use kalamdb_tables::cold::ColdTier;
use kalamdb_tables::rows::StoredRow;
use log::{Message, Op};
use parking_lot::{Mutex, RwLock};
use serde_json::Value as Json;
use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// Where a read without a committed group offset starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Start {
    /// The first message kept.
    Earliest,
    /// After the last message.
    Latest,
    /// This offset.
    Offset(u64),
}

/// Most messages one fetch looks at (returned or skipped).
pub const SCAN_BUDGET: usize = 100_000;

/// One message read, with where it is.
#[derive(Debug, Clone)]
pub struct Consumed {
    /// The partition.
    pub partition: u32,
    /// Its offset.
    pub offset: u64,
    /// The message.
    pub message: Message,
}

/// What a fetch returned.
#[derive(Debug, Clone)]
pub struct Fetch {
    /// The messages, in offset order.
    pub messages: Vec<Consumed>,
    /// The offset after the last one (or where the read started when there was none).
    pub next_offset: u64,
}

/// A topic as the service holds it: its definition, next offset per partition and tiers.
#[derive(Debug)]
struct TopicState {
    def: TopicRecord,
    store: String,
    /// Shared by every version of the definition (an ALTER TOPIC racing a write).
    next: Arc<[AtomicU64]>,
    /// On a cluster member: the offset after the last message applied here, per partition
    /// (`next` runs ahead of it on the meta leader while its moves commit). Shared as `next`.
    applied: Arc<[AtomicU64]>,
    /// Woken after every batch that appended to the topic (long-polling consumers wait on it).
    appended: Arc<tokio::sync::Notify>,
    /// Shared by every version of the definition.
    tiers: Arc<Tiers>,
}

impl TopicState {
    /// Raises partition `p`'s next and applied offsets to `next` (a cluster replica saw
    /// messages below it applied) and wakes its waiting consumers.
    fn applied_to(&self, p: usize, next: u64) {
        if let (Some(n), Some(a)) = (self.next.get(p), self.applied.get(p)) {
            n.fetch_max(next, Ordering::SeqCst);
            a.fetch_max(next, Ordering::SeqCst);
            self.appended.notify_waiters();
        }
    }

    /// The offset after the last message of `partition` (an error for a partition the topic
    /// does not have).
    fn end(&self, partition: u32) -> Result<u64> {
        Ok(self
            .next
            .get(partition as usize)
            .ok_or_else(|| bad_partition(&self.def, partition))?
            .load(Ordering::SeqCst))
    }
}

/// Where a topic's flushed messages are and who may change them.
#[derive(Debug)]
struct Tiers {
    files: FileStore,
    /// One per partition. Readers hold it shared across a read of both tiers; a flush holds
    /// it exclusively between listing a segment and removing its messages from the hot log,
    /// so a reader never misses messages that moved (nor reads them twice); a cluster
    /// replica holds it while it applies such a removal another member made.
    cold: Vec<Arc<tokio::sync::RwLock<ColdPartition>>>,
    /// Held by flushes, retention and `CLEAR TOPIC`: one of them changes a topic at a time.
    upkeep: tokio::sync::Mutex<()>,
}

/// One group's claims on one partition.
#[derive(Debug, Default)]
struct GroupCursor {
    /// The next offset not handed out yet.
    cursor: u64,
    /// Handed-out ranges not acked yet, with when they were handed out.
    claims: Vec<(u64, u64, Instant)>,
}

/// A group's cursor on one partition; locked across a fetch, so the members of a group take
/// ranges one after the other.
type SharedCursor = Arc<tokio::sync::Mutex<GroupCursor>>;

/// The routes of one source table: each with the topic it feeds and its compiled `WHERE`.
type TableRoutes = Vec<(Arc<TopicState>, TopicRoute, Option<Arc<Filter>>)>;

/// An offset counter handed out in the batch being committed: (counters, partition, the
/// partition's next offset before, the topic's wake-up).
type Reservation = (Arc<[AtomicU64]>, u32, u64, Arc<tokio::sync::Notify>);

/// The topics of the server; see the module doc.
#[derive(Debug)]
pub struct TopicService {
    catalog: Catalog,
    registry: Arc<kalamdb_catalog::schema_registry::SchemaRegistry>,
    backend: Arc<dyn StorageBackend>,
    topics: RwLock<HashMap<String, Arc<TopicState>>>,
    /// Routes by source table.
    routes: RwLock<HashMap<TableId, TableRoutes>>,
    /// Offsets handed out in the batch being committed.
    reserved: Mutex<Vec<Reservation>>,
    groups: Mutex<HashMap<(String, String, u32), SharedCursor>>,
    visibility: Duration,
    cold_tier: Arc<ColdTier>,
    /// The session whose functions source filters call.
    functions: SessionState,
    /// On a cluster member: captures go to the outbox, offsets are handed out by the meta
    /// leader only.
    clustered: bool,
    /// The outbox's state on a cluster member.
    outbox: outbox::OutboxState,
    /// Taken while a replica brings a topic in line with its replicated definition, and
    /// while this node creates one.
    following: tokio::sync::Mutex<()>,
    /// The engine's runtime (a replica's follow-ups run there, not on the groups' threads).
    runtime: tokio::runtime::Handle,
    /// Whether the topics in memory follow the store: on a cluster member, once
    /// [`Self::resync`] ran after the engine opened; until then it hands out no offsets.
    synced: std::sync::atomic::AtomicBool,
}

impl TopicService {
    /// Loads the topics of `catalog`, their offsets and their flushed segments (in the storages
    /// of `cold_tier`); source filters call the functions of `functions`.
    pub async fn open(
        catalog: Catalog,
        registry: Arc<kalamdb_catalog::schema_registry::SchemaRegistry>,
        backend: Arc<dyn StorageBackend>,
        cold_tier: Arc<ColdTier>,
        visibility_timeout_secs: u64,
        functions: SessionState,
    ) -> Result<Self> {
        let clustered = backend.defers_commits();
        if clustered {
            for p in [
                kalamdb_store::outbox::PARTITION,
                kalamdb_store::outbox::MOVED_PARTITION,
            ] {
                backend.create_partition(p, KeyLayout::Flat)?;
            }
        }
        let service = Self {
            clustered,
            outbox: outbox::OutboxState::default(),
            following: tokio::sync::Mutex::new(()),
            runtime: tokio::runtime::Handle::current(),
            synced: std::sync::atomic::AtomicBool::new(!clustered),
            functions,
            catalog,
            registry,
            backend,
            topics: RwLock::default(),
            routes: RwLock::default(),
            reserved: Mutex::default(),
            groups: Mutex::default(),
            visibility: Duration::from_secs(visibility_timeout_secs),
            cold_tier,
        };
        for def in service.catalog.topics()? {
            service.load(def, true).await?;
        }
        Ok(service)
    }

    /// Compiles a source's `WHERE` text over the columns of `def`. `CURRENT_USER()` and
    /// `CURRENT_ROLE()` are empty: a source's filter is the same for every writer.
    pub(crate) fn compile_filter(
        &self,
        text: &str,
        def: &kalamdb_commons::TableDefinition,
    ) -> Result<Filter> {
        let expr = datafusion::sql::sqlparser::parser::Parser::new(
            &datafusion::sql::sqlparser::dialect::GenericDialect {},
        )
        .try_with_sql(text)
        .and_then(|mut p| p.parse_expr())
        .map_err(|e| KalamError::InvalidSql(e.to_string()))?;
        let caller = crate::row_filter::Caller {
            state: &self.functions,
            user: "",
            role: "",
        };
        Filter::compile(&expr, def, caller)
    }

    /// Opens `def`'s tiers and offsets; `repair` (the node that owns the topic's writes, not
    /// a cluster replica following it) also writes what a crash left to set right.
    async fn load(&self, def: TopicRecord, repair: bool) -> Result<()> {
        let store = log::partition_name(&def.topic_id);
        if repair {
            self.backend.create_partition(&store, KeyLayout::Flat)?;
        }
        let files = self.cold_tier.files(&def.storage_id)?;
        let mut cold = Vec::with_capacity(def.partitions as usize);
        for p in 0..def.partitions {
            cold.push(ColdPartition::open(&files, &def.topic_id, p).await?);
        }
        let next = log::next_offsets(&*self.backend, &store, def.partitions)?;
        let mut batch = WriteBatch::new();
        let next: Arc<[AtomicU64]> = next
            .into_iter()
            .zip(&cold)
            .enumerate()
            .map(|(p, (n, c))| {
                let p = p as u32;
                // A crash between listing a segment and removing its messages from the hot
                // log leaves them in both: the segment's copy counts.
                log::remove(&mut batch, &store, p, 0, c.flushed_to());
                // Recorded, so no later removal (retention of every message, in both tiers)
                // can make a restart hand out an offset again.
                let n = n.max(c.flushed_to());
                log::set_floor(&mut batch, &store, p, n);
                AtomicU64::new(n)
            })
            .collect();
        if repair {
            self.backend.write(batch)?;
        }
        let applied = next
            .iter()
            .map(|n| AtomicU64::new(n.load(Ordering::SeqCst)))
            .collect();
        let tiers = Arc::new(Tiers {
            files,
            cold: cold
                .into_iter()
                .map(|c| Arc::new(tokio::sync::RwLock::new(c)))
                .collect(),
            upkeep: tokio::sync::Mutex::new(()),
        });
        let state = Arc::new(TopicState {
            def,
            store,
            next,
            applied,
            appended: Arc::default(),
            tiers,
        });
        self.topics
            .write()
            .insert(state.def.topic_id.clone(), Arc::clone(&state));
        self.rebuild_routes();
        if !repair {
            // A replica: messages applied while it loaded found no topic to count them.
            let again = log::next_offsets(&*self.backend, &state.store, state.def.partitions)?;
            for (p, stored) in again.into_iter().enumerate() {
                state.applied_to(p, stored);
            }
        }
        Ok(())
    }

    fn rebuild_routes(&self) {
        let mut routes: HashMap<TableId, TableRoutes> = HashMap::new();
        for t in self.topics.read().values() {
            for r in &t.def.routes {
                let Some((ns, table)) = r.table_id.split_once('.') else {
                    continue;
                };
                let id = TableId::new(
                    kalamdb_commons::NamespaceId::new(ns),
                    kalamdb_commons::TableName::new(table),
                );
                // A filter that no longer compiles (its column was dropped) passes nothing.
                let filter = match &r.filter {
                    None => None,
                    Some(text) => {
                        let compiled = self
                            .registry
                            .get(&id)
                            .ok()
                            .flatten()
                            .and_then(|table| self.compile_filter(text, &table.def).ok());
                        match compiled {
                            Some(f) => Some(Arc::new(f)),
                            None => {
                                tracing::warn!(topic = %t.def.topic_id, source = %r.table_id, "source filter does not compile; its changes are skipped");
                                continue;
                            }
                        }
                    }
                };
                routes
                    .entry(id)
                    .or_default()
                    .push((Arc::clone(t), r.clone(), filter));
            }
        }
        *self.routes.write() = routes;
    }

    fn state(&self, topic_id: &str) -> Result<Arc<TopicState>> {
        self.topics
            .read()
            .get(topic_id)
            .cloned()
            .ok_or_else(|| KalamError::NotFound {
                kind: "Topic",
                name: topic_id.to_string(),
            })
    }

    /// The definition of `topic_id`.
    pub fn topic(&self, topic_id: &str) -> Result<TopicRecord> {
        Ok(self.state(topic_id)?.def.clone())
    }

    /// Creates a topic (the caller checked it does not exist).
    pub async fn create(&self, def: TopicRecord) -> Result<()> {
        // A replica's follow-up of the definition (this node's own, in a cluster) waits.
        let _one = self.following.lock().await;
        // Whatever a dropped topic of the same name left behind (a DROP that failed half-way)
        // is not this topic's.
        let store = log::partition_name(&def.topic_id);
        self.backend.drop_partition(&store)?;
        // Before the definition: a cluster replica that applies it has the partition.
        self.backend.create_partition(&store, KeyLayout::Flat)?;
        let files = self.cold_tier.files(&def.storage_id)?;
        files.remove_all(&cold::topic_dir(&def.topic_id)).await?;
        self.catalog.put_topic(&def)?;
        self.load(def, true).await
    }

    /// Replaces a topic's definition (its routes); its messages stay.
    pub fn update(&self, def: TopicRecord) -> Result<()> {
        self.state(&def.topic_id)?;
        self.catalog.put_topic(&def)?;
        self.adopt(def)
    }

    /// Takes `def` as the definition of a loaded topic (written already).
    fn adopt(&self, def: TopicRecord) -> Result<()> {
        let state = self.state(&def.topic_id)?;
        let updated = Arc::new(TopicState {
            def,
            store: state.store.clone(),
            next: Arc::clone(&state.next),
            applied: Arc::clone(&state.applied),
            appended: Arc::clone(&state.appended),
            tiers: Arc::clone(&state.tiers),
        });
        self.topics
            .write()
            .insert(updated.def.topic_id.clone(), updated);
        self.rebuild_routes();
        Ok(())
    }

    /// Drops a topic, its messages (both tiers) and its groups' offsets.
    pub async fn drop_topic(&self, topic_id: &str) -> Result<()> {
        let state = self.state(topic_id)?;
        let _upkeep = state.tiers.upkeep.lock().await;
        self.catalog.delete_topic(topic_id)?;
        self.topics.write().remove(topic_id);
        self.rebuild_routes();
        self.groups.lock().retain(|(t, _, _), _| t != topic_id);
        self.backend.drop_partition(&state.store)?;
        // Dropped already: segments left by a failure here are never read again.
        if let Err(e) = state
            .tiers
            .files
            .remove_all(&cold::topic_dir(topic_id))
            .await
        {
            tracing::warn!(topic = %topic_id, error = %e, "cannot delete a dropped topic's segments");
        }
        Ok(())
    }

    /// Removes every route fed by `table` (the table was dropped).
    pub fn table_dropped(&self, table: &TableId) -> Result<()> {
        let id = table.to_string();
        let affected: Vec<TopicRecord> = self
            .topics
            .read()
            .values()
            .filter(|t| t.def.routes.iter().any(|r| r.table_id == id))
            .map(|t| t.def.clone())
            .collect();
        for mut def in affected {
            def.routes.retain(|r| r.table_id != id);
            self.update(def)?;
        }
        Ok(())
    }

    /// The offset after the last message of each partition.
    pub fn end_offsets(&self, topic_id: &str) -> Result<Vec<u64>> {
        Ok(self
            .state(topic_id)?
            .next
            .iter()
            .map(|n| n.load(Ordering::SeqCst))
            .collect())
    }

    /// Reads up to `limit` messages of `partition` (see the module doc for groups). A plain
    /// user reads only the messages of their own rows, and their groups are their own.
    pub async fn consume(
        &self,
        caller: &Identity,
        topic_id: &str,
        group: Option<&str>,
        partition: u32,
        start: Start,
        limit: usize,
    ) -> Result<Fetch> {
        let own = own_only(caller);
        let state = self.state(topic_id)?;
        let end = state.end(partition)?;
        let from_start = |committed: Option<u64>| match (committed, start) {
            (Some(c), _) => c + 1,
            (None, Start::Offset(o)) => o,
            (None, Start::Earliest) => 0,
            (None, Start::Latest) => end,
        };
        let Some(group) = group.map(|g| group_key(caller, g)) else {
            let from = from_start(None);
            return self
                .read(&state, partition, (from, u64::MAX), limit, own)
                .await;
        };
        let committed = self
            .catalog
            .topic_offset(topic_id, &group, partition)?
            .map(|o| o.last_acked_offset);
        let key = (topic_id.to_string(), group, partition);
        let (cursor, fresh) = {
            let mut groups = self.groups.lock();
            let fresh = !groups.contains_key(&key);
            (Arc::clone(groups.entry(key).or_default()), fresh)
        };
        let mut g = cursor.lock().await;
        let floor = from_start(committed);
        if fresh || g.cursor < committed.map_or(0, |c| c + 1) {
            g.cursor = floor.max(g.cursor);
        }
        if let Some(c) = committed {
            g.claims.retain(|(_, to, _)| *to > c);
        }
        let now = Instant::now();
        // A claim nobody acked in time is handed out again first.
        if let Some(claim) = g
            .claims
            .iter_mut()
            .find(|(_, _, at)| now.duration_since(*at) >= self.visibility)
        {
            let from = committed.map_or(claim.0, |c| claim.0.max(c + 1));
            claim.2 = now;
            let to = claim.1;
            return self.read(&state, partition, (from, to), limit, own).await;
        }
        let from = g.cursor;
        let fetch = self
            .read(&state, partition, (from, u64::MAX), limit, own)
            .await?;
        if fetch.next_offset > from {
            g.claims.push((from, fetch.next_offset, now));
            g.cursor = fetch.next_offset;
        }
        Ok(fetch)
    }

    /// Offsets `from..to` of `partition`, flushed or not: up to `limit` messages (of `own`'s
    /// rows only, when set), looking at no more than [`SCAN_BUDGET`] (a plain user's fetch
    /// skips other users' messages; it goes on from `next_offset`).
    async fn read(
        &self,
        state: &TopicState,
        partition: u32,
        (from, to): (u64, u64),
        limit: usize,
        own: Option<&str>,
    ) -> Result<Fetch> {
        let keep = |m: &Message| own.is_none_or(|u| m.user.as_deref() == Some(u));
        let part = state
            .tiers
            .cold
            .get(partition as usize)
            .ok_or_else(|| bad_partition(&state.def, partition))?
            .read()
            .await;
        let mut read = Vec::new();
        let (mut next, mut budget) = (None, SCAN_BUDGET);
        let flushed_to = part.flushed_to();
        if from < flushed_to {
            let range = (from, to.min(flushed_to));
            next = part
                .read(
                    &state.tiers.files,
                    range,
                    (limit, &mut budget),
                    &keep,
                    &mut read,
                )
                .await?;
        }
        let hot_from = from.max(flushed_to);
        if read.len() < limit && budget > 0 && hot_from < to {
            let (backend, store) = (Arc::clone(&self.backend), state.store.clone());
            let (own, left) = (own.map(str::to_string), limit - read.len());
            let (hot, hot_next) = tokio::task::spawn_blocking(move || {
                let keep =
                    |m: &Message| own.as_deref().is_none_or(|u| m.user.as_deref() == Some(u));
                let range = log::Range {
                    from: hot_from,
                    to,
                    limit: left,
                    scan: budget,
                    keep: &keep,
                };
                log::read(&*backend, &store, partition, range)
            })
            .await
            .map_err(|e| KalamError::Internal(e.to_string()))??;
            read.extend(hot);
            next = hot_next.or(next);
        }
        drop(part);
        let messages = read
            .into_iter()
            .map(|(offset, message)| Consumed {
                partition,
                offset,
                message,
            })
            .collect();
        Ok(Fetch {
            messages,
            next_offset: next.unwrap_or(from),
        })
    }

    /// Waits until `partition` of `topic_id` holds a message at or after `offset`, at most
    /// `timeout` (a long-polling fetch).
    pub async fn wait_for(&self, topic_id: &str, partition: u32, offset: u64, timeout: Duration) {
        let Ok(state) = self.state(topic_id) else {
            return;
        };
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let woken = state.appended.notified();
            tokio::pin!(woken);
            // Registered before the check, so an append between the two is not missed.
            woken.as_mut().enable();
            // On a cluster member, what is applied here: the meta leader counts a move's
            // offsets before it commits.
            let ends = if self.clustered {
                &state.applied
            } else {
                &state.next
            };
            let end = ends
                .get(partition as usize)
                .map_or(0, |n| n.load(Ordering::SeqCst));
            if end > offset {
                return;
            }
            if tokio::time::timeout_at(deadline, woken).await.is_err() {
                return;
            }
        }
    }

    /// Appends messages published directly (`POST /v1/api/topics/publish`) by `caller`
    /// (service, dba, system) inside `tables`' commit gate, ordered with table changes;
    /// returns the (partition, offset) of each.
    pub async fn publish(
        &self,
        caller: &Identity,
        tables: &kalamdb_tables::TableStore,
        topic_id: &str,
        messages: Vec<(Option<String>, Vec<u8>)>,
    ) -> Result<Vec<(u32, u64)>> {
        check_publisher(caller)?;
        if !self.synced.load(Ordering::SeqCst) {
            return Err(KalamError::Store(kalamdb_store::StoreError::Unavailable(
                "this member's topics are still catching up after its start; try again".into(),
            )));
        }
        let state = self.state(topic_id)?;
        let mut placed = Vec::with_capacity(messages.len());
        let user = caller.user_id.to_string();
        tables
            .commit_other(|batch| {
                let mut reserved = self.reserved.lock();
                let ts_ms = chrono::Utc::now().timestamp_millis();
                for (key, payload) in messages {
                    let p = log::partition_of(key.as_deref(), state.def.partitions);
                    let Some(next) = state.next.get(p as usize) else {
                        continue;
                    };
                    let offset = next.fetch_add(1, Ordering::SeqCst);
                    reserve(&mut reserved, &state, p, offset);
                    let message = Message {
                        key,
                        payload,
                        op: Op::Insert,
                        user: Some(user.clone()),
                        ts_ms,
                        source: None,
                    };
                    log::append(batch, &state.store, p, offset, &message);
                    placed.push((p, offset));
                }
            })
            .await?;
        Ok(placed)
    }

    /// Moves `group`'s committed offset on `partition` forward to `upto` (inclusive); never
    /// back. Returns the committed offset.
    pub async fn ack(
        &self,
        caller: &Identity,
        topic_id: &str,
        group: &str,
        partition: u32,
        upto: u64,
    ) -> Result<u64> {
        let group = &group_key(caller, group);
        let state = self.state(topic_id)?;
        let end = state.end(partition)?;
        if upto >= end {
            return Err(KalamError::InvalidInput(format!(
                "cannot ACK offset {upto} of {topic_id} partition {partition}: its last offset is {}",
                end.checked_sub(1)
                    .map_or("none yet".into(), |e| e.to_string())
            )));
        }
        let old = self
            .catalog
            .topic_offset(topic_id, group, partition)?
            .map(|o| o.last_acked_offset);
        if old.is_some_and(|o| o >= upto) {
            return Ok(old.unwrap_or(upto));
        }
        self.catalog.put_topic_offset(&TopicOffsetRecord {
            topic_id: topic_id.to_string(),
            group_id: group.to_string(),
            partition_id: partition,
            last_acked_offset: upto,
            updated_at: chrono::Utc::now().timestamp_micros(),
        })?;
        let cursor = self
            .groups
            .lock()
            .get(&(topic_id.to_string(), group.to_string(), partition))
            .cloned();
        if let Some(cursor) = cursor {
            cursor
                .lock()
                .await
                .claims
                .retain(|(_, to, _)| *to > upto + 1);
        }
        Ok(upto)
    }

    /// The message for `event` on `route` (whose filter passed its row), if the route takes
    /// this kind of change; `source` is the table's `ns.table`.
    fn message(
        table: &CachedTable,
        source: &str,
        route: &TopicRoute,
        user: Option<&UserId>,
        event: &ChangeEvent,
    ) -> Option<Message> {
        let row = subject_row(event)?;
        let op = match event.kind {
            ChangeKind::Insert => Op::Insert,
            ChangeKind::Update => Op::Update,
            ChangeKind::Delete => Op::Delete,
        };
        if !route.op.eq_ignore_ascii_case(op.as_str()) {
            return None;
        }
        let key = table.pk_index.map(|p| {
            let c = &table.def.columns[p];
            match value_json(row.cell(c.column_id), &c.data_type) {
                Json::String(s) => s,
                other => other.to_string(),
            }
        });
        let is_pk = |i: usize| Some(i) == table.pk_index;
        let object = |row, keep, table_name| RowObject {
            table,
            row,
            keep,
            table_name,
        };
        let payload = match route.payload.as_str() {
            "key" => serde_json::to_vec(&object(row, &is_pk, None)),
            "diff" => {
                let old = event.old.as_ref();
                let changed = |i: usize| {
                    let id = table.def.columns[i].column_id;
                    is_pk(i) || old.is_none_or(|o| o.cell(id) != row.cell(id))
                };
                serde_json::to_vec(&Diff {
                    new: object(row, &changed, None),
                    old: old
                        .filter(|_| op == Op::Update)
                        .map(|o| object(o, &changed, None)),
                    table: source,
                })
            }
            _ => serde_json::to_vec(&object(row, &|_| true, Some(source))),
        };
        Some(Message {
            key,
            payload: payload.unwrap_or_default(),
            op,
            user: user.map(|u| u.to_string()),
            ts_ms: chrono::Utc::now().timestamp_millis(),
            source: Some(source.to_string()),
        })
    }
}

/// The row a change's message describes: the new row of an insert or update, the old row of
/// a delete.
fn subject_row(event: &ChangeEvent) -> Option<&StoredRow> {
    match (event.kind, &event.new, &event.old) {
        (ChangeKind::Insert | ChangeKind::Update, Some(n), _) => Some(n),
        (ChangeKind::Delete, _, Some(o)) => Some(o),
        _ => None,
    }
}

/// The columns of a row for which `keep` holds, serialized as a JSON object (with `_table`
/// when `table_name` is set) straight from the row.
struct RowObject<'a> {
    table: &'a CachedTable,
    row: &'a StoredRow,
    keep: &'a dyn Fn(usize) -> bool,
    table_name: Option<&'a str>,
}

impl serde::Serialize for RowObject<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        let mut m = s.serialize_map(None)?;
        for (i, c) in self.table.def.columns.iter().enumerate() {
            if (self.keep)(i) {
                m.serialize_entry(
                    &c.name,
                    &value_json(self.row.cell(c.column_id), &c.data_type),
                )?;
            }
        }
        if let Some(t) = self.table_name {
            m.serialize_entry("_table", t)?;
        }
        m.end()
    }
}

/// A `diff` payload.
#[derive(serde::Serialize)]
struct Diff<'a> {
    new: RowObject<'a>,
    #[serde(skip_serializing_if = "Option::is_none")]
    old: Option<RowObject<'a>>,
    #[serde(rename = "_table")]
    table: &'a str,
}

/// Records that `offset` of `partition` of `topic` is handed out in the batch being
/// committed (the first offset per partition is what a failed batch goes back to).
fn reserve(reserved: &mut Vec<Reservation>, topic: &TopicState, partition: u32, offset: u64) {
    if !reserved
        .iter()
        .any(|(n, rp, _, _)| Arc::ptr_eq(n, &topic.next) && *rp == partition)
    {
        reserved.push((
            Arc::clone(&topic.next),
            partition,
            offset,
            Arc::clone(&topic.appended),
        ));
    }
}

fn check_publisher(caller: &Identity) -> Result<()> {
    if own_only(caller).is_none() {
        return Ok(());
    }
    Err(KalamError::PermissionDenied(
        "publishing to topics needs the service, dba or system role".into(),
    ))
}

/// The user whose messages alone `caller` may read: a plain user's own (service, dba and
/// system read every message).
fn own_only(caller: &Identity) -> Option<&str> {
    (caller.role == kalamdb_commons::Role::User).then(|| caller.user_id.as_str())
}

/// The group `caller` means by `group`: a plain user's groups are their own (`user/group`), so
/// users never share or move another's offsets.
fn group_key(caller: &Identity, group: &str) -> String {
    match own_only(caller) {
        Some(user) => format!("{user}/{group}"),
        None => group.to_string(),
    }
}

fn bad_partition(def: &TopicRecord, partition: u32) -> KalamError {
    KalamError::InvalidInput(format!(
        "topic {} has partitions 0..{}; there is no partition {partition}",
        def.topic_id, def.partitions
    ))
}

impl ChangeCapture for TopicService {
    fn captures(&self, table: &TableId) -> bool {
        self.routes.read().contains_key(table)
    }

    fn capture(
        &self,
        table: &CachedTable,
        user: Option<&UserId>,
        events: &[ChangeEvent],
        batch: &mut WriteBatch,
    ) {
        let routes = self.routes.read();
        let Some(routes) = routes.get(&table.def.table_id()) else {
            return;
        };
        let source = table.def.table_id().to_string();
        // Each route's WHERE judged on all the events' rows at once.
        let rows: Vec<Option<&StoredRow>> = events.iter().map(subject_row).collect();
        let present: Vec<&StoredRow> = rows.iter().flatten().copied().collect();
        let passes: Vec<Vec<bool>> = routes
            .iter()
            .map(|(_, _, filter)| {
                let mut verdicts = filter.as_ref().map(|f| f.mask(&present).into_iter());
                rows.iter()
                    .map(|r| {
                        r.is_some() && verdicts.as_mut().is_none_or(|v| v.next().unwrap_or(false))
                    })
                    .collect()
            })
            .collect();
        let mut reserved = self.reserved.lock();
        for (e, event) in events.iter().enumerate() {
            for (r, (topic, route, _)) in routes.iter().enumerate() {
                if !passes[r][e] {
                    continue;
                }
                let Some(message) = Self::message(table, &source, route, user, event) else {
                    continue;
                };
                let p = log::partition_of(message.key.as_deref(), topic.def.partitions);
                if self.clustered {
                    // Its offset is handed out when the meta leader moves it (outbox.rs).
                    outbox::capture(batch, &topic.def, p, &message);
                    continue;
                }
                let Some(next) = topic.next.get(p as usize) else {
                    continue;
                };
                let offset = next.fetch_add(1, Ordering::SeqCst);
                reserve(&mut reserved, topic, p, offset);
                log::append(batch, &topic.store, p, offset, &message);
            }
        }
    }

    fn finished(&self, written: bool) {
        let mut reserved = self.reserved.lock();
        for (counters, p, before, appended) in reserved.drain(..) {
            if self.clustered {
                // Waiters wake once the write is applied here (`follow::replicated`).
                // A failed write may still commit (a proposal that timed out): its offsets
                // are not handed out again; a gap is left if it never does.
            } else if written {
                appended.notify_waiters();
            } else if let Some(next) = counters.get(p as usize) {
                next.store(before, Ordering::SeqCst);
            }
        }
    }
}
