//! [`SchemaRegistry`]: `TableId -> CachedTable`, the memoized view of table definitions (every
//! statement and change needs one; building an Arrow schema per lookup cost more than the
//! lookup's work).
//!
//! A table's Arrow schema is built once, when its entry is created, and shared as an
//! `Arc<Schema>`; a lookup is one concurrent-map read and an `Arc` clone. Entries are loaded
//! from the catalog on first use, inserted by CREATE TABLE and removed by DROP TABLE
//! ([`SchemaRegistry::invalidate`]), which touches exactly the table changed.

use crate::catalog::Catalog;
use crate::error::Result;
use crate::partitions::TablePartitions;
use crate::types::table_schema;
use dashmap::DashMap;
use datafusion::arrow::datatypes::SchemaRef;
use kalamdb_commons::{TableDefinition, TableId};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

/// Everything the hot path needs about one table, computed once.
#[derive(Debug)]
pub struct CachedTable {
    /// The latest definition.
    pub def: Arc<TableDefinition>,
    /// Arrow schema: user columns, then system columns.
    pub schema: SchemaRef,
    /// Hot-store partitions.
    pub partitions: TablePartitions,
    /// Index of the primary-key column in `def.columns`.
    pub pk_index: Option<usize>,
    /// Literal column defaults by column index, evaluated once on first use (see
    /// [`CachedTable::literal_defaults`]).
    literal_defaults: std::sync::OnceLock<Vec<Option<crate::value::Value>>>,
    /// See [`CachedTable::missing_values`].
    missing_values: Vec<Option<crate::value::Value>>,
    /// Indexes of the columns added by `ALTER TABLE` (rows older than that read the default);
    /// empty for most tables, so [`CachedTable::backfill`] costs nothing on them.
    added_columns: Vec<usize>,
    /// Whether the table may have flushed segments: unknown, no, yes (see
    /// `ColdTier::may_have_segments` in `kalamdb-tables`).
    pub cold_state: std::sync::atomic::AtomicU8,
}

impl CachedTable {
    /// Builds the cached form of a definition (the only place schemas are built).
    pub fn new(def: TableDefinition) -> Self {
        let schema = Arc::new(table_schema(&def));
        let partitions = TablePartitions::of(&def);
        let pk_index = def.columns.iter().position(|c| c.primary_key);
        let missing_values = def
            .columns
            .iter()
            .map(crate::defaults::missing_value)
            .collect();
        let added_columns = (0..def.columns.len())
            .filter(|&i| def.columns[i].added_at_seq.is_some())
            .collect();
        Self {
            added_columns,
            def: Arc::new(def),
            schema,
            partitions,
            pk_index,
            literal_defaults: std::sync::OnceLock::new(),
            missing_values,
            cold_state: std::sync::atomic::AtomicU8::new(0),
        }
    }

    /// The value of each column's literal default (by column index), parsed once.
    pub fn literal_defaults(&self) -> &[Option<crate::value::Value>] {
        self.literal_defaults.get_or_init(|| {
            self.def
                .columns
                .iter()
                .map(crate::defaults::literal_default)
                .collect()
        })
    }

    /// What rows older than each column read in it (by column index): the literal DEFAULT a
    /// column added by `ALTER TABLE` had then; `None` for other columns.
    pub fn missing_values(&self) -> &[Option<crate::value::Value>] {
        &self.missing_values
    }

    /// Gives `row` the missing value of every column added (by `ALTER TABLE`) after the
    /// row was written: it never had the column.
    pub fn backfill(&self, seq: i64, cells: &mut Vec<(u32, crate::value::Value)>) {
        for &i in &self.added_columns {
            let col = &self.def.columns[i];
            if let Some(added) = col.added_at_seq
                && seq < added
                && !cells.iter().any(|(id, _)| *id == col.column_id)
                && let Some(v) = &self.missing_values[i]
            {
                cells.push((col.column_id, v.clone()));
            }
        }
    }
}

/// The registry.
#[derive(Debug)]
pub struct SchemaRegistry {
    catalog: Catalog,
    tables: DashMap<TableId, Arc<CachedTable>>,
    builds: AtomicU64,
}

impl SchemaRegistry {
    /// An empty registry backed by `catalog`.
    pub fn new(catalog: Catalog) -> Self {
        Self {
            catalog,
            tables: DashMap::new(),
            builds: AtomicU64::new(0),
        }
    }

    /// The cached entry, loading it from the catalog on a miss; `None` if no such table.
    /// A miss reads the catalog while holding the entry's slot, so an [`invalidate`] that
    /// follows a catalog write cannot slip between the read and the insert and leave the old
    /// definition cached.
    ///
    /// [`invalidate`]: SchemaRegistry::invalidate
    pub fn get(&self, id: &TableId) -> Result<Option<Arc<CachedTable>>> {
        if let Some(hit) = self.tables.get(id) {
            return Ok(Some(Arc::clone(hit.value())));
        }
        match self.tables.entry(id.clone()) {
            dashmap::Entry::Occupied(e) => Ok(Some(Arc::clone(e.get()))),
            dashmap::Entry::Vacant(slot) => {
                let Some(def) = self.catalog.table(id)? else {
                    return Ok(None);
                };
                self.builds.fetch_add(1, Ordering::Relaxed);
                let entry = Arc::new(CachedTable::new(def));
                slot.insert(Arc::clone(&entry));
                Ok(Some(entry))
            }
        }
    }

    /// Like [`SchemaRegistry::get`], but a missing table is a `NotFound` error.
    pub fn require(&self, id: &TableId) -> Result<Arc<CachedTable>> {
        self.get(id)?
            .ok_or_else(|| crate::error::KalamError::NotFound {
                kind: "Table",
                name: id.to_string(),
            })
    }

    /// The cached entry if present, without touching the catalog.
    pub fn get_cached(&self, id: &TableId) -> Option<Arc<CachedTable>> {
        self.tables.get(id).map(|e| Arc::clone(e.value()))
    }

    /// The Arrow schema of a table.
    pub fn arrow_schema(&self, id: &TableId) -> Result<Option<SchemaRef>> {
        Ok(self.get(id)?.map(|t| Arc::clone(&t.schema)))
    }

    /// Caches a (new) definition, replacing any previous entry.
    pub fn insert(&self, def: TableDefinition) -> Arc<CachedTable> {
        self.builds.fetch_add(1, Ordering::Relaxed);
        let entry = Arc::new(CachedTable::new(def));
        self.tables.insert(entry.def.table_id(), Arc::clone(&entry));
        entry
    }

    /// Forgets one table (DROP, ALTER).
    pub fn invalidate(&self, id: &TableId) {
        self.tables.remove(id);
    }

    /// How many schemas were built since start (for tests and metrics).
    pub fn schema_builds(&self) -> u64 {
        self.builds.load(Ordering::Relaxed)
    }
}
