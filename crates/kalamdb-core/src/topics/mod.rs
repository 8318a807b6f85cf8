//! Topics (`docs/protocol.md` §7.1): partitioned, append-only logs of messages that tables'
//! changes feed (`ALTER TOPIC … ADD SOURCE`), read by consumers and consumer groups.
//!
//! - Definitions live in the catalog ([`kalamdb_catalog::catalog::TopicRecord`]); messages in
//!   the hot store ([`log`]).
//! - **Capture.** The [`TopicService`] is the table store's `ChangeCapture`: inside the commit
//!   gate, with the batch a table change commits in, it appends one message per matching route
//!   and change, so a change and its messages commit together or not at all, and offsets are
//!   handed out in commit order without gaps (a failed batch gives its offsets back).
//! - **Consuming.** A read without a group starts where the caller says. A group starts after
//!   its committed offset (`ACK`), and each fetch *claims* the range it returns: another member
//!   never gets a claimed range until it is acked or its claim is older than
//!   `[topics] visibility_timeout_secs`, when it is handed out again (at-least-once).

pub mod log;

use crate::auth::Identity;
use crate::encode::value_json;
use crate::row_filter::Filter;
use kalamdb_catalog::catalog::{Catalog, TopicOffsetRecord, TopicRecord, TopicRoute};
use kalamdb_catalog::error::{KalamError, Result};
use kalamdb_catalog::schema_registry::CachedTable;
use kalamdb_commons::{TableId, UserId};
use kalamdb_store::{KeyLayout, StorageBackend, WriteBatch};
use kalamdb_tables::changes::{ChangeCapture, ChangeEvent, ChangeKind};
use kalamdb_tables::rows::StoredRow;
use log::{Message, Op};
use parking_lot::{Mutex, RwLock};
use serde_json::{Map, Value as Json};
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

/// A topic as the service holds it: its definition and next offset per partition.
#[derive(Debug)]
struct TopicState {
    def: TopicRecord,
    store: String,
    /// Shared by every version of the definition (an ALTER TOPIC racing a write).
    next: Arc<[AtomicU64]>,
    /// Woken after every batch that appended to the topic (long-polling consumers wait on it).
    appended: Arc<tokio::sync::Notify>,
}

/// One group's claims on one partition.
#[derive(Debug, Default)]
struct GroupCursor {
    /// The next offset not handed out yet.
    cursor: u64,
    /// Handed-out ranges not acked yet, with when they were handed out.
    claims: Vec<(u64, u64, Instant)>,
}

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
    groups: Mutex<HashMap<(String, String, u32), GroupCursor>>,
    visibility: Duration,
}

impl TopicService {
    /// Loads the topics of `catalog` and their offsets.
    pub fn open(
        catalog: Catalog,
        registry: Arc<kalamdb_catalog::schema_registry::SchemaRegistry>,
        backend: Arc<dyn StorageBackend>,
        visibility_timeout_secs: u64,
    ) -> Result<Self> {
        let service = Self {
            catalog,
            registry,
            backend,
            topics: RwLock::default(),
            routes: RwLock::default(),
            reserved: Mutex::default(),
            groups: Mutex::default(),
            visibility: Duration::from_secs(visibility_timeout_secs),
        };
        for def in service.catalog.topics()? {
            service.load(def)?;
        }
        Ok(service)
    }

