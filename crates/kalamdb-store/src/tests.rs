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
    db.create_partition("a", KeyLayout::Flat).unwrap();
    db.create_partition("b", KeyLayout::Flat).unwrap();
    db.create_partition("a", KeyLayout::Flat).unwrap(); // idempotent

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
    db.create_partition("a", KeyLayout::Flat).unwrap();
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
    db.create_partition("a", KeyLayout::Flat).unwrap();
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
fn an_owned_snapshot_outlives_its_handle_and_crosses_threads() {
    let dir = tempfile::tempdir().unwrap();
    let db = std::sync::Arc::new(open(dir.path()));
    db.create_partition("a", KeyLayout::Flat).unwrap();
    let mut batch = WriteBatch::new();
    batch.put("a", b"1".to_vec(), b"old".to_vec());
    db.write(batch).unwrap();
    let snap = std::sync::Arc::clone(&db).owned_snapshot();
    let mut batch = WriteBatch::new();
    batch.put("a", b"1".to_vec(), b"new".to_vec());
    batch.delete("a", b"0".to_vec());
    db.write(batch).unwrap();
    drop(db);
    let seen = std::thread::spawn(move || {
        let mut all = Vec::new();
        snap.scan_each("a", b"", None, &mut |k, v| {
            all.push((k.to_vec(), v.to_vec()));
            Ok(true)
        })
        .unwrap();
        (snap.get("a", b"1").unwrap(), all.len())
    })
    .join()
    .unwrap();
    assert_eq!(seen, (Some(b"old".to_vec()), 1));
}

#[test]
fn last_key_finds_the_largest_key_under_a_prefix() {
    let dir = tempfile::tempdir().unwrap();
    let db = open(dir.path());
    db.create_partition("a", KeyLayout::Flat).unwrap();
    let mut batch = WriteBatch::new();
    for k in [&b"a1"[..], b"a3", b"a2", b"b9"] {
        batch.put("a", k.to_vec(), b"v".to_vec());
    }
    db.write(batch).unwrap();
    assert_eq!(db.last_key("a", b"a").unwrap(), Some(b"a3".to_vec()));
    assert_eq!(db.last_key("a", b"b").unwrap(), Some(b"b9".to_vec()));
    assert_eq!(db.last_key("a", b"c").unwrap(), None);
}

#[test]
fn data_and_partitions_survive_reopen_and_drop_is_clean() {
    let dir = tempfile::tempdir().unwrap();
    {
        let db = open(dir.path());
        db.create_partition("t", KeyLayout::Flat).unwrap();
        let mut batch = WriteBatch::new();
        batch.put("t", b"k".to_vec(), b"v".to_vec());
        db.write(batch).unwrap();
    }
    let db = open(dir.path());
    assert!(db.has_partition("t"));
    assert_eq!(db.get("t", b"k").unwrap(), Some(b"v".to_vec()));
    db.drop_partition("t").unwrap();
    assert!(!db.has_partition("t"));
    db.create_partition("t", KeyLayout::Flat).unwrap();
    assert_eq!(db.get("t", b"k").unwrap(), None);
}

