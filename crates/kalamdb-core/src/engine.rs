//! Assembling the engine: [`open`] opens the data directory and builds every service in
//! dependency order (hot store → catalog → schema registry and `_seq` → auth → DataFusion
//! session → table storage → jobs → providers), hands each the narrow handles it needs,
//! puts them in one [`AppContext`], then runs start-up recovery and starts the background
//! tasks ([`crate::maintenance`]). Nothing else constructs an `AppContext`.

use crate::app_context::AppContext;
use crate::auth::AuthService;
use crate::config::Config;
use crate::maintenance::{self, SEQ_MARK_EVERY_MS};
use crate::providers::catalog::{CATALOG_NAME, KalamCatalog};
use crate::providers::deps::ProviderDeps;
use crate::query_runtime::QueryRuntime;
use datafusion::prelude::{SessionConfig, SessionContext};
use kalamdb_catalog::audit::AuditLog;
use kalamdb_catalog::catalog::{Catalog, DEFAULT_NAMESPACE};
use kalamdb_catalog::error::{KalamError, Result};
use kalamdb_catalog::jobs::JobManager;
use kalamdb_catalog::schema_registry::SchemaRegistry;
use kalamdb_catalog::seq::SeqGenerator;
use kalamdb_store::{RocksBackend, StorageBackend, StoreOptions};
use kalamdb_tables::{TableStore, TableStoreOptions};
use std::path::PathBuf;
use std::sync::Arc;

/// Opens the data directory and builds every service; see the module doc.
pub async fn open(config: Config) -> Result<Arc<AppContext>> {
    let backend: Arc<dyn StorageBackend> = open_store(&config)?;
    open_on(config, backend).await
}

