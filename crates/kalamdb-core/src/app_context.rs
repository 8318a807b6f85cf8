//! [`AppContext`]: owns the node id and every shared service (seed decision R2).
//!
//! Built once at startup from the [`Config`]; everything else receives an `Arc<AppContext>`
//! (or the one service it needs) instead of building its own. Holds the single DataFusion
//! `SessionContext`; per-request identity is attached to a cheap copy of its state.

use crate::audit::AuditLog;
use crate::auth::{AuthService, Identity};
use crate::catalog::{Catalog, DEFAULT_NAMESPACE};
use crate::changes::{ChangeListener, ListenerSlot};
use crate::cold::ColdTier;
use crate::config::Config;
use crate::error::{KalamError, Result};
use crate::flush_scheduler::FlushScheduler;
use crate::jobs::JobManager;
use crate::providers::SessionIdentity;
use crate::providers::catalog::{CATALOG_NAME, KalamCatalog, ProviderDeps};
use crate::query_runtime::QueryRuntime;
use crate::schema_registry::SchemaRegistry;
use crate::seq::SeqGenerator;
use crate::write_locks::{TableLocks, WriteLocks};
use datafusion::execution::SessionState;
use datafusion::prelude::{SessionConfig, SessionContext};
use kalamdb_commons::{NodeId, TableId};
use kalamdb_store::{RocksBackend, StorageBackend, StoreOptions};
use std::path::PathBuf;
use std::sync::Arc;

/// The server's shared state.
pub struct AppContext {
    config: Arc<Config>,
    node_id: Arc<NodeId>,
    backend: Arc<dyn StorageBackend>,
    catalog: Catalog,
    registry: Arc<SchemaRegistry>,
    seq: Arc<SeqGenerator>,
    audit: AuditLog,
    auth: Arc<AuthService>,
    session: SessionContext,
    write_locks: WriteLocks,
    listener: ListenerSlot,
    deps: ProviderDeps,
    cold: Arc<ColdTier>,
    flushes: FlushScheduler,
    jobs: JobManager,
    ddl: tokio::sync::Mutex<()>,
    queries: QueryRuntime,
}

impl std::fmt::Debug for AppContext {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AppContext")
            .field("node_id", &self.node_id)
            .finish_non_exhaustive()
    }
}

