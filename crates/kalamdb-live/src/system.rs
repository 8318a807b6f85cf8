//! Live queries on `system.*` tables (dba and system users only).
//!
//! System tables are small, computed from the catalog, and have no `_seq` of their own. After
//! every committed catalog write the catalog hook marks the system tables that write feeds as
//! dirty and wakes one task. The task re-reads each dirty table that has subscribers, diffs it
//! by row key against the rows those subscribers were last given, and publishes the
//! difference as insert/update/delete changes (each with a fresh `_seq`) through the ordinary
//! routes. A new subscription is routed and handed the last published rows under the same
//! lock, so it misses nothing and sees nothing twice. `system.live` is refreshed when
//! subscriptions come and go, not on every delivery.

use kalamdb_catalog::error::Result;
use kalamdb_catalog::schema_registry::CachedTable;
use kalamdb_core::app_context::AppContext;
use kalamdb_core::providers::system::{SYSTEM_TABLES, SystemTable};
use kalamdb_tables::changes::{ChangeEvent, ChangeKind};
use kalamdb_tables::rows::StoredRow;
use parking_lot::Mutex;
use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use tokio::sync::Notify;

/// The rows of one system table as its subscribers last saw them, by row key.
type Feed = HashMap<String, StoredRow>;

/// The system-table side of the live-query manager.
#[derive(Debug)]
pub(crate) struct SystemFeeds {
    tables: HashMap<SystemTable, Arc<CachedTable>>,
    feeds: Mutex<HashMap<SystemTable, Feed>>,
    dirty: Mutex<HashSet<SystemTable>>,
    wake: Notify,
}

impl SystemFeeds {
    pub(crate) fn new() -> Self {
        Self {
            tables: SYSTEM_TABLES
                .iter()
                .map(|&t| (t, Arc::new(CachedTable::new(t.definition()))))
                .collect(),
            feeds: Mutex::new(HashMap::new()),
            dirty: Mutex::new(HashSet::new()),
            wake: Notify::new(),
        }
    }

    /// The table a subscription on `system.<name>` reads.
    pub(crate) fn table(&self, name: &str) -> Option<(SystemTable, Arc<CachedTable>)> {
        let kind = SystemTable::from_name(name)?;
        Some((kind, Arc::clone(&self.tables[&kind])))
    }

    /// Marks tables changed and wakes the refresh task.
    pub(crate) fn mark(&self, tables: &[SystemTable]) {
        self.dirty.lock().extend(tables.iter().copied());
        self.wake.notify_one();
    }

    /// Waits until something is marked, then takes the marked set.
    pub(crate) async fn next_dirty(&self) -> Vec<SystemTable> {
        loop {
            let taken: Vec<SystemTable> = self.dirty.lock().drain().collect();
            if !taken.is_empty() {
                return taken;
            }
            self.wake.notified().await;
        }
    }

    /// Runs `register` (which routes the new subscription) and returns the rows it starts
    /// from, both under the feed lock; `with_rows` false skips the rows.
    pub(crate) fn register(
        &self,
        app: &AppContext,
        kind: SystemTable,
        register: impl FnOnce(),
        with_rows: bool,
    ) -> Result<Option<Vec<StoredRow>>> {
        let mut feeds = self.feeds.lock();
        register();
        let feed = match feeds.entry(kind) {
            std::collections::hash_map::Entry::Occupied(e) => e.into_mut(),
            std::collections::hash_map::Entry::Vacant(e) => e.insert(read(app, kind)?),
        };
        Ok(with_rows.then(|| feed.values().cloned().collect()))
    }

    /// Re-reads `kind` and publishes what changed to `publish`; forgets the feed when nobody
    /// subscribes any more (`subscribed` false).
    pub(crate) fn refresh(
        &self,
        app: &AppContext,
        kind: SystemTable,
        subscribed: bool,
        publish: impl FnOnce(&CachedTable, Vec<ChangeEvent>),
    ) -> Result<()> {
        let mut feeds = self.feeds.lock();
        if !subscribed {
            feeds.remove(&kind);
            return Ok(());
        }
        let Some(feed) = feeds.get_mut(&kind) else {
            return Ok(());
        };
        let current = kind.keyed_rows(app.provider_deps())?;
        let mut events = Vec::new();
        let mut next = Feed::with_capacity(current.len());
        for (key, cells) in current {
            let row = match feed.remove(&key) {
                Some(old) if old.cells == cells => old,
                Some(old) => {
                    let new = fresh_row(app, cells);
                    events.push(ChangeEvent {
                        kind: ChangeKind::Update,
                        seq: new.seq,
                        new: Some(new.clone()),
                        old: Some(old),
                    });
                    new
                }
                None => {
                    let new = fresh_row(app, cells);
                    events.push(ChangeEvent {
                        kind: ChangeKind::Insert,
                        seq: new.seq,
                        new: Some(new.clone()),
                        old: None,
                    });
                    new
                }
            };
            next.insert(key, row);
        }
        let mut gone: Vec<StoredRow> = feed.drain().map(|(_, row)| row).collect();
        gone.sort_by_key(|r| r.seq);
        for old in gone {
            events.push(ChangeEvent {
                kind: ChangeKind::Delete,
                seq: app.seq().next_id(),
                new: None,
                old: Some(old),
            });
        }
        *feed = next;
        if !events.is_empty() {
            publish(&self.tables[&kind], events);
        }
        Ok(())
    }
}

fn fresh_row(app: &AppContext, cells: Vec<(u32, kalamdb_catalog::value::Value)>) -> StoredRow {
    StoredRow {
        seq: app.seq().next_id(),
        deleted: false,
        cells,
    }
}

/// The current rows of `kind`, each given a fresh `_seq`.
fn read(app: &AppContext, kind: SystemTable) -> Result<Feed> {
    Ok(kind
        .keyed_rows(app.provider_deps())?
        .into_iter()
        .map(|(key, cells)| (key, fresh_row(app, cells)))
        .collect())
}
