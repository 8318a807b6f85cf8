//! What the engine does on its own: at start, finishing the cleanup of drops a stop
//! interrupted; then, on timers, policy flushes, STREAM-table TTL eviction and the `_seq`
//! high-water mark. Each background task holds only a weak reference and ends with the
//! context.

use crate::app_context::AppContext;
use crate::sql::ddl::{StorageJob, clean_dropped_table, run_storage_job};
use futures::future::BoxFuture;
use kalamdb_catalog::error::{KalamError, Result};
use kalamdb_catalog::jobs::JobReport;
use kalamdb_tables::cold::FlushPolicy;
use std::sync::Arc;
use std::time::Duration;

/// Runs the start-up recovery and starts the background tasks.
pub(crate) async fn start(app: &Arc<AppContext>) -> Result<()> {
    // Finish the cleanup of tables whose DROP a stop interrupted. One that fails again is
    // logged and retried at the next start: it must not keep the database from opening.
    for def in app.catalog().pending_drops()? {
        let cleaned = clean_dropped_table(app, &def, "restart", "system");
        if let Err(e) = cleaned.await {
            tracing::error!(table = %def.table_id(), error = %e, "cleanup of a dropped table failed");
        }
    }
    spawn_seq_marks(app);
    spawn_transaction_expiry(app);
    // A cluster member flushes and evicts the scopes whose groups it leads (docs/cluster.md
    // §7).
    spawn_policy_flushes(app);
    spawn_stream_eviction(app);
    // Once per cluster: on the meta group's leader (docs/cluster.md §6).
    spawn_topic_retention(app);
    spawn_topic_flush(app);
    if app.clustered() {
        spawn_outbox_mover(app);
    }
    Ok(())
}

/// On a cluster member: moves outbox messages into their topics while it leads the meta group
/// (`topics::outbox`), as soon as they are applied here (at the latest every 200 ms), and
/// deletes its own outbox copies of what was moved, about once a second.
fn spawn_outbox_mover(app: &Arc<AppContext>) {
    let weak = Arc::downgrade(app);
    tokio::spawn(async move {
        let mut last_prune = std::time::Instant::now();
        loop {
            let Some(app) = weak.upgrade() else { break };
            let moved = app.topics().move_outbox(app.tables()).await;
            if let Err(e) = &moved {
                tracing::debug!(error = %e, "moving outbox messages failed; trying again");
            }
            if last_prune.elapsed() >= Duration::from_secs(1) {
                last_prune = std::time::Instant::now();
                if let Err(e) = app.topics().prune_outbox() {
                    tracing::warn!(error = %e, "cannot delete moved outbox messages");
                }
            }
            let topics = Arc::clone(&app.topics);
            drop(app);
            match moved {
                Ok(0) => topics.outbox_wait(Duration::from_millis(200)).await,
                Ok(_) => {}
                Err(_) => tokio::time::sleep(Duration::from_millis(200)).await,
            }
        }
    });
}

/// Runs the topics' retention (`TopicService::apply_retention`) every `[topics]
/// retention_interval_secs`, when some topic has one.
fn spawn_topic_retention(app: &Arc<AppContext>) {
    let every = Duration::from_secs(app.config().topics.retention_interval_secs.max(1));
    let due = |app: &AppContext| {
        app.topics().leads()
            && app.catalog().topics().is_ok_and(|t| {
                t.iter()
                    .any(|t| t.retention_seconds.is_some() || t.retention_max_bytes.is_some())
            })
    };
    spawn_periodic_job(app, "topic_retention", every, due, |app| {
        Box::pin(async move {
            let now = chrono::Utc::now().timestamp_millis();
            let _files = app.tables().file_changes().await;
            let removed = app.topics().apply_retention(now).await?;
            Ok(JobReport {
                rows: removed,
                bytes: 0,
                message: format!("Removed {removed} message(s) past retention"),
            })
        })
    });
}

/// Moves topic messages older than `[topics] flush_after_secs` to Parquet every `[topics]
/// flush_interval_secs`, when some are.
fn spawn_topic_flush(app: &Arc<AppContext>) {
    let cfg = &app.config().topics;
    if cfg.flush_after_secs == 0 {
        return;
    }
    let every = Duration::from_secs(cfg.flush_interval_secs.max(1));
    let due =
        |app: &AppContext| app.topics().leads() && app.topics().flush_due(topic_flush_cutoff(app));
    spawn_periodic_job(app, "topic_flush", every, due, |app| {
        Box::pin(async move {
            let _files = app.tables().file_changes().await;
            let done = app
                .topics()
                .flush(None, Some(topic_flush_cutoff(&app)), app.tables().faults())
                .await?;
            Ok(JobReport {
                rows: done.messages,
                bytes: done.bytes,
                message: format!(
                    "Flushed {} topic message(s), {} bytes",
                    done.messages, done.bytes
                ),
            })
        })
    });
}

