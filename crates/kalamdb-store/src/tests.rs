//! Unit tests of the RocksDB backend against a real database in a temp dir.

use super::*;

fn open(dir: &std::path::Path) -> RocksBackend {
    RocksBackend::open(dir, &StoreOptions::default()).unwrap()
}

fn collect(it: KvIter<'_>) -> Vec<(Vec<u8>, Vec<u8>)> {
    it.map(|r| r.map(|(k, v)| (k.to_vec(), v.to_vec())))
        .collect::<Result<_>>()
        .unwrap()
}

#[test]
fn partitions_batches_and_prefix_scans() {
    let dir = tempfile::tempdir().unwrap();
    let db = open(dir.path());
    db.create_partition("a").unwrap();
    db.create_partition("b").unwrap();
    db.create_partition("a").unwrap(); // idempotent

    let mut batch = WriteBatch::new();
    batch.put("a", b"u1:1".to_vec(), b"x".to_vec());
    batch.put("a", b"u1:2".to_vec(), b"y".to_vec());
    batch.put("a", b"u2:1".to_vec(), b"z".to_vec());
    batch.put("b", b"k".to_vec(), b"v".to_vec());
    db.write(batch).unwrap();

    let rows = collect(db.scan("a", b"u1:", None).unwrap());
    assert_eq!(rows.len(), 2);
    assert_eq!(rows[1].1, b"y");
    let rows = collect(db.scan("a", b"u1:", Some(b"u1:2")).unwrap());
    assert_eq!(rows, vec![(b"u1:2".to_vec(), b"y".to_vec())]);
    assert_eq!(collect(db.scan("a", b"", None).unwrap()).len(), 3);
    assert_eq!(db.get("b", b"k").unwrap(), Some(b"v".to_vec()));
    let got = db
        .multi_get("a", &[b"u1:2".to_vec(), b"nope".to_vec(), b"u2:1".to_vec()])
        .unwrap();
    assert_eq!(got, vec![Some(b"y".to_vec()), None, Some(b"z".to_vec())]);

    let mut list = db.list_partitions();
    list.sort();
    assert_eq!(list, vec!["a".to_string(), "b".to_string()]);
}

#[test]
fn batch_with_missing_partition_writes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let db = open(dir.path());
    db.create_partition("a").unwrap();
    let mut batch = WriteBatch::new();
    batch.put("a", b"k".to_vec(), b"v".to_vec());
    batch.put("missing", b"k".to_vec(), b"v".to_vec());
    assert!(matches!(
        db.write(batch),
        Err(StoreError::PartitionNotFound(_))
    ));
    assert_eq!(db.get("a", b"k").unwrap(), None);
}

#[test]
fn snapshot_does_not_see_later_writes() {
    let dir = tempfile::tempdir().unwrap();
    let db = open(dir.path());
    db.create_partition("a").unwrap();
    let mut batch = WriteBatch::new();
    batch.put("a", b"1".to_vec(), b"old".to_vec());
    db.write(batch).unwrap();
    let snap = db.snapshot();
    let mut batch = WriteBatch::new();
    batch.put("a", b"1".to_vec(), b"new".to_vec());
    batch.put("a", b"2".to_vec(), b"new".to_vec());
    db.write(batch).unwrap();
    assert_eq!(snap.get("a", b"1").unwrap(), Some(b"old".to_vec()));
    assert_eq!(collect(snap.scan("a", b"", None).unwrap()).len(), 1);
    assert_eq!(db.get("a", b"1").unwrap(), Some(b"new".to_vec()));
}

#[test]
fn data_and_partitions_survive_reopen_and_drop_is_clean() {
    let dir = tempfile::tempdir().unwrap();
    {
        let db = open(dir.path());
        db.create_partition("t").unwrap();
        let mut batch = WriteBatch::new();
        batch.put("t", b"k".to_vec(), b"v".to_vec());
        db.write(batch).unwrap();
    }
    let db = open(dir.path());
    assert!(db.has_partition("t"));
    assert_eq!(db.get("t", b"k").unwrap(), Some(b"v".to_vec()));
    db.drop_partition("t").unwrap();
    assert!(!db.has_partition("t"));
    db.create_partition("t").unwrap();
    assert_eq!(db.get("t", b"k").unwrap(), None);
}
