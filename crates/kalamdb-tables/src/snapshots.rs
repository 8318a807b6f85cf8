//! Transaction snapshots as the storage layer holds them: which snapshot bounds are open
//! (`OpenSnapshots`, for compactions), a snapshot of both tiers ([`TxSnapshot`]), how a read
//! inside a transaction sees them ([`TxRead`]), and the hot-tier reader that lays staged
//! versions over a snapshot. How they are taken and committed: the `txn` module.

use kalamdb_store::{KvIter, StorageRead, StorageSnapshot, Visit};
use parking_lot::Mutex;
use std::collections::BTreeMap;
use std::sync::Arc;

/// Bounds of the snapshots open now, by `_seq` (with how many share each).
#[derive(Debug, Default, Clone)]
pub(crate) struct OpenSnapshots(Arc<Mutex<BTreeMap<i64, usize>>>);

impl OpenSnapshots {
    pub(crate) fn open(&self, seq: i64) -> OpenGuard {
        *self.0.lock().entry(seq).or_default() += 1;
        OpenGuard {
            set: self.clone(),
            seq,
        }
    }

    /// The oldest bound open, if any.
    pub(crate) fn oldest(&self) -> Option<i64> {
        self.0.lock().keys().next().copied()
    }
}

/// Keeps a snapshot's bound registered while it lives.
#[derive(Debug)]
pub(crate) struct OpenGuard {
    set: OpenSnapshots,
    seq: i64,
}

impl Drop for OpenGuard {
    fn drop(&mut self) {
        let mut open = self.set.0.lock();
        if let Some(n) = open.get_mut(&self.seq) {
            *n -= 1;
            if *n == 0 {
                open.remove(&self.seq);
            }
        }
    }
}

/// Both tiers as of one `_seq`; see the module doc. Cheap to share.
#[derive(Debug, Clone)]
pub struct TxSnapshot {
    pub(crate) hot: Arc<dyn StorageSnapshot + Send + Sync>,
    pub(crate) seq: i64,
    pub(crate) _open: Arc<OpenGuard>,
}

impl TxSnapshot {
    /// Every version up to this `_seq` is visible, none after.
    pub fn seq(&self) -> i64 {
        self.seq
    }
}

/// How a scan or key lookup inside a transaction reads: the hot tier through the snapshot
/// with the transaction's staged versions over it, the cold tier up to the snapshot's `_seq`.
#[derive(Debug, Clone)]
pub struct TxRead {
    pub(crate) hot: Arc<dyn StorageSnapshot + Send + Sync>,
    pub(crate) max_seq: i64,
}

/// A snapshot with a transaction's staged versions of one partition laid over it.
#[derive(Debug)]
pub(crate) struct Overlay {
    pub(crate) base: Arc<dyn StorageSnapshot + Send + Sync>,
    pub(crate) partition: String,
    pub(crate) rows: Arc<BTreeMap<Vec<u8>, Vec<u8>>>,
}

impl StorageRead for Overlay {
    fn get(&self, partition: &str, key: &[u8]) -> kalamdb_store::Result<Option<Vec<u8>>> {
        if partition == self.partition
            && let Some(v) = self.rows.get(key)
        {
            return Ok(Some(v.clone()));
        }
        self.base.get(partition, key)
    }

    fn scan<'a>(
        &'a self,
        partition: &str,
        prefix: &[u8],
        start: Option<&[u8]>,
    ) -> kalamdb_store::Result<KvIter<'a>> {
        let mut all = Vec::new();
        self.scan_each(partition, prefix, start, &mut |k, v| {
            all.push((Box::from(k), Box::from(v)));
            Ok(true)
        })?;
        Ok(Box::new(all.into_iter().map(Ok)))
    }

    fn scan_each(
        &self,
        partition: &str,
        prefix: &[u8],
        start: Option<&[u8]>,
        visit: &mut Visit<'_>,
    ) -> kalamdb_store::Result<()> {
        if partition != self.partition {
            return self.base.scan_each(partition, prefix, start, visit);
        }
        let from = start.unwrap_or(prefix).to_vec();
        let mut staged = self
            .rows
            .range(from..)
            .take_while(|(k, _)| k.starts_with(prefix))
            .peekable();
        let mut open = true;
        self.base.scan_each(partition, prefix, start, &mut |k, v| {
            while let Some((sk, sv)) = staged.next_if(|(sk, _)| sk.as_slice() <= k) {
                let replaces = sk.as_slice() == k;
                if !visit(sk, sv)? {
                    open = false;
                    return Ok(false);
                }
                if replaces {
                    return Ok(true);
                }
            }
            open = visit(k, v)?;
            Ok(open)
        })?;
        if open {
            for (k, v) in staged {
                if !visit(k, v)? {
                    break;
                }
            }
        }
        Ok(())
    }
}

impl StorageSnapshot for Overlay {}
