//! Changes another node committed, as this node applies them (a cluster replica): the live
//! queries of this node see them as they see local writes.
//!
//! A replica receives the leader's write batch, not its change events: before the batch is
//! written, [`TableStore::prepare_replicated`] takes the writer locks of the scopes it
//! touches (so a subscription registering meanwhile sees each change either in its initial
//! rows or as a change, as on the leader), reads the versions it replaces and builds the
//! events; [`ReplicatedChanges::publish`] hands them to the listener after the write and
//! releases the locks. Only scopes somebody listens to are read (the locks are taken either
//! way, in the global order transactions use). The replaced versions are read from the hot
//! tier, or from the cold tier when a flush moved them there. A flush's own batches carry
//! their scope's manifest record ([`TableStore::replicated_manifests`]): the cold tier takes
//! it before the batch is written. The deletions of upkeep batches (a flush's, TTL
//! eviction's: [`WriteBatch::upkeep`]) are not changes.

use crate::changes::{ChangeEvent, ChangeKind, ChangeListener};
use crate::rows::{Scope, StoredRow};
use crate::store::TableStore;
use kalamdb_catalog::partitions::{MANIFESTS_PARTITION, manifest_key_parts, table_of_partition};
use kalamdb_catalog::schema_registry::CachedTable;
use kalamdb_commons::{NamespaceId, TableId, TableName, TableType, UserId};
use kalamdb_store::{BatchOp, WriteBatch};
use std::sync::Arc;
use tokio::sync::OwnedMutexGuard;

/// One scope's changes in a replicated batch.
struct ScopeChanges {
    table: Arc<CachedTable>,
    scope: Scope,
    events: Vec<ChangeEvent>,
}

/// The changes of one replicated batch, held with their scopes' writer locks until published.
pub struct ReplicatedChanges {
    listener: Arc<dyn ChangeListener>,
    scopes: Vec<ScopeChanges>,
    _locks: Vec<OwnedMutexGuard<()>>,
}

impl std::fmt::Debug for ReplicatedChanges {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ReplicatedChanges")
            .field("scopes", &self.scopes.len())
            .finish()
    }
}

impl ReplicatedChanges {
    /// Hands the changes to the listener (call once the batch is written), then releases the
    /// scopes' locks.
    pub fn publish(self) {
        for s in self.scopes {
            self.listener.publish(&s.table, s.scope.user(), s.events);
        }
    }
}

/// The live table whose rows `partition` holds (`None`: not a table's, or of an incarnation
/// that is gone).
fn table_of(store: &TableStore, partition: &str) -> Option<Arc<CachedTable>> {
    let (ns, name) = table_of_partition(partition)?
        .split_once('.')
        .map(|(n, t)| (n.to_string(), t.to_string()))?;
    let id = TableId::new(NamespaceId::new(ns), TableName::new(name));
    let table = store.registry.get(&id).ok().flatten()?;
    (table.partitions.used() == partition).then_some(table)
}

/// The scope of row key `key` of `table`.
fn scope_of(table: &CachedTable, key: &[u8]) -> Option<Scope> {
    match table.def.table_type {
        TableType::Shared => Some(Scope::Shared),
        _ => {
            let end = key.iter().position(|b| *b == 0)?;
            Some(Scope::User(UserId::new(String::from_utf8_lossy(
                &key[..end],
            ))))
        }
    }
}

/// The table and scope an application-table write belongs to.
fn target(store: &TableStore, partition: &str, key: &[u8]) -> Option<(Arc<CachedTable>, Scope)> {
    let table = table_of(store, partition)?;
    let scope = scope_of(&table, key)?;
    Some((table, scope))
}

impl TableStore {
    /// The manifest records in `batch` (a flush or compaction another member committed, a
    /// purged user's scope, or a snapshot install): the cold tier takes them now, before the
    /// batch's deletions of the flushed hot versions can be read.
    pub fn replicated_manifests(&self, batch: &WriteBatch) {
        for op in batch.ops() {
            let Some((partition, key, value)) = key_write(op) else {
                continue;
            };
            if partition != MANIFESTS_PARTITION {
                continue;
            }
            let Some((rows, prefix)) = manifest_key_parts(key) else {
                continue;
            };
            let Some((table, scope)) = target(self, rows, prefix) else {
                continue; // dropped meanwhile
            };
            self.cold.replicated_manifest(&table, &scope, value);
        }
    }
}

/// A batch operation on one key: its partition, key and new value (`None`: deleted).
type KeyWrite<'b> = (&'b str, &'b [u8], Option<&'b [u8]>);

/// `op` as a [`KeyWrite`]; `None` for a range deletion.
fn key_write(op: &BatchOp) -> Option<KeyWrite<'_>> {
    match op {
        BatchOp::Put {
            partition,
            key,
            value,
        } => Some((partition, key, Some(value))),
        BatchOp::Delete { partition, key } => Some((partition, key, None)),
        BatchOp::DeleteRange { .. } => None,
    }
}