/// Scoped partitions hash their memtable by scope: per-scope scans, scans from a start key,
/// whole-partition scans in total order and snapshots must all read the same as a flat one,
/// from the memtable, from files, and after a reopen.
#[test]
fn scoped_partitions_read_like_flat_ones() {
    let dir = tempfile::tempdir().unwrap();
    let users = ["bob", "alice", "carol", "al"];
    let expected = |prefix: &[u8], start: Option<&[u8]>| -> Vec<Vec<u8>> {
        let mut keys: Vec<Vec<u8>> = users
            .iter()
            .flat_map(|u| (0..50u8).map(move |i| [u.as_bytes(), &[0, i]].concat()))
            .filter(|k| k.starts_with(prefix) && start.is_none_or(|s| k.as_slice() >= s))
            .collect();
        keys.sort();
        keys
    };
    let keys = |it: KvIter<'_>| collect(it).into_iter().map(|(k, _)| k).collect::<Vec<_>>();
    let check = |db: &RocksBackend| {
        for u in users {
            let prefix = [u.as_bytes(), &[0]].concat();
            assert_eq!(
                keys(db.scan("s", &prefix, None).unwrap()),
                expected(&prefix, None)
            );
            let start = [u.as_bytes(), &[0, 20]].concat();
            assert_eq!(
                keys(db.scan("s", &prefix, Some(&start)).unwrap()),
                expected(&prefix, Some(&start))
            );
            assert_eq!(
                db.get("s", &[u.as_bytes(), &[0, 7]].concat()).unwrap(),
                Some(vec![7])
            );
        }
        assert_eq!(keys(db.scan("s", b"", None).unwrap()), expected(b"", None));
        let snap = db.snapshot();
        assert_eq!(
            keys(snap.scan("s", b"", None).unwrap()),
            expected(b"", None)
        );
        assert_eq!(
            keys(snap.scan("s", b"al\0", None).unwrap()),
            expected(b"al\0", None)
        );
    };
    {
        let db = open(dir.path());
        db.create_partition("s", KeyLayout::Scoped).unwrap();
        for i in 0..50u8 {
            let mut batch = WriteBatch::new();
            for u in users {
                batch.put("s", [u.as_bytes(), &[0, i]].concat(), vec![i]);
            }
            db.write(batch).unwrap();
        }
        check(&db); // memtable
        db.flush().unwrap();
        check(&db); // files
    }
    let db = open(dir.path());
    check(&db);
    let recorded = std::fs::read_to_string(dir.path().join("KALAMDB-SCOPED-PARTITIONS")).unwrap();
    assert_eq!(recorded, "s\n");
    db.drop_partition("s").unwrap();
    let recorded = std::fs::read_to_string(dir.path().join("KALAMDB-SCOPED-PARTITIONS")).unwrap();
    assert_eq!(recorded, "");
}

#[test]
fn delete_range_removes_exactly_its_keys() {
    let dir = tempfile::tempdir().unwrap();
    let db = open(dir.path());
    db.create_partition("s", KeyLayout::Scoped).unwrap();
    let mut batch = WriteBatch::new();
    for u in ["a", "b"] {
        for i in 0..10u8 {
            batch.put("s", [u.as_bytes(), &[0, i]].concat(), vec![i]);
        }
    }
    db.write(batch).unwrap();
    let mut batch = WriteBatch::new();
    // a\0 2..=5 as a range ending at the successor of the last key.
    batch.delete_range("s", b"a\0\x02".to_vec(), b"a\0\x05\0".to_vec());
    db.write(batch).unwrap();
    let keys = |p: &[u8]| {
        collect(db.scan("s", p, None).unwrap())
            .into_iter()
            .map(|(k, _)| k[k.len() - 1])
            .collect::<Vec<_>>()
    };
    assert_eq!(keys(b"a\0"), vec![0, 1, 6, 7, 8, 9]);
    assert_eq!(keys(b"b\0").len(), 10);
    assert_eq!(db.get("s", b"a\0\x03").unwrap(), None);
}

