//! [`AppContext`]: owns the node id and every shared service, so no service builds
//! its own copy of another (one catalog, one session, one store per process).
//!
//! Assembled once at startup by `engine::open` from the [`Config`]; everything else
//! receives an `Arc<AppContext>` (or the one service it needs) instead of building its own. Holds the single DataFusion
//! `SessionContext`; per-request identity is attached to a cheap copy of its state.

use crate::auth::{AuthService, Identity};
use crate::config::Config;
use crate::providers::SessionIdentity;
use crate::providers::deps::ProviderDeps;
use crate::query_runtime::QueryRuntime;
use datafusion::execution::SessionState;
use datafusion::prelude::SessionContext;
use kalamdb_catalog::audit::AuditLog;
use kalamdb_catalog::catalog::Catalog;
use kalamdb_catalog::jobs::JobManager;
use kalamdb_catalog::schema_registry::SchemaRegistry;
use kalamdb_catalog::seq::SeqGenerator;
use kalamdb_commons::NodeId;
use kalamdb_store::StorageBackend;
use kalamdb_tables::TableStore;
use std::sync::Arc;

/// The server's shared state.
pub struct AppContext {
    pub(crate) config: Arc<Config>,
    pub(crate) node_id: Arc<NodeId>,
    pub(crate) backend: Arc<dyn StorageBackend>,
    pub(crate) catalog: Catalog,
    pub(crate) registry: Arc<SchemaRegistry>,
    pub(crate) seq: Arc<SeqGenerator>,
    pub(crate) audit: AuditLog,
    pub(crate) auth: Arc<AuthService>,
    pub(crate) session: SessionContext,
    /// The session's functions and options without its catalog ([`AppContext::expression_state`]).
    pub(crate) expressions: SessionState,
    pub(crate) deps: ProviderDeps,
    pub(crate) tables: Arc<TableStore>,
    pub(crate) system_cold: Arc<crate::providers::flushed_audit::SystemCold>,
    pub(crate) jobs: JobManager,
    pub(crate) ddl: tokio::sync::Mutex<()>,
    pub(crate) queries: QueryRuntime,
    pub(crate) transactions: Arc<crate::transactions::TransactionManager>,
    pub(crate) topics: Arc<crate::topics::TopicService>,
}

impl std::fmt::Debug for AppContext {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AppContext")
            .field("node_id", &self.node_id)
            .finish_non_exhaustive()
    }
}

impl AppContext {
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

    /// Whether this node is a member of a cluster (`[cluster]`): its store commits through
    /// Raft groups, flushes and compactions run on the leaders of the scopes' groups, and
    /// what else must run once per cluster (TTL eviction, topic upkeep, backups) does not
    /// run on it yet (docs/cluster.md §7).
    pub fn clustered(&self) -> bool {
        self.config.cluster.is_some()
    }

    /// A write another node (or this one, as a group's leader) committed was applied to this
    /// node's store: caches derived from the catalog follow it, and a table's DDL reaches
    /// this node's live queries (a dropped table's subscriptions end, an altered one's move to
    /// its new version; on the node that ran the statement the statement did it too, and
    /// doing it again changes nothing). Called by the cluster's state machines after each
    /// applied batch.
    pub fn apply_replicated(&self, batch: &kalamdb_store::WriteBatch) {
        self.topics.replicated(batch);
        let mut tables = self.catalog.replicated(batch);
        // A snapshot install names a table once per change of its record.
        tables.sort_unstable_by_key(|t| t.to_string());
        tables.dedup();
        for table in tables {
            self.registry.invalidate(&table);
            let Some(listener) = self.tables().change_listener() else {
                continue;
            };
            match self.registry.get(&table) {
                Ok(Some(current)) => {
                    listener.table_altered(&current.def);
                }
                Ok(None) => {
                    self.tables().forget(&table);
                    listener.table_dropped(&table);
                }
                Err(e) => tracing::warn!(%table, error = %e, "a replicated table change"),
            }
        }
    }

    /// Registers the view of the cluster this node is a member of; only the first call takes
    /// effect.
    pub fn set_cluster_view(&self, view: Arc<dyn crate::cluster_view::ClusterView>) {
        let _ = self.deps.cluster.set(view);
    }

    /// The cluster this node is a member of, once registered.
    pub fn cluster_view(&self) -> Option<&Arc<dyn crate::cluster_view::ClusterView>> {
        self.deps.cluster.get()
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

    /// A session state for planning standalone expressions (live-query filters): the shared
    /// session's functions and options, no catalog, no caller.
    pub fn expression_state(&self) -> &SessionState {
        &self.expressions
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

    /// The storage of application tables (both tiers, writer locks, change listener).
    pub fn tables(&self) -> &Arc<TableStore> {
        &self.tables
    }

    /// The flushed part of the system tables.
    pub fn system_cold(&self) -> &crate::providers::flushed_audit::SystemCold {
        &self.system_cold
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

    /// The topics.
    pub fn topics(&self) -> &crate::topics::TopicService {
        &self.topics
    }

    /// The open transactions.
    pub fn transactions(&self) -> &crate::transactions::TransactionManager {
        &self.transactions
    }

    /// The server's metrics.
    pub fn metrics(&self) -> &crate::metrics::Metrics {
        &self.deps.metrics
    }

    /// The `GET /metrics` exposition: the counters and what is read now.
    pub fn render_metrics(&self) -> String {
        self.deps
            .metrics
            .render(&crate::providers::metric_figures(&self.deps))
    }

    /// What table providers read from (system tables are built from it).
    pub fn provider_deps(&self) -> &ProviderDeps {
        &self.deps
    }

    /// What `system.settings` shows: the whole configuration file as the server composed it
    /// (one table per section; secrets are redacted when shown).
    pub fn show_settings(&self, settings: toml::Table) {
        *self.deps.settings.write() = settings;
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
