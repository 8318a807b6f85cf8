//! Automatic flushes: counts the rows written to each USER and SHARED table since its last
//! flush, and tells which tables are due by their flush policy (`WITH (FLUSH_POLICY = …)`, else
//! `[storage] default_flush_policy` when set); the server runs their flushes as `system.jobs`
//! jobs on a timer. A failed policy flush is retried with exponential backoff (2, 4, 8 … seconds, at most 5 minutes).

use crate::cold::FlushPolicy;
use dashmap::DashMap;
use kalamdb_catalog::schema_registry::SchemaRegistry;
use kalamdb_commons::TableId;
use std::time::{Duration, Instant};

/// Unflushed writes of one table.
#[derive(Debug, Clone, Copy)]
struct Pending {
    rows: u64,
    since: Instant,
    /// Failed policy flushes so far, and when to try again.
    retry: Option<(u32, Instant)>,
}

/// The per-table counters behind automatic flushes.
#[derive(Debug, Default)]
pub struct FlushScheduler {
    pending: DashMap<TableId, Pending>,
}

impl FlushScheduler {
    /// Records `rows` row versions written to `table`.
    pub fn wrote(&self, table: &TableId, rows: u64) {
        self.pending
            .entry(table.clone())
            .or_insert_with(|| Pending {
                rows: 0,
                since: Instant::now(),
                retry: None,
            })
            .rows += rows;
    }

    /// Schedules another try of a failed policy flush (the `failures`-th in a row).
    pub fn retry_later(&self, table: &TableId, failures: u32) {
        let backoff = Duration::from_secs((1u64 << failures.min(8)).min(300));
        let mut p = self
            .pending
            .entry(table.clone())
            .or_insert_with(|| Pending {
                rows: 0,
                since: Instant::now(),
                retry: None,
            });
        p.rows = p.rows.max(1);
        p.retry = Some((failures, Instant::now() + backoff));
    }

    /// Forgets a table's count (flushed by hand, or dropped).
    pub fn forget(&self, table: &TableId) {
        self.pending.remove(table);
    }

    /// Takes the tables that are due now, with the failures each had so far.
    pub fn take_due(
        &self,
        registry: &SchemaRegistry,
        default: Option<FlushPolicy>,
    ) -> Vec<(TableId, u32)> {
        let candidates: Vec<(TableId, Pending)> = self
            .pending
            .iter()
            .map(|e| (e.key().clone(), *e.value()))
            .collect();
        let mut due = Vec::new();
        for (id, p) in candidates {
            let policy = match registry.get(&id) {
                Ok(Some(t)) => t
                    .def
                    .flush_policy
                    .as_deref()
                    .and_then(|text| FlushPolicy::parse(text).ok())
                    .or(default),
                _ => {
                    self.pending.remove(&id);
                    continue;
                }
            };
            let (due_now, failures) = match (p.retry, policy) {
                (Some((failures, at)), _) => (Instant::now() >= at, failures),
                (None, Some(policy)) => (policy.due(p.rows, p.since.elapsed()), 0),
                (None, None) => (false, 0),
            };
            if due_now {
                self.pending.remove(&id);
                due.push((id, failures));
            }
        }
        due
    }
}