#[test]
fn compacting_a_deleted_range_keeps_what_snapshots_and_later_writes_see() {
    let dir = tempfile::tempdir().unwrap();
    let db = open(dir.path());
    db.create_partition("s", KeyLayout::Scoped).unwrap();
    let mut batch = WriteBatch::new();
    for i in 0..100u8 {
        batch.put("s", [b"a\0".as_slice(), &[i]].concat(), vec![i]);
    }
    db.write(batch).unwrap();
    db.flush().unwrap();
    let mut batch = WriteBatch::new();
    batch.delete_range("s", b"a\0\x00".to_vec(), b"a\0\x63\0".to_vec());
    db.write(batch).unwrap();
    let mut batch = WriteBatch::new();
    batch.put("s", b"a\0\x07".to_vec(), b"new".to_vec());
    db.write(batch).unwrap();
    let snapshot = db.snapshot();
    let mut batch = WriteBatch::new();
    batch.put("s", b"a\0\x08".to_vec(), b"after".to_vec());
    db.write(batch).unwrap();
    db.compact_range("s", b"a\0\x00", b"a\0\x63\0").unwrap();
    let live = collect(db.scan("s", b"a\0", None).unwrap());
    assert_eq!(
        live,
        vec![
            (b"a\0\x07".to_vec(), b"new".to_vec()),
            (b"a\0\x08".to_vec(), b"after".to_vec())
        ]
    );
    assert_eq!(collect(snapshot.scan("s", b"a\0", None).unwrap()).len(), 1);
    // A partition that went away is not an error.
    db.compact_range("gone", b"a", b"b").unwrap();
}

/// A log partition keeps its layout across a reopen (recorded beside the scoped ones) and
/// reads like a flat one from its memtable and from its uncompressed files.
#[test]
fn log_partitions_keep_their_layout_and_read_like_flat_ones() {
    let dir = tempfile::tempdir().unwrap();
    {
        let db = open(dir.path());
        db.create_partition("raft.1.log", KeyLayout::Log).unwrap();
        db.create_partition("s", KeyLayout::Scoped).unwrap();
        let mut batch = WriteBatch::new();
        for i in 0u64..100 {
            batch.put("raft.1.log", i.to_be_bytes().to_vec(), vec![b'e'; 1000]);
        }
        db.write(batch).unwrap();
        assert_eq!(db.layout("raft.1.log"), Some(KeyLayout::Log));
        db.flush().unwrap();
    }
    let db = open(dir.path());
    assert_eq!(db.layout("raft.1.log"), Some(KeyLayout::Log));
    assert_eq!(db.layout("s"), Some(KeyLayout::Scoped));
    let rows = collect(db.scan("raft.1.log", b"", None).unwrap());
    assert_eq!(rows.len(), 100);
    assert_eq!(rows[42], (42u64.to_be_bytes().to_vec(), vec![b'e'; 1000]));
    let recorded = std::fs::read_to_string(dir.path().join("KALAMDB-SCOPED-PARTITIONS")).unwrap();
    assert_eq!(recorded, "s\nlog\traft.1.log\n");
    db.drop_partition("raft.1.log").unwrap();
    let recorded = std::fs::read_to_string(dir.path().join("KALAMDB-SCOPED-PARTITIONS")).unwrap();
    assert_eq!(recorded, "s\n");
}

#[test]
fn parts_commit_in_order_as_one_batch_or_not_at_all() {
    let dir = tempfile::tempdir().unwrap();
    let db = open(dir.path());
    db.create_partition("a", KeyLayout::Flat).unwrap();
    let mut first = WriteBatch::new();
    first.put("a", b"1".to_vec(), b"first".to_vec());
    first.put("a", b"2".to_vec(), b"first".to_vec());
    let mut second = WriteBatch::new();
    second.put("a", b"1".to_vec(), b"second".to_vec());
    db.write_parts(&[&first, &second]).unwrap();
    assert_eq!(db.get("a", b"1").unwrap(), Some(b"second".to_vec()));
    assert_eq!(db.get("a", b"2").unwrap(), Some(b"first".to_vec()));

    // A part naming a missing partition: nothing of any part is written.
    let mut third = WriteBatch::new();
    third.put("a", b"3".to_vec(), b"third".to_vec());
    let mut missing = WriteBatch::new();
    missing.put("gone", b"1".to_vec(), b"x".to_vec());
    assert!(matches!(
        db.write_parts(&[&third, &missing]),
        Err(StoreError::PartitionNotFound(p)) if p == "gone"
    ));
    assert_eq!(db.get("a", b"3").unwrap(), None);
}