/// Topic messages appended before this (ms) are due to be flushed.
fn topic_flush_cutoff(app: &AppContext) -> i64 {
    let after_ms = app.config().topics.flush_after_secs.saturating_mul(1000);
    chrono::Utc::now().timestamp_millis() - i64::try_from(after_ms).unwrap_or(i64::MAX)
}

/// A periodic job's work.
type PeriodicWork = fn(Arc<AppContext>) -> BoxFuture<'static, Result<JobReport>>;

/// Every `every` until the context is dropped, and when `due` says so, runs `work` as a
/// `kind` job of the `policy` trigger.
fn spawn_periodic_job(
    app: &Arc<AppContext>,
    kind: &'static str,
    every: Duration,
    due: fn(&AppContext) -> bool,
    work: PeriodicWork,
) {
    let weak = Arc::downgrade(app);
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(every);
        tick.tick().await;
        loop {
            tick.tick().await;
            let Some(app) = weak.upgrade() else { break };
            if !due(&app) {
                continue;
            }
            let worker = Arc::clone(&app);
            let job = app
                .jobs()
                .run(kind, "*", "policy", "system", 1, |_| work(worker))
                .await;
            if let Err(e) = job {
                tracing::warn!(job = kind, error = %e, "periodic job failed");
            }
        }
    });
}

/// Rolls back timed-out transactions once a second (`[transactions]`).
fn spawn_transaction_expiry(app: &Arc<AppContext>) {
    let weak = Arc::downgrade(app);
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(std::time::Duration::from_secs(1));
        loop {
            tick.tick().await;
            let Some(app) = weak.upgrade() else { break };
            app.transactions().expire();
        }
    });
}

/// Deletes STREAM-table rows older than their table's TTL; returns how many were removed.
pub fn evict_expired_stream_rows(app: &AppContext) -> Result<usize> {
    let mut removed = 0;
    for def in app.catalog().tables(None)? {
        if def.table_type == kalamdb_commons::TableType::Stream {
            removed += app.tables().evict_expired(&def)?;
        }
    }
    Ok(removed)
}

/// Milliseconds between records of the `_seq` high-water mark.
pub(crate) const SEQ_MARK_EVERY_MS: u64 = 1000;

/// Records the last `_seq` handed out every [`SEQ_MARK_EVERY_MS`] while it moves, so a restart
/// continues after it (see `engine::open`).
fn spawn_seq_marks(app: &Arc<AppContext>) {
    let weak = Arc::downgrade(app);
    tokio::spawn(async move {
        let mut recorded = 0;
        let mut tick = tokio::time::interval(std::time::Duration::from_millis(SEQ_MARK_EVERY_MS));
        loop {
            tick.tick().await;
            let Some(app) = weak.upgrade() else { break };
            let last = app.seq().last_issued();
            if last > recorded {
                match app.catalog().put_seq_high_water(last) {
                    Ok(()) => recorded = last,
                    Err(e) => tracing::warn!(error = %e, "cannot record the _seq high-water mark"),
                }
            }
        }
    });
}

/// Runs [`evict_expired_stream_rows`] every `stream.eviction_interval_secs` until the
/// context is dropped.
fn spawn_stream_eviction(app: &Arc<AppContext>) {
    let every = Duration::from_secs(app.config().stream.eviction_interval_secs);
    spawn_periodic_job(
        app,
        "stream_eviction",
        every,
        |_| true,
        |app| {
            Box::pin(async move {
                let rows = tokio::task::spawn_blocking(move || evict_expired_stream_rows(&app))
                    .await
                    .map_err(|e| KalamError::Internal(e.to_string()))??;
                Ok(JobReport {
                    rows: rows as u64,
                    bytes: 0,
                    message: format!("Removed {rows} expired STREAM row(s)"),
                })
            })
        },
    );
}

/// Starts the task that flushes due tables; it ends with the server.
fn spawn_policy_flushes(app: &Arc<AppContext>) {
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
            for (id, failures) in app
                .tables()
                .flushes()
                .take_due(app.schema_registry(), default)
            {
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
                    // A cluster table on a node's own folder: its rows stay hot.
                    Err(e @ KalamError::Unsupported(_)) => {
                        tracing::debug!(table = %id, error = %e, "no policy flush")
                    }
                    Err(e) => {
                        tracing::warn!(table = %id, error = %e, "policy flush failed");
                        app.tables().flushes().retry_later(&id, failures + 1);
                    }
                }
            }
        }
    });
}
