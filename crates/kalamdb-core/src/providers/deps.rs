//! [`ProviderDeps`]: the shared handles every DataFusion provider reads from, and the names
//! of the `kalam` catalog and its system schema.

use kalamdb_catalog::catalog::Catalog;
use kalamdb_catalog::schema_registry::SchemaRegistry;
use std::sync::Arc;

/// Name of the DataFusion catalog.
pub const CATALOG_NAME: &str = "kalam";
/// Name of the system schema.
pub const SYSTEM_SCHEMA: &str = "system";

/// Shared handles every provider needs.
#[derive(Debug, Clone)]
pub struct ProviderDeps {
    /// Persisted catalog.
    pub catalog: Catalog,
    /// Schema cache.
    pub registry: Arc<SchemaRegistry>,
    /// This node.
    pub node_id: Arc<kalamdb_commons::NodeId>,
    /// Application tables (both tiers; the live-query listener for `system.live`).
    pub tables: Arc<kalamdb_tables::TableStore>,
    /// The flushed part of the system tables.
    pub system_cold: Arc<crate::providers::flushed_audit::SystemCold>,
    /// The session's table functions (`generate_series` …), listed by
    /// `information_schema.routines`.
    pub table_functions:
        Arc<std::collections::HashMap<String, Arc<datafusion::catalog::TableFunction>>>,
    /// The requests running now (for `system.queries`).
    pub queries: crate::query_runtime::RunningQueries,
    /// When the engine opened (uptime in `system.stats` and `system.cluster`).
    pub started: std::time::Instant,
    /// The effective configuration, one table per section, as `system.settings` shows it
    /// (the engine's own sections until the server shows the whole file:
    /// [`crate::AppContext::show_settings`]).
    pub settings: Arc<parking_lot::RwLock<toml::Table>>,
    /// The open transactions (`system.transactions`).
    pub transactions: Arc<crate::transactions::TransactionManager>,
    /// The server's metrics (`system.stats` lists them as `GET /metrics` shows them).
    pub metrics: Arc<crate::metrics::Metrics>,
    /// The cluster this node is a member of, once registered (`system.cluster`).
    pub cluster: crate::cluster_view::ClusterSlot,
}
