//! The KalamDB engine.
//!
//! ```text
//!  SqlExecutor ── parse ──> own statements (ddl) ──> Catalog (sys/* partitions)
//!      │                └─> INSERT/UPDATE/DELETE (dml) ──> rows (hot store, atomic batches)
//!      └── queries ──> DataFusion ──> KalamCatalog ──> AppTableProvider / SystemTableProvider
//! ```
//!
//! - [`app_context::AppContext`] owns the node id and every shared service; start here.
//! - [`catalog`]: persisted namespaces, table definitions (versioned), users, storages.
//! - [`schema_registry`]: memoized table definitions and Arrow schemas.
//! - [`rows`]: the hot-store key layout and row encoding of application tables.
//! - [`providers`]: DataFusion catalog and table providers; [`scan`]: the streaming scan
//!   of application tables they plan.
//! - [`sql`]: statement splitting, parsing, execution and result encoding.
//! - [`auth`]: passwords, tokens, identities; [`access`]: who may do what.
//! - [`config`]: `server.toml` and its `KALAMDB_*` overrides.
//! - [`expr_limits`]: how large a statement and its plan may be; [`query_runtime`]: where
//!   queries run, with their timeout and cancellation.
//!
//! The engine knows no HTTP: `kalamdb-api` turns requests into calls on
//! [`sql::executor::SqlExecutor`] and [`auth::AuthService`].

pub mod access;
pub mod app_context;
pub mod auth;
pub mod config;
pub mod engine;
pub mod expr_limits;
pub mod maintenance;
pub mod providers;
pub mod query_runtime;
pub mod sql;
pub mod system_flush;

pub use app_context::AppContext;
pub use kalamdb_catalog::{KalamError, Result};
