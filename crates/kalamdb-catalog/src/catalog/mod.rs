//! The persisted catalog: namespaces, table definitions (every version), users and storages,
//! stored as JSON entities in `sys/*` partitions of the same backend as application data (so a
//! DDL change and the rows it touches commit in one batch, and one backup holds both).
//!
//! [`Catalog::open`] brings the store up to [`SYSTEM_SCHEMA_VERSION`]: partitions that are
//! missing are created (an upgrade from an older server adds the tables it did not have), the
//! built-in `local` storage and `default` namespace are bootstrapped, and the stored version is
//! bumped. Table-definition keys: `L<ns>.<table>` holds the latest version,
//! `V<ns>.<table>\0<version:u32be>` every version.

mod entities;

pub use entities::{
    AuditEntry, JobRecord, NamespaceRecord, OAuthIdentity, StorageRecord, TopicOffsetRecord,
    TopicRecord, TopicRoute, UserRecord, ViewRecord,
};

use crate::error::{KalamError, Result};
use crate::partitions::{TABLE_PARTITION_PREFIX, TablePartitions};
use kalamdb_commons::{NamespaceId, TableDefinition, TableId, UserId};
use kalamdb_store::{KeyLayout, StorageBackend, WriteBatch};
use serde::Serialize;
use serde::de::DeserializeOwned;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

/// Version of the system schema this build writes. Bump it when a system partition is added.
pub const SYSTEM_SCHEMA_VERSION: u32 = 5;

const P_META: &str = "sys/meta";
const P_NAMESPACES: &str = "sys/namespaces";
const P_SCHEMAS: &str = "sys/schemas";
const P_USERS: &str = "sys/users";
const P_STORAGES: &str = "sys/storages";
/// Added in system schema version 2.
const P_AUDIT: &str = "sys/audit_log";
/// Added in system schema version 3.
const P_JOBS: &str = crate::partitions::JOBS_PARTITION;
/// Added in system schema version 4.
const P_VIEWS: &str = "sys/views";
/// Added in system schema version 5.
const P_TOPICS: &str = "sys/topics";
/// Added in system schema version 5.
const P_TOPIC_OFFSETS: &str = "sys/topic_offsets";
/// System partitions, in creation order (version 1: meta … storages; version 2: audit_log;
/// version 3: jobs; version 4: views; version 5: topics and their consumer groups' offsets).
const SYSTEM_PARTITIONS: &[&str] = &[
    P_META,
    P_NAMESPACES,
    P_SCHEMAS,
    P_USERS,
    P_STORAGES,
    P_AUDIT,
    P_JOBS,
    P_VIEWS,
    P_TOPICS,
    P_TOPIC_OFFSETS,
];
const KEY_SCHEMA_VERSION: &[u8] = b"system_schema_version";
const KEY_SEQ_HIGH_WATER: &[u8] = b"seq_high_water";
/// Prefix of the tables dropped whose storage is not cleaned up yet (in `P_META`).
const PENDING_DROP_PREFIX: &[u8] = b"pending_drop/";

/// Prefix of the external-identity index (in `P_META`): `oauth_user/<provider>\0<subject>` ->
/// the user id last stored with that identity.
const OAUTH_USER_PREFIX: &[u8] = b"oauth_user/";

fn oauth_user_key(o: &OAuthIdentity) -> Vec<u8> {
    let mut k = OAUTH_USER_PREFIX.to_vec();
    k.extend_from_slice(o.provider.as_bytes());
    k.push(0);
    k.extend_from_slice(o.subject.as_bytes());
    k
}

fn pending_drop_key(def: &TableDefinition) -> Vec<u8> {
    let mut k = PENDING_DROP_PREFIX.to_vec();
    k.extend_from_slice(format!("{}@{}", def.table_id(), def.created_at).as_bytes());
    k
}

/// The built-in namespace for unqualified names.
pub const DEFAULT_NAMESPACE: &str = "default";

/// Which part of the catalog a write changed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CatalogPart {
    /// Namespace records.
    Namespaces,
    /// Table definitions and their versions.
    Tables,
    /// User records.
    Users,
    /// The audit log.
    AuditLog,
    /// Storage records.
    Storages,
    /// Background jobs.
    Jobs,
    /// Topics and consumer-group offsets.
    Topics,
}

/// Called after every committed catalog write (live queries on `system.*` use it).
pub type CatalogHook = Arc<dyn Fn(CatalogPart) + Send + Sync>;

