//! `_seq` generation: Snowflake ids from this node.
//!
//! Layout (63 bits, always positive): 41 bits of milliseconds since 2024-01-01T00:00:00Z, 10 bits
//! of worker id (derived from the node id), 12 bits of sequence within the millisecond. Ids are
//! strictly increasing per node, even if the wall clock steps back (the generator then keeps
//! counting inside the last millisecond it saw). The same generator serves `SNOWFLAKE_ID()`.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

/// 2024-01-01T00:00:00Z in Unix milliseconds.
pub const EPOCH_MS: u64 = 1_704_067_200_000;
const WORKER_BITS: u32 = 10;
const SEQUENCE_BITS: u32 = 12;

/// Thread-safe Snowflake generator.
#[derive(Debug)]
pub struct SeqGenerator {
    worker: u64,
    /// Last id handed out.
    last: AtomicU64,
}

impl SeqGenerator {
    /// A generator whose worker id is derived from `node_id` (FNV-1a, 10 bits).
    pub fn new(node_id: &str) -> Self {
        let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
        for b in node_id.bytes() {
            hash ^= u64::from(b);
            hash = hash.wrapping_mul(0x0100_0000_01b3);
        }
        Self {
            worker: hash & ((1 << WORKER_BITS) - 1),
            last: AtomicU64::new(0),
        }
    }

    /// The next id, strictly greater than every id returned before by this generator.
    pub fn next_id(&self) -> i64 {
        let now_ms = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_millis() as u64)
            .unwrap_or(EPOCH_MS)
            .saturating_sub(EPOCH_MS);
        let base = (now_ms << (WORKER_BITS + SEQUENCE_BITS)) | (self.worker << SEQUENCE_BITS);
        let mut last = self.last.load(Ordering::Relaxed);
        loop {
            // Same (or earlier) millisecond: continue counting after the last id. The worker bits
            // sit above the sequence, so an overflow of the sequence carries into the next
            // millisecond's worker slot; strip and re-add them to stay on this worker.
            let next = if base > last {
                base
            } else {
                let seq = (last & ((1 << SEQUENCE_BITS) - 1)) + 1;
                if seq < (1 << SEQUENCE_BITS) {
                    last + 1
                } else {
                    let ms = (last >> (WORKER_BITS + SEQUENCE_BITS)) + 1;
                    (ms << (WORKER_BITS + SEQUENCE_BITS)) | (self.worker << SEQUENCE_BITS)
                }
            };
            match self
                .last
                .compare_exchange_weak(last, next, Ordering::AcqRel, Ordering::Relaxed)
            {
                Ok(_) => return next as i64,
                Err(actual) => last = actual,
            }
        }
    }

    /// The last id handed out (0 before the first).
    pub fn last_issued(&self) -> i64 {
        self.last.load(Ordering::Acquire) as i64
    }

    /// Seeds the generator so ids continue after `seq` (used on restart, so a clock that went
    /// back while the server was down cannot reuse an id).
    pub fn observe(&self, seq: i64) {
        self.last.fetch_max(seq.max(0) as u64, Ordering::AcqRel);
    }
}

/// How far apart in `_seq` two ids taken `ms` milliseconds apart are, at least.
pub fn millis_span(ms: u64) -> i64 {
    (ms << (WORKER_BITS + SEQUENCE_BITS)) as i64
}

/// Milliseconds since the Unix epoch encoded in a `_seq`.
pub fn seq_unix_millis(seq: i64) -> i64 {
    ((seq as u64) >> (WORKER_BITS + SEQUENCE_BITS)) as i64 + EPOCH_MS as i64
}

/// The smallest `_seq` any node can produce at Unix time `ms`.
pub fn min_seq_at_unix_millis(ms: i64) -> i64 {
    let since_epoch = (ms - EPOCH_MS as i64).max(0) as u64;
    (since_epoch << (WORKER_BITS + SEQUENCE_BITS)) as i64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strictly_increasing_and_dated() {
        let g = SeqGenerator::new("node-1");
        let mut prev = 0;
        for _ in 0..100_000 {
            let id = g.next_id();
            assert!(id > prev);
            prev = id;
        }
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_millis() as i64;
        assert!((seq_unix_millis(prev) - now).abs() < 60_000);
        assert!(min_seq_at_unix_millis(now - 1000) < prev);
        assert!(min_seq_at_unix_millis(now + 1000) > prev);
    }

    #[test]
    fn observe_moves_forward() {
        let g = SeqGenerator::new("n");
        let far = g.next_id() + (1_000_000 << 22);
        g.observe(far);
        assert!(g.next_id() > far);
    }
}