/// Opens the hot store of the data directory (creating it when new).
pub fn open_store(config: &Config) -> Result<Arc<RocksBackend>> {
    let default_policy = config.storage.default_flush_policy.trim();
    if !default_policy.is_empty() {
        kalamdb_tables::cold::FlushPolicy::parse(default_policy).map_err(|e| {
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
    Ok(Arc::new(RocksBackend::open(
        &data.join("rocksdb"),
        &options,
    )?))
}

/// Builds every service over `backend`, the data directory's hot store as [`open_store`]
/// opened it, or a cluster node's replicated view of it.
pub async fn open_on(config: Config, backend: Arc<dyn StorageBackend>) -> Result<Arc<AppContext>> {
    let node_id = Arc::new(config.node_id());
    let data = PathBuf::from(&config.storage.data_path);
    let now = chrono::Utc::now().timestamp_micros();
    let catalog = Catalog::open(Arc::clone(&backend), now)?;
    let registry = Arc::new(SchemaRegistry::new(catalog.clone()));
    let seq = Arc::new(SeqGenerator::new(node_id.as_str()));
    // Continue after every id handed out before the restart, even if the wall clock went
    // back meanwhile: the recorded mark may lag the last id by one recording interval, so
    // skip that much further.
    if let Some(mark) = catalog.seq_high_water()? {
        seq.observe(mark.saturating_add(kalamdb_catalog::seq::millis_span(SEQ_MARK_EVERY_MS * 2)));
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
    std::fs::create_dir_all(&spill_dir)
        .map_err(|e| KalamError::Internal(format!("cannot create {}: {e}", spill_dir.display())))?;
    let pool = datafusion::execution::memory_pool::TrackConsumersPool::new(
        datafusion::execution::memory_pool::FairSpillPool::new(config.query.memory_limit_bytes()),
        std::num::NonZeroUsize::new(3).expect("non-zero"),
    );
    let runtime_env = datafusion::execution::runtime_env::RuntimeEnvBuilder::new()
        .with_memory_pool(Arc::new(pool))
        .with_temp_file_path(spill_dir)
        .build_arc()
        .map_err(KalamError::from_datafusion)?;
    let mut state = datafusion::execution::SessionStateBuilder::new()
        .with_config(session_config)
        .with_runtime_env(runtime_env)
        .with_default_features()
        .with_analyzer_rule(Arc::new(crate::uuid_literals::CanonicalUuidLiterals))
        .with_physical_optimizer_rule(Arc::new(
            crate::sql::checked_arithmetic::CheckedArithmetic {
                max_value_bytes: config.limits.max_value_bytes,
            },
        ))
        .build();
    crate::sql::functions::register_json(&mut state).map_err(KalamError::from_datafusion)?;
    let session = SessionContext::new_with_state(state);
    crate::sql::value_caps::register(&session, config.limits.max_value_bytes);
    crate::sql::functions::register(&session, &seq);
    // Standalone expressions (live and topic filters) plan with the same functions and
    // options, but no catalog: a state holding the catalog would keep the tables alive from
    // the topic service they hold (a cycle that never frees the store).
    let expressions =
        datafusion::execution::SessionStateBuilder::new_from_existing(session.state())
            .with_catalog_list(Arc::new(
                datafusion::catalog::MemoryCatalogProviderList::new(),
            ))
            .with_table_functions(Default::default())
            .build();
    let timeout = (config.query.timeout_secs > 0)
        .then(|| std::time::Duration::from_secs(config.query.timeout_secs));
    let queries = QueryRuntime::start(config.query.threads(), timeout)?;
    let options = TableStoreOptions {
        segment_cache_bytes: (config.storage.segment_cache_mb as u64).saturating_mul(1024 * 1024),
        superseded_file_grace_ms: config.storage.superseded_file_grace_ms,
        compaction_trigger_segments: config.storage.compaction_trigger_segments,
        tombstone_retention_secs: config.storage.tombstone_retention_secs,
    };
    let tables = Arc::new(TableStore::open(
        Arc::clone(&backend),
        catalog.clone(),
        Arc::clone(&registry),
        Arc::clone(&seq),
        &data,
        options,
    )?);
    let system_cold = Arc::new(crate::providers::flushed_audit::SystemCold::default());
    system_cold.load(&tables.cold().files("local")?).await?;
    let jobs = JobManager::open(catalog.clone(), Arc::clone(&seq))?;
    let metrics = Arc::new(crate::metrics::Metrics::new());
    {
        let metrics = Arc::clone(&metrics);
        jobs.set_finish_hook(move |job| {
            let took = job
                .finished_at
                .zip(job.started_at)
                .map_or(0.0, |(end, start)| (end - start) as f64 / 1e6);
            metrics.job(&job.job_type, &job.status, took);
            if job.status == "completed" {
                if job.job_type == "flush" {
                    metrics.flushed_rows.inc_by(job.rows);
                }
                if matches!(job.job_type.as_str(), "flush" | "compact") {
                    metrics.flushed_bytes.inc_by(job.bytes);
                }
            }
        });
    }
    let topics = Arc::new(
        crate::topics::TopicService::open(
            catalog.clone(),
            Arc::clone(&registry),
            Arc::clone(&backend),
            Arc::clone(tables.cold()),
            config.topics.visibility_timeout_secs,
            expressions.clone(),
        )
        .await?,
    );
    tables
        .set_change_capture(Arc::clone(&topics) as Arc<dyn kalamdb_tables::changes::ChangeCapture>);
    let transactions = Arc::new(crate::transactions::TransactionManager::new(
        config.transactions.clone(),
        Arc::clone(&seq),
        Arc::clone(&tables),
    ));
    let deps = ProviderDeps {
        metrics,
        cluster: Default::default(),
        transactions: Arc::clone(&transactions),
        table_functions: Arc::new(session.state().table_functions().clone()),
        tables: Arc::clone(&tables),
        system_cold: Arc::clone(&system_cold),
        node_id: Arc::clone(&node_id),
        catalog: catalog.clone(),
        registry: Arc::clone(&registry),
        queries: queries.running().clone(),
        started: std::time::Instant::now(),
        settings: Arc::new(parking_lot::RwLock::new(
            toml::Table::try_from(&config).map_err(|e| KalamError::Internal(e.to_string()))?,
        )),
    };
    session.register_catalog(CATALOG_NAME, Arc::new(KalamCatalog::new(deps.clone())));

    let app = Arc::new(AppContext {
        expressions,
        seq,
        audit,
        config: Arc::new(config),
        node_id,
        backend,
        catalog,
        registry,
        auth,
        session,
        deps,
        tables,
        system_cold,
        jobs,
        ddl: tokio::sync::Mutex::new(()),
        queries,
        transactions,
        topics,
    });
    maintenance::start(&app).await?;
    Ok(app)
}