/// Access to the persisted catalog.
#[derive(Clone)]
pub struct Catalog {
    backend: Arc<dyn StorageBackend>,
    /// Bumped after every write of a user record; see [`Catalog::users_epoch`].
    users_epoch: Arc<AtomicU64>,
    /// Serializes read-modify-writes of user records ([`Catalog::update_user`]).
    users_write: Arc<parking_lot::Mutex<()>>,
    hook: Arc<std::sync::OnceLock<CatalogHook>>,
}

impl std::fmt::Debug for Catalog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Catalog")
            .field("users_epoch", &self.users_epoch)
            .finish_non_exhaustive()
    }
}

fn encode<T: Serialize>(v: &T) -> Vec<u8> {
    serde_json::to_vec(v).expect("catalog entities serialize")
}

fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T> {
    serde_json::from_slice(bytes)
        .map_err(|e| KalamError::Internal(format!("corrupt catalog entry: {e}")))
}

fn view_key(namespace: &str, name: &str) -> Vec<u8> {
    let mut k = namespace.as_bytes().to_vec();
    k.push(0);
    k.extend_from_slice(name.as_bytes());
    k
}

fn offset_key(topic_id: &str, group_id: &str, partition_id: u32) -> Vec<u8> {
    let mut k = topic_id.as_bytes().to_vec();
    k.push(0);
    k.extend_from_slice(group_id.as_bytes());
    k.push(0);
    k.extend_from_slice(&partition_id.to_be_bytes());
    k
}

fn latest_key(id: &TableId) -> Vec<u8> {
    format!("L{id}").into_bytes()
}

fn versions_prefix(id: &TableId) -> Vec<u8> {
    let mut k = format!("V{id}").into_bytes();
    k.push(0);
    k
}

impl Catalog {
    /// Opens the catalog, creating or upgrading system partitions as needed.
    pub fn open(backend: Arc<dyn StorageBackend>, now_micros: i64) -> Result<Self> {
        for p in SYSTEM_PARTITIONS {
            backend.create_partition(p, KeyLayout::Flat)?;
        }
        let catalog = Self {
            backend,
            users_epoch: Arc::default(),
            users_write: Arc::default(),
            hook: Arc::default(),
        };
        let stored = catalog.system_schema_version()?;
        if stored < SYSTEM_SCHEMA_VERSION {
            tracing::info!(
                from = stored,
                to = SYSTEM_SCHEMA_VERSION,
                "upgrading system schema"
            );
            let mut batch = WriteBatch::new();
            if catalog.storage("local")?.is_none() {
                batch.put(
                    P_STORAGES,
                    b"local".to_vec(),
                    encode(&StorageRecord::local(now_micros)),
                );
            }
            if catalog
                .namespace(&NamespaceId::new(DEFAULT_NAMESPACE))?
                .is_none()
            {
                let ns = NamespaceRecord {
                    namespace_id: DEFAULT_NAMESPACE.into(),
                    created_at: now_micros,
                    options: None,
                };
                batch.put(
                    P_NAMESPACES,
                    DEFAULT_NAMESPACE.as_bytes().to_vec(),
                    encode(&ns),
                );
            }
            batch.put(
                P_META,
                KEY_SCHEMA_VERSION.to_vec(),
                SYSTEM_SCHEMA_VERSION.to_be_bytes().to_vec(),
            );
            catalog.backend.write(batch)?;
        }
        catalog.drop_orphan_partitions()?;
        Ok(catalog)
    }

    /// Registers the hook told about every committed write; only the first call takes effect.
    pub fn set_hook(&self, hook: CatalogHook) {
        let _ = self.hook.set(hook);
    }

