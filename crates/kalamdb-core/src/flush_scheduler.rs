//! Automatic flushes: counts the rows written to each USER and SHARED table since its last
//! flush and, on a timer, flushes the tables whose flush policy (`WITH (FLUSH_POLICY = …)`, else
//! `[storage] default_flush_policy`) is due.

use crate::app_context::AppContext;
use crate::cold::FlushPolicy;
use dashmap::DashMap;
use kalamdb_commons::TableId;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Unflushed writes of one table.
#[derive(Debug, Clone, Copy)]
struct Pending {
    rows: u64,
    since: Instant,
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
            })
            .rows += rows;
    }

    /// Forgets a table's count (flushed by hand, or dropped).
    pub fn forget(&self, table: &TableId) {
        self.pending.remove(table);
    }

    /// Takes the tables that are due now.
    fn take_due(&self, app: &AppContext, default: FlushPolicy) -> Vec<TableId> {
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
                    .unwrap_or(default),
                _ => {
                    self.pending.remove(&id);
                    continue;
                }
            };
            if policy.due(p.rows, p.since.elapsed()) {
                self.pending.remove(&id);
                due.push(id);
            }
        }
        due
    }
}

/// Starts the task that flushes due tables; it ends with the server.
pub(crate) fn spawn(app: &Arc<AppContext>) {
    let default = match FlushPolicy::parse(&app.config().storage.default_flush_policy) {
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
            for id in app.flushes().take_due(&app, default) {
                let Ok(Some(table)) = app.schema_registry().get(&id) else {
                    continue;
                };
                match app.cold().flush_table(&app, &table).await {
                    Ok(s) => tracing::debug!(table = %id, rows = s.rows, "policy flush"),
                    Err(e) => tracing::warn!(table = %id, error = %e, "policy flush failed"),
                }
            }
        }
    });
}