/// One application-table write of a replicated batch.
struct Write<'b> {
    at: usize,
    partition: &'b str,
    key: &'b [u8],
    value: Option<&'b [u8]>,
}

impl TableStore {
    /// Builds the change events of `batch`, a write another node committed, before it is
    /// written here; see the module doc. `None` when it writes no application rows.
    pub async fn prepare_replicated(&self, batch: &WriteBatch) -> Option<ReplicatedChanges> {
        self.replicated_manifests(batch);
        let listener = Arc::clone(self.change_listener()?);
        let mut scopes: Vec<ScopeChanges> = Vec::new();
        let mut writes = Vec::new();
        // A batch's writes mostly share one partition: its table is looked up once per run.
        let mut last: Option<(&str, Option<Arc<CachedTable>>)> = None;
        for op in batch.ops() {
            let Some((partition, key, value)) = key_write(op) else {
                continue;
            };
            if !partition.starts_with(kalamdb_catalog::partitions::TABLE_PARTITION_PREFIX) {
                continue;
            }
            if value.is_none() && batch.is_upkeep() {
                continue; // moved to a segment, or expired: not a change
            }
            let table = match &last {
                Some((p, table)) if *p == partition => table.clone(),
                _ => last
                    .insert((partition, table_of(self, partition)))
                    .1
                    .clone(),
            };
            let Some(table) = table else {
                continue;
            };
            let Some(scope) = scope_of(&table, key) else {
                continue;
            };
            let at = match scopes
                .iter()
                .position(|s| Arc::ptr_eq(&s.table, &table) && s.scope == scope)
            {
                Some(at) => at,
                None => {
                    scopes.push(ScopeChanges {
                        table,
                        scope,
                        events: Vec::new(),
                    });
                    scopes.len() - 1
                }
            };
            writes.push(Write {
                at,
                partition,
                key,
                value,
            });
        }
        if scopes.is_empty() {
            return None;
        }
        // Writer locks in the one global order transactions use.
        let locks = self
            .locks
            .scopes_owned(scopes.iter().map(|s| (s.table.def.table_id(), &s.scope)))
            .await;
        // Asked under the locks, as writers ask: a subscription registers under them too.
        let wanted: Vec<bool> = scopes
            .iter()
            .map(|s| listener.wants(&s.table.def.table_id(), s.scope.user()))
            .collect();
        // Nobody listening now still holds the locks through the write: a subscription that
        // registered after this check and before the write would otherwise miss the change.
        for w in writes {
            if !wanted[w.at] {
                continue;
            }
            let table = Arc::clone(&scopes[w.at].table);
            let decode = |bytes: &[u8]| {
                StoredRow::decode(bytes).ok().map(|mut row| {
                    table.backfill(row.seq, &mut row.cells);
                    row
                })
            };
            // The version replaced, read before the batch is written (this node's applier is
            // its only writer, and the scope's lock is held); a flushed one from its segment.
            let scope = &scopes[w.at].scope;
            let old = match w.key.strip_prefix(scope.prefix().as_slice()) {
                Some(pk) if table.def.table_type != TableType::Stream => match self
                    .cold
                    .current_versions(&*self.backend, &table, scope, &[pk.to_vec()], None)
                    .await
                {
                    Ok(mut found) => found.pop().flatten(),
                    Err(e) => {
                        // Told as an insert (an update) or not at all (a delete).
                        tracing::warn!(table = %table.def.table_id(), error = %e,
                            "a replicated change's replaced version cannot be read");
                        None
                    }
                },
                _ => self
                    .backend
                    .get(w.partition, w.key)
                    .ok()
                    .flatten()
                    .and_then(|b| decode(&b)),
            }
            .filter(|r| !r.deleted);
            let event = match w.value.and_then(decode) {
                Some(new) if new.deleted => old.map(|old| ChangeEvent {
                    kind: ChangeKind::Delete,
                    seq: new.seq,
                    new: None,
                    old: Some(old),
                }),
                Some(new) => Some(ChangeEvent {
                    kind: if old.is_some() {
                        ChangeKind::Update
                    } else {
                        ChangeKind::Insert
                    },
                    seq: new.seq,
                    new: Some(new),
                    old,
                }),
                // A removed STREAM row.
                None => old.map(|old| ChangeEvent {
                    kind: ChangeKind::Delete,
                    seq: old.seq,
                    new: None,
                    old: Some(old),
                }),
            };
            if let Some(event) = event {
                scopes[w.at].events.push(event);
            }
        }
        scopes.retain(|s| !s.events.is_empty());
        Some(ReplicatedChanges {
            listener,
            scopes,
            _locks: locks,
        })
    }
}