    /// Another node's catalog write was applied to this node's store (a cluster replica):
    /// what is derived from the changed part is refreshed as after a local write. Returns the
    /// tables whose latest definition the batch wrote or removed.
    pub fn replicated(&self, batch: &WriteBatch) -> Vec<TableId> {
        let mut parts: Vec<CatalogPart> = Vec::new();
        let mut tables = Vec::new();
        for op in batch.ops() {
            let (partition, key) = match op {
                kalamdb_store::BatchOp::Put { partition, key, .. }
                | kalamdb_store::BatchOp::Delete { partition, key } => (partition, key),
                kalamdb_store::BatchOp::DeleteRange {
                    partition, from, ..
                } => (partition, from),
            };
            let part = match partition.as_str() {
                P_NAMESPACES => CatalogPart::Namespaces,
                P_SCHEMAS => {
                    if let Some(id) = key
                        .strip_prefix(b"L")
                        .and_then(|k| std::str::from_utf8(k).ok())
                        .and_then(|k| k.split_once('.'))
                    {
                        tables.push(TableId::new(
                            NamespaceId::new(id.0),
                            kalamdb_commons::TableName::new(id.1),
                        ));
                    }
                    CatalogPart::Tables
                }
                P_USERS => CatalogPart::Users,
                P_AUDIT => CatalogPart::AuditLog,
                P_STORAGES => CatalogPart::Storages,
                P_JOBS => CatalogPart::Jobs,
                P_TOPICS | P_TOPIC_OFFSETS => CatalogPart::Topics,
                _ => continue,
            };
            if !parts.contains(&part) {
                parts.push(part);
            }
        }
        for part in parts {
            if part == CatalogPart::Users {
                self.users_epoch.fetch_add(1, Ordering::SeqCst);
            }
            if let Some(hook) = self.hook.get() {
                hook(part);
            }
        }
        tables
    }

    /// The ids of the topics whose definitions `batch` writes or removes (a replica follows
    /// them).
    pub fn topics_written(batch: &WriteBatch) -> Vec<String> {
        let mut ids: Vec<String> = batch
            .ops()
            .iter()
            .filter_map(|op| match op {
                kalamdb_store::BatchOp::Put { partition, key, .. }
                | kalamdb_store::BatchOp::Delete { partition, key }
                    if partition == P_TOPICS =>
                {
                    std::str::from_utf8(key).ok().map(str::to_string)
                }
                _ => None,
            })
            .collect();
        ids.dedup();
        ids
    }

    /// Writes `batch`, then tells the hook.
    fn commit(&self, batch: WriteBatch, part: CatalogPart) -> Result<()> {
        self.backend.write(batch)?;
        if let Some(hook) = self.hook.get() {
            hook(part);
        }
        Ok(())
    }

    /// The stored system schema version (0 on a new store).
    pub fn system_schema_version(&self) -> Result<u32> {
        Ok(self
            .backend
            .get(P_META, KEY_SCHEMA_VERSION)?
            .and_then(|b| b.try_into().ok())
            .map(u32::from_be_bytes)
            .unwrap_or(0))
    }

    /// The largest `_seq` recorded as handed out (see [`Catalog::put_seq_high_water`]).
    pub fn seq_high_water(&self) -> Result<Option<i64>> {
        Ok(self
            .backend
            .get(P_META, KEY_SEQ_HIGH_WATER)?
            .and_then(|b| b.try_into().ok())
            .map(i64::from_be_bytes))
    }

    /// Records that ids up to `seq` have been handed out.
    pub fn put_seq_high_water(&self, seq: i64) -> Result<()> {
        let mut batch = WriteBatch::new();
        batch.put(
            P_META,
            KEY_SEQ_HIGH_WATER.to_vec(),
            seq.to_be_bytes().to_vec(),
        );
        Ok(self.backend.write(batch)?)
    }

    /// Drops table partitions whose table is no longer in the catalog (a DROP TABLE that
    /// crashed after removing the definition).
    fn drop_orphan_partitions(&self) -> Result<()> {
        let live: std::collections::HashSet<String> = self
            .tables(None)?
            .iter()
            .map(|d| TablePartitions::of(d).used().to_string())
            .collect();
        for name in self.backend.list_partitions() {
            if name.starts_with(TABLE_PARTITION_PREFIX) && !live.contains(&name) {
                tracing::warn!(partition = %name, "dropping orphan table partition");
                self.backend.drop_partition(&name)?;
            }
        }
        Ok(())
    }

    fn scan_all<T: DeserializeOwned>(&self, partition: &str, prefix: &[u8]) -> Result<Vec<T>> {
        let mut out = Vec::new();
        for item in self.backend.scan(partition, prefix, None)? {
            let (_, v) = item?;
            out.push(decode(&v)?);
        }
        Ok(out)
    }

    fn get<T: DeserializeOwned>(&self, partition: &str, key: &[u8]) -> Result<Option<T>> {
        self.backend
            .get(partition, key)?
            .map(|b| decode(&b))
            .transpose()
    }

    // ---- namespaces ----

    /// All namespaces, by name.
    pub fn namespaces(&self) -> Result<Vec<NamespaceRecord>> {
        self.scan_all(P_NAMESPACES, b"")
    }

