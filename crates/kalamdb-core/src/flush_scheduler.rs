//! Automatic flushes: counts the rows written to each USER and SHARED table since its last
//! flush and, on a timer, flushes the tables whose flush policy (`WITH (FLUSH_POLICY = …)`, else
//! `[storage] default_flush_policy` when set) is due, each as a `system.jobs` job. A failed policy
//! flush is retried with exponential backoff (2, 4, 8 … seconds, at most 5 minutes).

use crate::app_context::AppContext;
use crate::cold::FlushPolicy;
use crate::sql::ddl::{StorageJob, run_storage_job};
use dashmap::DashMap;
use kalamdb_commons::TableId;
use std::sync::Arc;
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
    fn retry_later(&self, table: &TableId, failures: u32) {
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
    fn take_due(&self, app: &AppContext, default: Option<FlushPolicy>) -> Vec<(TableId, u32)> {
        let candidates: Vec<(TableId, Pending)> = self
            .pending
            .iter()
            .map(|e| (e.key().clone(), *e.value()))
            .collect();
        let mut due = Vec::new();
        for (id, p) in candidates {
            let policy = match app.schema_registry().get(&id) {
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

/// Starts the task that flushes due tables; it ends with the server.
pub(crate) fn spawn(app: &Arc<AppContext>) {
    let text = app.config().storage.default_flush_policy.trim();
    let default = match (!text.is_empty())
        .then(|| FlushPolicy::parse(text))
        .transpose()
    {
        Ok(p) => p,
        Err(e) => {
            tracing::error!(error = %e, "bad [storage] default_flush_policy: automatic flushes are off");
            return;
        }
    };
    let every = Duration::from_millis(app.config().storage.flush_check_interval_ms.max(10));
    let weak = Arc::downgrade(app);
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            let Some(app) = weak.upgrade() else { break };
            for (id, failures) in app.flushes().take_due(&app, default) {
                let Ok(Some(table)) = app.schema_registry().get(&id) else {
                    continue;
                };
                let job = run_storage_job(
                    &app,
                    &table,
                    StorageJob::Flush,
                    "policy",
                    "system",
                    failures + 1,
                );
                match job.await {
                    Ok(line) => tracing::debug!(table = %id, "{line}"),
                    Err(e) => {
                        tracing::warn!(table = %id, error = %e, "policy flush failed");
                        app.flushes().retry_later(&id, failures + 1);
                    }
                }
            }
        }
    });
}
