//! The outbox (docs/cluster.md §6): where a cluster member's table writes leave the topic
//! messages they produce, for the meta group's leader to move into the topics. A write puts
//! each message under a short *capture key* (its place in the batch, [`CAPTURE_KEY_LEN`]
//! bytes); the group's state machine stores it under a *sequenced key* that says where it
//! landed: the group, the log index of its entry and the batch's place in that entry, then
//! the capture key, all big-endian. So every replica of a group holds the same outbox, in
//! log order, and a group's messages are one contiguous key range.

use crate::{BatchOp, WriteBatch};

/// The outbox's partition.
pub const PARTITION: &str = "sys/outbox";

/// Where the meta group records, per data group, the last sequenced key moved into the
/// topics (key: the group, big-endian): what was moved is never moved again.
pub const MOVED_PARTITION: &str = "sys/outbox_moved";

/// Length of a capture key (a `u32`: the message's place in its batch).
pub const CAPTURE_KEY_LEN: usize = 4;

/// Length of a sequenced key: group (8), log index (8), batch (4), capture key (4).
pub const SEQUENCED_KEY_LEN: usize = 24;

/// The capture key of the message a batch of `ops` operations gets next.
pub fn capture_key(ops: usize) -> Vec<u8> {
    (ops as u32).to_be_bytes().to_vec()
}

/// The first key of `group`'s messages at or after log index `index`.
pub fn group_start(group: u64, index: u64) -> Vec<u8> {
    [group.to_be_bytes(), index.to_be_bytes()].concat()
}

/// The group of a sequenced key.
pub fn group_of(key: &[u8]) -> Option<u64> {
    Some(u64::from_be_bytes(key.get(..8)?.try_into().ok()?))
}

/// Rewrites the capture keys of `batch` (the `position`-th batch of the entry at log `index`
/// of `group`) as sequenced keys; returns whether it held any. Batches without outbox writes
/// (nearly all) are only looked at.
pub fn sequence(batch: &mut WriteBatch, group: u64, index: u64, position: u32) -> bool {
    let mut any = false;
    for op in &mut batch.ops {
        if let BatchOp::Put { partition, key, .. } = op
            && partition == PARTITION
            && key.len() == CAPTURE_KEY_LEN
        {
            let mut k = Vec::with_capacity(SEQUENCED_KEY_LEN);
            k.extend_from_slice(&group.to_be_bytes());
            k.extend_from_slice(&index.to_be_bytes());
            k.extend_from_slice(&position.to_be_bytes());
            k.extend_from_slice(key);
            *key = k;
            any = true;
        }
    }
    any
}

/// Whether `batch` writes the outbox at all.
pub fn touches(batch: &WriteBatch) -> bool {
    batch.ops.iter().any(|op| match op {
        BatchOp::Put { partition, .. }
        | BatchOp::Delete { partition, .. }
        | BatchOp::DeleteRange { partition, .. } => partition == PARTITION,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn capture_keys_become_keys_in_log_order() {
        let mut batch = WriteBatch::new();
        batch.put("tbl/a/b/1/rows", b"row".to_vec(), b"v".to_vec());
        batch.put(PARTITION, capture_key(batch.len()), b"m1".to_vec());
        batch.put(PARTITION, capture_key(batch.len()), b"m2".to_vec());
        assert!(sequence(&mut batch, 3, 70, 1));
        let key_of = |op: &BatchOp| match op {
            BatchOp::Put { key, .. } => key.clone(),
            _ => Vec::new(),
        };
        let keys: Vec<Vec<u8>> = batch.ops().iter().map(key_of).collect();
        assert_eq!(keys[0], b"row", "other writes are untouched");
        assert_eq!(keys[1].len(), SEQUENCED_KEY_LEN);
        assert_eq!(group_of(&keys[1]), Some(3));
        assert!(keys[1] < keys[2], "a batch's messages stay in order");
        assert!(keys[1].starts_with(&group_start(3, 70)));
        let mut later = WriteBatch::new();
        later.put(PARTITION, capture_key(0), b"m3".to_vec());
        sequence(&mut later, 3, 71, 0);
        assert!(
            keys[2] < key_of(&later.ops()[0]),
            "a later entry's come after"
        );
        assert!(touches(&later));
        let mut other = WriteBatch::new();
        other.put("sys/meta", b"k".to_vec(), b"v".to_vec());
        assert!(!sequence(&mut other, 3, 72, 0));
        assert!(!touches(&other));
    }
}