    /// All namespaces with the number of tables in each.
    pub fn namespaces_with_table_counts(&self) -> Result<Vec<(NamespaceRecord, usize)>> {
        let tables = self.tables(None)?;
        Ok(self
            .namespaces()?
            .into_iter()
            .map(|n| {
                let count = tables
                    .iter()
                    .filter(|t| t.namespace.as_str() == n.namespace_id)
                    .count();
                (n, count)
            })
            .collect())
    }

    /// One namespace.
    pub fn namespace(&self, id: &NamespaceId) -> Result<Option<NamespaceRecord>> {
        self.get(P_NAMESPACES, id.as_str().as_bytes())
    }

    /// Stores a namespace.
    pub fn put_namespace(&self, ns: &NamespaceRecord) -> Result<()> {
        let mut batch = WriteBatch::new();
        batch.put(
            P_NAMESPACES,
            ns.namespace_id.as_bytes().to_vec(),
            encode(ns),
        );
        self.commit(batch, CatalogPart::Namespaces)
    }

    /// Removes a namespace record (its tables must be gone).
    pub fn delete_namespace(&self, id: &NamespaceId) -> Result<()> {
        let mut batch = WriteBatch::new();
        batch.delete(P_NAMESPACES, id.as_str().as_bytes().to_vec());
        self.commit(batch, CatalogPart::Namespaces)
    }

    // ---- tables ----

    /// Latest definition of every table, optionally of one namespace.
    pub fn tables(&self, namespace: Option<&NamespaceId>) -> Result<Vec<TableDefinition>> {
        let prefix = match namespace {
            Some(ns) => format!("L{ns}.").into_bytes(),
            None => b"L".to_vec(),
        };
        self.scan_all(P_SCHEMAS, &prefix)
    }

    /// Latest definition of a table.
    pub fn table(&self, id: &TableId) -> Result<Option<TableDefinition>> {
        self.get(P_SCHEMAS, &latest_key(id))
    }

    /// Every stored version of every table (for `system.schemas`).
    pub fn all_versions(&self) -> Result<Vec<TableDefinition>> {
        self.scan_all(P_SCHEMAS, b"V")
    }

    /// Stores a new table (or a new version of one) and creates its partitions.
    pub fn put_table(&self, def: &TableDefinition) -> Result<()> {
        let id = def.table_id();
        let partitions = TablePartitions::of(def);
        self.backend
            .create_partition(partitions.used(), partitions.layout())?;
        let mut version_key = versions_prefix(&id);
        version_key.extend_from_slice(&def.version.to_be_bytes());
        let mut batch = WriteBatch::new();
        batch.put(P_SCHEMAS, latest_key(&id), encode(def));
        batch.put(P_SCHEMAS, version_key, encode(def));
        self.commit(batch, CatalogPart::Tables)
    }

    /// Removes a table's definitions and records it as a pending drop (its hot partition
    /// and cold files are removed by the caller, then [`Catalog::finish_drop`]).
    pub fn drop_table(&self, id: &TableId) -> Result<Option<TableDefinition>> {
        let Some(def) = self.table(id)? else {
            return Ok(None);
        };
        let mut batch = WriteBatch::new();
        batch.delete(P_SCHEMAS, latest_key(id));
        for item in self.backend.scan(P_SCHEMAS, &versions_prefix(id), None)? {
            let (k, _) = item?;
            batch.delete(P_SCHEMAS, k.to_vec());
        }
        // In the same batch: the definition is kept as a pending cleanup until its rows and
        // files are gone (see [`Catalog::pending_drops`]).
        batch.put(P_META, pending_drop_key(&def), encode(&def));
        self.commit(batch, CatalogPart::Tables)?;
        Ok(Some(def))
    }

    /// Tables dropped whose hot partition or cold files may still exist (a stop interrupted
    /// their cleanup).
    pub fn pending_drops(&self) -> Result<Vec<TableDefinition>> {
        self.scan_all(P_META, PENDING_DROP_PREFIX)
    }

    /// Marks the cleanup of a dropped table done.
    pub fn finish_drop(&self, def: &TableDefinition) -> Result<()> {
        let mut batch = WriteBatch::new();
        batch.delete(P_META, pending_drop_key(def));
        self.backend.write(batch)?;
        Ok(())
    }

    // ---- users ----

    /// All users, deleted ones included.
    pub fn users(&self) -> Result<Vec<UserRecord>> {
        self.scan_all(P_USERS, b"")
    }