    fn load(&self, def: TopicRecord) -> Result<()> {
        let store = log::partition_name(&def.topic_id);
        self.backend.create_partition(&store, KeyLayout::Flat)?;
        let next: Arc<[AtomicU64]> = log::next_offsets(&*self.backend, &store, def.partitions)?
            .into_iter()
            .map(AtomicU64::new)
            .collect();
        let state = Arc::new(TopicState {
            def,
            store,
            next,
            appended: Arc::default(),
        });
        self.topics
            .write()
            .insert(state.def.topic_id.clone(), Arc::clone(&state));
        self.rebuild_routes();
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
                            .and_then(|table| compile_filter(text, &table.def).ok());
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
    pub fn create(&self, def: TopicRecord) -> Result<()> {
        self.catalog.put_topic(&def)?;
        self.load(def)
    }

    /// Replaces a topic's definition (its routes); its messages stay.
    pub fn update(&self, def: TopicRecord) -> Result<()> {
        let state = self.state(&def.topic_id)?;
        self.catalog.put_topic(&def)?;
        let updated = Arc::new(TopicState {
            def,
            store: state.store.clone(),
            next: Arc::clone(&state.next),
            appended: Arc::clone(&state.appended),
        });
        self.topics
            .write()
            .insert(updated.def.topic_id.clone(), updated);
        self.rebuild_routes();
        Ok(())
    }

    /// Drops a topic, its messages and its groups' offsets.
    pub fn drop_topic(&self, topic_id: &str) -> Result<()> {
        let state = self.state(topic_id)?;
        self.catalog.delete_topic(topic_id)?;
        self.topics.write().remove(topic_id);
        self.rebuild_routes();
        self.groups.lock().retain(|(t, _, _), _| t != topic_id);
        self.backend.drop_partition(&state.store)?;
        Ok(())
    }

    /// Removes a topic's messages (offsets go on from where they were; groups' committed
    /// offsets stay). Returns how many were removed.
    pub fn clear(&self, topic_id: &str) -> Result<u64> {
        let state = self.state(topic_id)?;
        let mut batch = WriteBatch::new();
        let mut removed = 0;
        for (p, next) in state.next.iter().enumerate() {
            let end = next.load(Ordering::SeqCst);
            let all = |_: &Message| true;
            let range = log::Range {
                from: 0,
                to: u64::MAX,
                limit: 1,
                keep: &all,
            };
            let first = log::read(&*self.backend, &state.store, p as u32, range)?
                .0
                .first()
                .map_or(end, |(o, _)| *o);
            removed += end - first;
            log::set_floor(&mut batch, &state.store, p as u32, end);
            let mut from = (p as u32).to_be_bytes().to_vec();
            from.extend_from_slice(&0u64.to_be_bytes());
            let mut to = (p as u32).to_be_bytes().to_vec();
            to.extend_from_slice(&u64::MAX.to_be_bytes());
            batch.delete_range(&state.store, from, to);
        }
        self.backend.write(batch)?;
        Ok(removed)
    }

    /// Removes the messages of every topic with `RETENTION_SECONDS` that are older than it at
    /// `now_ms`, except (unless the topic has `RETENTION_KEEPS_UNACKED = false`) those a
    /// consumer group with a committed offset has not acknowledged. Returns how many went.
    pub fn apply_retention(&self, now_ms: i64) -> Result<u64> {
        let topics: Vec<Arc<TopicState>> = self.topics.read().values().cloned().collect();
        let mut removed = 0;
        for t in topics {
            let Some(secs) = t.def.retention_seconds else {
                continue;
            };
            let cutoff =
                now_ms.saturating_sub(i64::try_from(secs.saturating_mul(1000)).unwrap_or(i64::MAX));
            let groups = self.catalog.topic_offsets(Some(&t.def.topic_id))?;
            let mut batch = WriteBatch::new();
            for p in 0..t.def.partitions {
                let all = |_: &Message| true;
                let first = log::read(
                    &*self.backend,
                    &t.store,
                    p,
                    log::Range {
                        from: 0,
                        to: u64::MAX,
                        limit: 1,
                        keep: &all,
                    },
                )?
                .0
                .first()
                .map(|(o, _)| *o);
                let Some(first) = first else {
                    continue;
                };
                let young = |m: &Message| m.ts_ms >= cutoff;
                let (kept, scanned_to) = log::read(
                    &*self.backend,
                    &t.store,
                    p,
                    log::Range {
                        from: first,
                        to: u64::MAX,
                        limit: 1,
                        keep: &young,
                    },
                )?;
                let mut keep_from = kept
                    .first()
                    .map_or(scanned_to.unwrap_or(first), |(o, _)| *o);
                if t.def.retention_keeps_unacked
                    && let Some(unacked) = groups
                        .iter()
                        .filter(|g| g.partition_id == p)
                        .map(|g| g.last_acked_offset + 1)
                        .min()
                {
                    keep_from = keep_from.min(unacked);
                }
                if keep_from > first {
                    removed += keep_from - first;
                    let mut from = p.to_be_bytes().to_vec();
                    from.extend_from_slice(&first.to_be_bytes());
                    let mut to = p.to_be_bytes().to_vec();
                    to.extend_from_slice(&keep_from.to_be_bytes());
                    batch.delete_range(&t.store, from, to);
                }
            }
            if !batch.is_empty() {
                self.backend.write(batch)?;
            }
        }
        Ok(removed)
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
    pub fn consume(
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
        let keep = |m: &Message| own.is_none_or(|u| m.user.as_deref() == Some(u));
        let group = group.map(|g| group_key(caller, g));
        let group = group.as_deref();
        let end = state
            .next
            .get(partition as usize)
            .ok_or_else(|| bad_partition(&state.def, partition))?
            .load(Ordering::SeqCst);
        let from_start = |committed: Option<u64>| match (committed, start) {
            (Some(c), _) => c + 1,
            (None, Start::Offset(o)) => o,
            (None, Start::Earliest) => 0,
            (None, Start::Latest) => end,
        };
        let Some(group) = group else {
            let from = from_start(None);
            return self.read(&state, partition, from, u64::MAX, limit, &keep);
        };
        let committed = self
            .catalog
            .topic_offset(topic_id, group, partition)?
            .map(|o| o.last_acked_offset);
        let mut groups = self.groups.lock();
        let key = (topic_id.to_string(), group.to_string(), partition);
        let fresh = !groups.contains_key(&key);
        let g = groups.entry(key).or_default();
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
            return self.read(&state, partition, from, claim.1, limit, &keep);
        }
        let from = g.cursor;
        let fetch = self.read(&state, partition, from, u64::MAX, limit, &keep)?;
        if fetch.next_offset > from {
            g.claims.push((from, fetch.next_offset, now));
            g.cursor = fetch.next_offset;
        }
        Ok(fetch)
    }

    /// Offsets `from..to` of `partition`: up to `limit` messages `keep` takes.
    fn read(
        &self,
        state: &TopicState,
        partition: u32,
        from: u64,
        to: u64,
        limit: usize,
        keep: &dyn Fn(&Message) -> bool,
    ) -> Result<Fetch> {
        let range = log::Range {
            from,
            to,
            limit,
            keep,
        };
        let (read, next) = log::read(&*self.backend, &state.store, partition, range)?;
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
            let end = state
                .next
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
    pub fn ack(
        &self,
        caller: &Identity,
        topic_id: &str,
        group: &str,
        partition: u32,
        upto: u64,
    ) -> Result<u64> {
        let group = &group_key(caller, group);
        let state = self.state(topic_id)?;
        let end = state
            .next
            .get(partition as usize)
            .ok_or_else(|| bad_partition(&state.def, partition))?
            .load(Ordering::SeqCst);
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
        if let Some(g) =
            self.groups
                .lock()
                .get_mut(&(topic_id.to_string(), group.to_string(), partition))
        {
            g.claims.retain(|(_, to, _)| *to > upto + 1);
        }
        Ok(upto)
    }

    /// The message for `event` on `route`, if the route takes this kind of change and its
    /// `filter` passes the row.
    fn message(
        table: &CachedTable,
        route: &TopicRoute,
        filter: Option<&Filter>,
        user: Option<&UserId>,
        event: &ChangeEvent,
    ) -> Option<Message> {
        let (op, row) = match (event.kind, &event.new, &event.old) {
            (ChangeKind::Insert, Some(n), _) => (Op::Insert, n),
            (ChangeKind::Update, Some(n), _) => (Op::Update, n),
            (ChangeKind::Delete, _, Some(o)) => (Op::Delete, o),
            _ => return None,
        };
        if !route.op.eq_ignore_ascii_case(op.as_str()) || filter.is_some_and(|f| !f.matches(row)) {
            return None;
        }
        let key = table.pk_index.map(|p| {
            let c = &table.def.columns[p];
            match value_json(row.cell(c.column_id), &c.data_type) {
                Json::String(s) => s,
                other => other.to_string(),
            }
        });
        let payload = match route.payload.as_str() {
            "key" => row_json(table, row, |i| Some(i) == table.pk_index, None),
            "diff" => {
                let old = event.old.as_ref();
                let changed = |i: usize| {
                    let id = table.def.columns[i].column_id;
                    Some(i) == table.pk_index || old.is_none_or(|o| o.cell(id) != row.cell(id))
                };
                let mut m = Map::new();
                m.insert("new".into(), row_json(table, row, changed, None));
                if let (Some(o), Op::Update) = (old, op) {
                    m.insert("old".into(), row_json(table, o, changed, None));
                }
                m.insert(
                    "_table".into(),
                    Json::String(table.def.table_id().to_string()),
                );
                Json::Object(m)
            }
            _ => row_json(table, row, |_| true, Some(table)),
        };
        Some(Message {
            key,
            payload: payload.to_string().into_bytes(),
            op,
            user: user.map(|u| u.to_string()),
            ts_ms: chrono::Utc::now().timestamp_millis(),
            source: Some(table.def.table_id().to_string()),
        })
    }
}

/// Compiles a source's `WHERE` text over the columns of `def`.
pub(crate) fn compile_filter(text: &str, def: &kalamdb_commons::TableDefinition) -> Result<Filter> {
    let expr = datafusion::sql::sqlparser::parser::Parser::new(
        &datafusion::sql::sqlparser::dialect::GenericDialect {},
    )
    .try_with_sql(text)
    .and_then(|mut p| p.parse_expr())
    .map_err(|e| KalamError::InvalidSql(e.to_string()))?;
    Filter::compile(&expr, def, "")
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

/// The row's columns for which `keep` holds, as a JSON object (with `_table` when `with_table`).
fn row_json(
    table: &CachedTable,
    row: &StoredRow,
    keep: impl Fn(usize) -> bool,
    with_table: Option<&CachedTable>,
) -> Json {
    let mut m = Map::new();
    for (i, c) in table.def.columns.iter().enumerate() {
        if keep(i) {
            m.insert(
                c.name.clone(),
                value_json(row.cell(c.column_id), &c.data_type),
            );
        }
    }
    if let Some(t) = with_table {
        m.insert("_table".into(), Json::String(t.def.table_id().to_string()));
    }
    Json::Object(m)
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
        let mut reserved = self.reserved.lock();
        for event in events {
            for (topic, route, filter) in routes {
                let Some(message) = Self::message(table, route, filter.as_deref(), user, event)
                else {
                    continue;
                };
                let p = log::partition_of(message.key.as_deref(), topic.def.partitions);
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
            if written {
                appended.notify_waiters();
            } else if let Some(next) = counters.get(p as usize) {
                next.store(before, Ordering::SeqCst);
            }
        }
    }
}