impl AppContext {
    /// Opens the data directory and builds every service.
    pub async fn open(config: Config) -> Result<Arc<Self>> {
        let node_id = Arc::new(config.node_id());
        let default_policy = config.storage.default_flush_policy.trim();
        if !default_policy.is_empty() {
            crate::cold::FlushPolicy::parse(default_policy).map_err(|e| {
                KalamError::InvalidInput(format!("[storage] default_flush_policy: {e}"))
            })?;
        }
        let data = PathBuf::from(&config.storage.data_path);
        std::fs::create_dir_all(data.join("rocksdb"))
            .map_err(|e| KalamError::Internal(format!("cannot create {}: {e}", data.display())))?;
        let options = StoreOptions {
            sync_writes: config.storage.sync_writes,
            block_cache_bytes: config.storage.block_cache_mb * 1024 * 1024,
            write_buffer_bytes: config.storage.write_buffer_mb * 1024 * 1024,
            ..StoreOptions::default()
        };
        let backend: Arc<dyn StorageBackend> =
            Arc::new(RocksBackend::open(&data.join("rocksdb"), &options)?);
        let now = chrono::Utc::now().timestamp_micros();
        let catalog = Catalog::open(Arc::clone(&backend), now)?;
        let registry = Arc::new(SchemaRegistry::new(catalog.clone()));
        let seq = Arc::new(SeqGenerator::new(node_id.as_str()));
        // Continue after every id handed out before the restart, even if the wall clock went
        // back meanwhile: the recorded mark may lag the last id by one recording interval, so
        // skip that much further.
        if let Some(mark) = catalog.seq_high_water()? {
            seq.observe(mark.saturating_add(crate::seq::millis_span(SEQ_MARK_EVERY_MS * 2)));
        }
        let audit = AuditLog::new(catalog.clone(), Arc::clone(&seq));
        let auth = AuthService::start(catalog.clone(), config.auth.clone(), audit.clone())
            .await
            .map_err(|e| KalamError::Internal(format!("auth bootstrap failed: {e}")))?;

        // information_schema is served by the `kalam` catalog (providers::information_schema),
        // not DataFusion's built-in copy, which cannot show column defaults.
        let session_config = SessionConfig::new()
            .with_information_schema(false)
            .with_default_catalog_and_schema(CATALOG_NAME, DEFAULT_NAMESPACE)
            .with_create_default_catalog_and_schema(false)
            .with_target_partitions(2);
        // Sorts, aggregates and joins of all queries share one memory pool and spill to
        // <data_path>/tmp beyond it; the rest fails with RESOURCE_EXHAUSTED.
        let spill_dir = data.join("tmp");
        let _ = std::fs::remove_dir_all(&spill_dir);
        std::fs::create_dir_all(&spill_dir).map_err(|e| {
            KalamError::Internal(format!("cannot create {}: {e}", spill_dir.display()))
        })?;
        let pool = datafusion::execution::memory_pool::TrackConsumersPool::new(
            datafusion::execution::memory_pool::FairSpillPool::new(
                config.query.memory_limit_bytes(),
            ),
            std::num::NonZeroUsize::new(3).expect("non-zero"),
        );
        let runtime_env = datafusion::execution::runtime_env::RuntimeEnvBuilder::new()
            .with_memory_pool(Arc::new(pool))
            .with_temp_file_path(spill_dir)
            .build_arc()
            .map_err(KalamError::from_datafusion)?;
        let state = datafusion::execution::SessionStateBuilder::new()
            .with_config(session_config)
            .with_runtime_env(runtime_env)
            .with_default_features()
            .with_analyzer_rule(Arc::new(crate::sql::uuid_literals::CanonicalUuidLiterals))
            .with_physical_optimizer_rule(Arc::new(
                crate::sql::checked_arithmetic::CheckedArithmetic {
                    max_value_bytes: config.limits.max_value_bytes,
                },
            ))
            .build();
        let session = SessionContext::new_with_state(state);
        crate::sql::value_caps::register(&session, config.limits.max_value_bytes);
        let timeout = (config.query.timeout_secs > 0)
            .then(|| std::time::Duration::from_secs(config.query.timeout_secs));
        let queries = QueryRuntime::start(config.query.threads(), timeout)?;
        let listener = ListenerSlot::default();
        let cache_bytes = (config.storage.segment_cache_mb as u64).saturating_mul(1024 * 1024);
        let cold = Arc::new(ColdTier::open(catalog.clone(), &data, cache_bytes)?);
        cold.system().load(&cold.files("local")?).await?;
        let jobs = JobManager::open(catalog.clone(), Arc::clone(&seq))?;
        let deps = ProviderDeps {
            table_functions: Arc::new(session.state().table_functions().clone()),
            cold: Arc::clone(&cold),
            listener: Arc::clone(&listener),
            node_id: Arc::clone(&node_id),
            catalog: catalog.clone(),
            registry: Arc::clone(&registry),
            backend: Arc::clone(&backend),
            queries: queries.running().clone(),
        };
        session.register_catalog(CATALOG_NAME, Arc::new(KalamCatalog::new(deps.clone())));

        let app = Arc::new(Self {
            seq,
            audit,
            config: Arc::new(config),
            node_id,
            backend,
            catalog,
            registry,
            auth,
            session,
            write_locks: WriteLocks::default(),
            listener,
            deps,
            cold,
            flushes: FlushScheduler::default(),
            jobs,
            ddl: tokio::sync::Mutex::new(()),
            queries,
        });
        // Finish the cleanup of tables whose DROP a stop interrupted. One that fails again is
        // logged and retried at the next start: it must not keep the database from opening.
        for def in app.catalog.pending_drops()? {
            let cleaned = crate::sql::ddl::clean_dropped_table(&app, &def, "restart", "system");
            if let Err(e) = cleaned.await {
                tracing::error!(table = %def.table_id(), error = %e, "cleanup of a dropped table failed");
            }
        }
        spawn_stream_eviction(&app);
        spawn_seq_marks(&app);
        crate::flush_scheduler::spawn(&app);
        Ok(app)
    }

    /// The configuration.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// This node's id.
    pub fn node_id(&self) -> &Arc<NodeId> {
        &self.node_id
    }

    /// The hot store.
    pub fn backend(&self) -> &Arc<dyn StorageBackend> {
        &self.backend
    }

    /// The persisted catalog.
    pub fn catalog(&self) -> &Catalog {
        &self.catalog
    }

    /// The schema cache.
    pub fn schema_registry(&self) -> &Arc<SchemaRegistry> {
        &self.registry
    }

    /// The `_seq` / `SNOWFLAKE_ID()` generator.
    pub fn seq(&self) -> &SeqGenerator {
        &self.seq
    }

    /// The audit trail.
    pub fn audit(&self) -> &AuditLog {
        &self.audit
    }

    /// The auth service.
    pub fn auth(&self) -> &Arc<AuthService> {
        &self.auth
    }

    /// A session state for one statement: the shared state plus the caller's identity and
    /// default namespace.
    pub fn query_state(&self, identity: &Identity, namespace: &str) -> SessionState {
        let mut state = self.session.state();
        let config = state.config_mut();
        config.set_extension(Arc::new(SessionIdentity(identity.clone())));
        config.set_extension(Arc::new(crate::expr_limits::ViewBudget::new(
            crate::expr_limits::ExprLimits::of(&self.config.limits),
        )));
        config.options_mut().catalog.default_schema = namespace.to_string();
        state
    }

    /// The writer locks of one table (check-then-write of PK uniqueness and read-modify-write
    /// of UPDATE/DELETE), striped by scope.
    pub fn table_locks(&self, id: &TableId) -> Arc<TableLocks> {
        self.write_locks.table(id)
    }

    /// The cold tier of application tables.
    pub fn cold(&self) -> &Arc<ColdTier> {
        &self.cold
    }