    /// One user, deleted or not.
    pub fn user(&self, id: &UserId) -> Result<Option<UserRecord>> {
        self.get(P_USERS, id.as_str().as_bytes())
    }

    /// A counter bumped after every write of a user record. Whatever was derived from user
    /// records read after the counter showed `n` is current while it still shows `n`.
    pub fn users_epoch(&self) -> u64 {
        self.users_epoch.load(Ordering::SeqCst)
    }

    /// Stores a user.
    pub fn put_user(&self, user: &UserRecord) -> Result<()> {
        let _one_writer = self.users_write.lock();
        self.write_user(user)
    }

    /// Stores `user` unless a record (active or dropped) has its id; returns whether it did.
    pub fn insert_user_if_absent(&self, user: &UserRecord) -> Result<bool> {
        let _one_writer = self.users_write.lock();
        if self.user(&UserId::new(user.user_id.as_str()))?.is_some() {
            return Ok(false);
        }
        self.write_user(user)?;
        Ok(true)
    }

    /// Applies `change` to the stored record of `id` and stores it, as one step against other
    /// user writes (a login's bookkeeping cannot undo a DROP USER or role change that landed
    /// while it checked the password). `None` when there is no such user; `change` may refuse
    /// by returning an error, and then nothing is written.
    pub fn update_user<T, E: From<KalamError>>(
        &self,
        id: &UserId,
        change: impl FnOnce(&mut UserRecord) -> std::result::Result<T, E>,
    ) -> std::result::Result<Option<(UserRecord, T)>, E> {
        let _one_writer = self.users_write.lock();
        let Some(mut user) = self.user(id)? else {
            return Ok(None);
        };
        let out = change(&mut user)?;
        self.write_user(&user)?;
        Ok(Some((user, out)))
    }

    /// The user stored last with the external identity `o` (check its record: the name may
    /// have been re-created since without it).
    pub fn user_by_oauth(&self, o: &OAuthIdentity) -> Result<Option<UserId>> {
        let id: Option<String> = self.get(P_META, &oauth_user_key(o))?;
        Ok(id.map(|id| UserId::new(id.as_str())))
    }

    fn write_user(&self, user: &UserRecord) -> Result<()> {
        let mut batch = WriteBatch::new();
        batch.put(P_USERS, user.user_id.as_bytes().to_vec(), encode(user));
        if let Some(o) = &user.oauth {
            batch.put(P_META, oauth_user_key(o), encode(&user.user_id));
        }
        self.commit(batch, CatalogPart::Users)?;
        self.users_epoch.fetch_add(1, Ordering::SeqCst);
        Ok(())
    }

    // ---- audit log ----

    /// Appends an audit entry (keyed by its id, a `_seq`-style snowflake, so entries sort by time).
    pub fn append_audit(&self, entry: &AuditEntry) -> Result<()> {
        let mut batch = WriteBatch::new();
        batch.put(
            P_AUDIT,
            (entry.audit_id as u64).to_be_bytes().to_vec(),
            encode(entry),
        );
        self.commit(batch, CatalogPart::AuditLog)
    }

    /// Every audit entry, oldest first.
    pub fn audit_entries(&self) -> Result<Vec<AuditEntry>> {
        self.scan_all(P_AUDIT, b"")
    }

    /// Removes audit entries (after they were flushed to Parquet).
    pub fn delete_audit(&self, ids: &[i64]) -> Result<()> {
        let mut batch = WriteBatch::new();
        for id in ids {
            batch.delete(P_AUDIT, (*id as u64).to_be_bytes().to_vec());
        }
        self.commit(batch, CatalogPart::AuditLog)
    }

    // ---- views ----

    /// Creates or replaces a view.
    pub fn put_view(&self, view: &ViewRecord) -> Result<()> {
        let mut batch = WriteBatch::new();
        batch.put(
            P_VIEWS,
            view_key(&view.namespace_id, &view.view_name),
            encode(view),
        );
        self.commit(batch, CatalogPart::Tables)
    }

    /// One view.
    pub fn view(&self, namespace: &str, name: &str) -> Result<Option<ViewRecord>> {
        self.get(P_VIEWS, &view_key(namespace, name))
    }

    /// The views of one namespace, by name.
    pub fn views(&self, namespace: &str) -> Result<Vec<ViewRecord>> {
        let mut prefix = namespace.as_bytes().to_vec();
        prefix.push(0);
        self.scan_all(P_VIEWS, &prefix)
    }

