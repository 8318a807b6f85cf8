//! Hot-store partition names of application tables.
//!
//! Every table owns one partition, chosen by its type; its name carries the table's creation
//! time, so a table dropped and created again under the same name never shares storage with
//! its predecessor (`tbl/<ns>/<table>/<created>/rows` for USER and SHARED tables,
//! `…/log` for STREAM tables). The catalog creates and drops them with the definition; the
//! table storage layer (`kalamdb-tables`) owns what goes inside.

use kalamdb_commons::{TableDefinition, TableType};
use kalamdb_store::KeyLayout;

/// Prefix of every application-table partition name.
pub const TABLE_PARTITION_PREFIX: &str = "tbl/";

/// `ns.table` of a table partition's name (`tbl/<ns>/<table>/<created>/<kind>`).
pub fn table_of_partition(name: &str) -> Option<String> {
    let mut parts = name.strip_prefix(TABLE_PARTITION_PREFIX)?.split('/');
    Some(format!("{}.{}", parts.next()?, parts.next()?))
}

/// The partition names of one table; only the one its type uses exists (see the module doc).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TablePartitions {
    /// Latest version per key (USER and SHARED tables).
    pub rows: String,
    /// Appended rows by `_seq` (STREAM tables).
    pub log: String,
    table_type: TableType,
}

impl TablePartitions {
    /// The partitions of one incarnation of a table.
    pub fn of(def: &TableDefinition) -> Self {
        let base = format!(
            "{TABLE_PARTITION_PREFIX}{}/{}/{}",
            def.namespace, def.name, def.created_at
        );
        Self {
            rows: format!("{base}/rows"),
            log: format!("{base}/log"),
            table_type: def.table_type,
        }
    }

    /// The partition this table stores its rows in.
    pub fn used(&self) -> &str {
        match self.table_type {
            TableType::Stream => &self.log,
            _ => &self.rows,
        }
    }

    /// How its keys are laid out: per-user tables start every key with the user's scope.
    pub fn layout(&self) -> KeyLayout {
        match self.table_type {
            TableType::Shared => KeyLayout::Flat,
            _ => KeyLayout::Scoped,
        }
    }
}