    /// Background jobs (`system.jobs`).
    pub fn jobs(&self) -> &JobManager {
        &self.jobs
    }

    /// Held by every statement that changes the catalog (CREATE/DROP/ALTER of namespaces,
    /// tables, views, storages, users), so each one's existence checks and its write are one
    /// step: two racing `CREATE TABLE t` cannot both succeed.
    pub fn ddl_lock(&self) -> &tokio::sync::Mutex<()> {
        &self.ddl
    }

    /// Where queries run, and the requests running now (`system.queries`, `KILL QUERY`).
    pub fn queries(&self) -> &QueryRuntime {
        &self.queries
    }

    /// The counters behind automatic flushes.
    pub fn flushes(&self) -> &FlushScheduler {
        &self.flushes
    }

    /// What table providers read from (system tables are built from it).
    pub fn provider_deps(&self) -> &ProviderDeps {
        &self.deps
    }

    /// The server-wide gate application-table writes pass to reach the store.
    pub async fn commit_gate(&self) -> tokio::sync::MutexGuard<'_, ()> {
        self.write_locks.commit_gate().await
    }

    /// Registers the listener of committed changes; only the first call takes effect.
    pub fn set_change_listener(&self, listener: Arc<dyn ChangeListener>) {
        let _ = self.listener.set(listener);
    }

    /// The listener of committed changes, if one is registered.
    pub fn change_listener(&self) -> Option<&Arc<dyn ChangeListener>> {
        self.listener.get()
    }

    /// Forgets a dropped table's locks.
    pub fn forget_table_locks(&self, id: &TableId) {
        self.write_locks.forget(id);
    }

    /// Deletes STREAM-table rows older than their table's TTL; returns how many were removed.
    pub fn evict_expired_stream_rows(&self) -> Result<usize> {
        let mut removed = 0;
        for def in self.catalog.tables(None)? {
            if def.table_type != kalamdb_commons::TableType::Stream {
                continue;
            }
            let cutoff = crate::rows::stream_cutoff_seq(&def);
            let log = crate::rows::TablePartitions::of(&def).log;
            let mut batch = kalamdb_store::WriteBatch::new();
            for item in self.backend.scan(&log, b"", None)? {
                let (key, _) = item?;
                if crate::rows::seq_of_log_key(&key).is_some_and(|seq| seq < cutoff) {
                    batch.delete(&log, key.to_vec());
                }
            }
            removed += batch.len();
            if !batch.is_empty() {
                self.backend.write(batch)?;
            }
        }
        Ok(removed)
    }

    /// Flushes the store before shutdown.
    pub fn shutdown(&self) {
        if let Err(e) = self.catalog.put_seq_high_water(self.seq.last_issued()) {
            tracing::warn!(error = %e, "cannot record the _seq high-water mark");
        }
        if let Err(e) = self.backend.flush() {
            tracing::warn!(error = %e, "flush on shutdown failed");
        }
    }
}

/// Milliseconds between records of the `_seq` high-water mark.
const SEQ_MARK_EVERY_MS: u64 = 1000;

/// Records the last `_seq` handed out every [`SEQ_MARK_EVERY_MS`] while it moves, so a restart
/// continues after it (see [`AppContext::open`]).
fn spawn_seq_marks(app: &Arc<AppContext>) {
    let weak = Arc::downgrade(app);
    tokio::spawn(async move {
        let mut recorded = 0;
        let mut tick = tokio::time::interval(std::time::Duration::from_millis(SEQ_MARK_EVERY_MS));
        loop {
            tick.tick().await;
            let Some(app) = weak.upgrade() else { break };
            let last = app.seq.last_issued();
            if last > recorded {
                match app.catalog.put_seq_high_water(last) {
                    Ok(()) => recorded = last,
                    Err(e) => tracing::warn!(error = %e, "cannot record the _seq high-water mark"),
                }
            }
        }
    });
}

/// Runs [`AppContext::evict_expired_stream_rows`] every `stream.eviction_interval_secs` until the
/// context is dropped.
fn spawn_stream_eviction(app: &Arc<AppContext>) {
    let weak = Arc::downgrade(app);
    let every = std::time::Duration::from_secs(app.config.stream.eviction_interval_secs);
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(every);
        tick.tick().await;
        loop {
            tick.tick().await;
            let Some(app) = weak.upgrade() else { break };
            let worker = Arc::clone(&app);
            let job = app
                .jobs()
                .run(
                    "stream_eviction",
                    "*",
                    "policy",
                    "system",
                    1,
                    |_| async move {
                        let rows =
                            tokio::task::spawn_blocking(move || worker.evict_expired_stream_rows())
                                .await
                                .map_err(|e| KalamError::Internal(e.to_string()))??;
                        Ok(crate::jobs::JobReport {
                            rows: rows as u64,
                            bytes: 0,
                            message: format!("Removed {rows} expired STREAM row(s)"),
                        })
                    },
                )
                .await;
            if let Err(e) = job {
                tracing::warn!(error = %e, "stream eviction failed");
            }
        }
    });
}