    /// Removes a view.
    pub fn delete_view(&self, namespace: &str, name: &str) -> Result<()> {
        let mut batch = WriteBatch::new();
        batch.delete(P_VIEWS, view_key(namespace, name));
        self.commit(batch, CatalogPart::Tables)
    }

    // ---- jobs ----

    /// Stores a job record (keyed by its id, a `_seq`, so jobs sort by creation).
    pub fn put_job(&self, job: &JobRecord) -> Result<()> {
        let mut batch = WriteBatch::new();
        batch.put(P_JOBS, job.job_id.as_bytes().to_vec(), encode(job));
        self.commit(batch, CatalogPart::Jobs)
    }

    /// Removes job records.
    pub fn delete_jobs(&self, ids: &[String]) -> Result<()> {
        let mut batch = WriteBatch::new();
        for id in ids {
            batch.delete(P_JOBS, id.as_bytes().to_vec());
        }
        self.commit(batch, CatalogPart::Jobs)
    }

    /// Every job, oldest first.
    pub fn jobs(&self) -> Result<Vec<JobRecord>> {
        self.scan_all(P_JOBS, b"")
    }

    // ---- storages ----

    /// All storages.
    pub fn storages(&self) -> Result<Vec<StorageRecord>> {
        self.scan_all(P_STORAGES, b"")
    }

    /// Stores a storage record.
    pub fn put_storage(&self, storage: &StorageRecord) -> Result<()> {
        let mut batch = WriteBatch::new();
        batch.put(
            P_STORAGES,
            storage.storage_id.as_bytes().to_vec(),
            encode(storage),
        );
        self.commit(batch, CatalogPart::Storages)
    }

    /// Removes a storage record.
    pub fn delete_storage(&self, id: &str) -> Result<()> {
        let mut batch = WriteBatch::new();
        batch.delete(P_STORAGES, id.as_bytes().to_vec());
        self.commit(batch, CatalogPart::Storages)
    }

    /// One storage.
    pub fn storage(&self, id: &str) -> Result<Option<StorageRecord>> {
        self.get(P_STORAGES, id.as_bytes())
    }

    // ---- topics ----

    /// Every topic, by id.
    pub fn topics(&self) -> Result<Vec<TopicRecord>> {
        self.scan_all(P_TOPICS, b"")
    }

    /// One topic (`ns.name`).
    pub fn topic(&self, topic_id: &str) -> Result<Option<TopicRecord>> {
        self.get(P_TOPICS, topic_id.as_bytes())
    }

    /// Creates or replaces a topic.
    pub fn put_topic(&self, topic: &TopicRecord) -> Result<()> {
        let mut batch = WriteBatch::new();
        batch.put(P_TOPICS, topic.topic_id.as_bytes().to_vec(), encode(topic));
        self.commit(batch, CatalogPart::Topics)
    }

    /// Removes a topic and its groups' offsets.
    pub fn delete_topic(&self, topic_id: &str) -> Result<()> {
        let mut batch = WriteBatch::new();
        batch.delete(P_TOPICS, topic_id.as_bytes().to_vec());
        for o in self.topic_offsets(Some(topic_id))? {
            batch.delete(
                P_TOPIC_OFFSETS,
                offset_key(&o.topic_id, &o.group_id, o.partition_id),
            );
        }
        self.commit(batch, CatalogPart::Topics)
    }

    /// The committed offsets of consumer groups (of one topic, or all).
    pub fn topic_offsets(&self, topic_id: Option<&str>) -> Result<Vec<TopicOffsetRecord>> {
        let prefix = topic_id.map(|t| {
            let mut p = t.as_bytes().to_vec();
            p.push(0);
            p
        });
        self.scan_all(P_TOPIC_OFFSETS, prefix.as_deref().unwrap_or(b""))
    }

    /// The committed offset of one group on one partition.
    pub fn topic_offset(
        &self,
        topic_id: &str,
        group_id: &str,
        partition_id: u32,
    ) -> Result<Option<TopicOffsetRecord>> {
        self.get(
            P_TOPIC_OFFSETS,
            &offset_key(topic_id, group_id, partition_id),
        )
    }

    /// Stores a group's committed offset.
    pub fn put_topic_offset(&self, record: &TopicOffsetRecord) -> Result<()> {
        let mut batch = WriteBatch::new();
        batch.put(
            P_TOPIC_OFFSETS,
            offset_key(&record.topic_id, &record.group_id, record.partition_id),
            encode(record),
        );
        self.commit(batch, CatalogPart::Topics)
    }
}

#[cfg(test)]
mod tests;
