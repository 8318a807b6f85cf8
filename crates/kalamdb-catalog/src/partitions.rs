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

/// Job records (`system.jobs`). A cluster keeps them per node: each member records the jobs
/// it ran (docs/cluster.md §7).
pub const JOBS_PARTITION: &str = "sys/jobs";

/// The cold tier's manifests as a cluster replicates them, one record per scope folder
/// (docs/cluster.md §7): each record is committed through the Raft group of the rows it
/// describes, so it is keyed by the rows' partition and scope and routed like them. A single
/// server does not have it (its manifests live beside its segments).
pub const MANIFESTS_PARTITION: &str = "sys/manifests";

/// The key of a scope's manifest record: the rows' partition, a NUL, then the scope's key
/// prefix (empty for a SHARED table, `<user id>\0` for a USER table's scope). The cluster's
/// router reads it back (`kalamdb_cluster::replicated`) to send the record to its rows' group.
pub fn manifest_key(rows_partition: &str, scope_prefix: &[u8]) -> Vec<u8> {
    let mut key = Vec::with_capacity(rows_partition.len() + 1 + scope_prefix.len());
    key.extend_from_slice(rows_partition.as_bytes());
    key.push(0);
    key.extend_from_slice(scope_prefix);
    key
}

/// The rows' partition and scope prefix a manifest record's key names ([`manifest_key`]).
pub fn manifest_key_parts(key: &[u8]) -> Option<(&str, &[u8])> {
    let end = key.iter().position(|b| *b == 0)?;
    Some((std::str::from_utf8(&key[..end]).ok()?, &key[end + 1..]))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_manifest_key_is_the_rows_partition_a_nul_and_the_scope_prefix() {
        assert_eq!(
            manifest_key("tbl/app/t/1/rows", b"alice\0"),
            b"tbl/app/t/1/rows\0alice\0".to_vec()
        );
        assert_eq!(
            manifest_key("tbl/app/s/1/rows", b""),
            b"tbl/app/s/1/rows\0".to_vec()
        );
        let key = manifest_key("tbl/app/t/1/rows", b"alice\0");
        assert_eq!(
            manifest_key_parts(&key),
            Some(("tbl/app/t/1/rows", &b"alice\0"[..]))
        );
        assert_eq!(manifest_key_parts(b"no separator"), None);
    }
}
