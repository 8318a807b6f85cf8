//! Catalog tests against a real RocksDB store.

use super::*;
use kalamdb_store::{RocksBackend, StoreOptions};

fn backend(dir: &std::path::Path) -> Arc<dyn StorageBackend> {
    Arc::new(RocksBackend::open(dir, &StoreOptions::default()).unwrap())
}

#[test]
fn new_store_is_bootstrapped() {
    let dir = tempfile::tempdir().unwrap();
    let c = Catalog::open(backend(dir.path()), 1).unwrap();
    assert_eq!(c.system_schema_version().unwrap(), SYSTEM_SCHEMA_VERSION);
    assert!(c.storage("local").unwrap().is_some());
    assert!(
        c.namespace(&NamespaceId::new(DEFAULT_NAMESPACE))
            .unwrap()
            .is_some()
    );
}

#[test]
fn older_store_gets_missing_system_tables_and_version_bump() {
    let dir = tempfile::tempdir().unwrap();
    {
        // Simulate a store written by an older server: version 0, no storages or audit partition.
        let b = backend(dir.path());
        b.create_partition(P_META, KeyLayout::Flat).unwrap();
        b.create_partition(P_USERS, KeyLayout::Flat).unwrap();
        let mut batch = WriteBatch::new();
        batch.put(
            P_META,
            KEY_SCHEMA_VERSION.to_vec(),
            0u32.to_be_bytes().to_vec(),
        );
        b.write(batch).unwrap();
        assert!(!b.has_partition(P_STORAGES));
    }
    let b = backend(dir.path());
    let c = Catalog::open(b.clone(), 1).unwrap();
    assert!(b.has_partition(P_STORAGES));
    assert!(b.has_partition(P_AUDIT), "version 2 added the audit log");
    assert_eq!(c.system_schema_version().unwrap(), SYSTEM_SCHEMA_VERSION);
    assert_eq!(c.storages().unwrap().len(), 1);
}

#[test]
fn orphan_table_partitions_are_dropped_on_open() {
    let dir = tempfile::tempdir().unwrap();
    let b = backend(dir.path());
    Catalog::open(b.clone(), 1).unwrap();
    b.create_partition("tbl/app/gone/rows", KeyLayout::Flat)
        .unwrap();
    Catalog::open(b.clone(), 1).unwrap();
    assert!(!b.has_partition("tbl/app/gone/rows"));
}
