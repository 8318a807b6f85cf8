//! The SQL layer of KalamDB and the assembly of its engine.
//!
//! ```text
//!  kalamdb-api ──> SqlExecutor ── split, parse ──> own statements (sql::ddl, alter, views) ──> Catalog
//!                      │                      └──> INSERT/UPDATE/DELETE (sql::dml) ──> TableStore::writer
//!                      └── queries ──> DataFusion ──> KalamCatalog ──> AppTableProvider ──> TableStore::scan
//!                                                                  └──> system / information_schema / views
//! ```
//!
//! - [`engine::open`] builds every service in order and returns the [`AppContext`] that holds
//!   them (the node id, the catalog and schema registry of `kalamdb-catalog`, the
//!   `TableStore` of `kalamdb-tables`, auth, the DataFusion session, jobs); start here.
//!   [`maintenance`]: start-up recovery and the background tasks.
//! - [`sql`]: statement splitting, parsing, the handlers of KalamDB's own statements
//!   (`sql::ddl` split by object), DML, execution ([`sql::executor::SqlExecutor`]), streaming
//!   of large results and result encoding.
//! - [`providers`]: DataFusion catalog and table providers (application tables, system
//!   tables, views, `information_schema`).
//! - [`topics`]: topics fed by table changes, consumer groups.
//! - [`encode`]: results and cells as the wire's JSON; [`row_filter`]: WHERE clauses compiled
//!   to run on stored rows (live queries, topic sources), with the expression rewrites both
//!   it and `sql` apply: [`json_ops`] (`->`/`->>` precedence) and [`uuid_literals`]. All sit
//!   below `sql` and `topics`.
//! - [`metrics`]: counters and figures for `GET /metrics`; [`backup`]: online backup and
//!   offline restore; `sql::export`: `EXPORT USER DATA` archives.
//! - [`transactions`]: `BEGIN` … `COMMIT`, over the transaction storage of `kalamdb-tables`.
//! - [`schema_view`]: the schema a caller may query, as one JSON document.
//! - [`auth`]: passwords, tokens, identities; [`access`]: who may do what.
//! - [`config`]: `server.toml` and its `KALAMDB_*` overrides (`[cluster]` in
//!   [`config::cluster`], `docs/cluster.md`); [`cluster_view`]: what a cluster member's
//!   engine sees of its cluster (`system.cluster`, readiness).
//! - [`expr_limits`]: how large a statement and its plan may be; [`query_runtime`]: where
//!   queries run, with their timeout and cancellation; `providers::flushed_audit`: the flushed part of
//!   `system.audit_log`.
//!
//! How rows are stored is `kalamdb-tables`' business and what exists is `kalamdb-catalog`'s;
//! this crate knows no HTTP: `kalamdb-api` turns requests into calls on
//! [`sql::executor::SqlExecutor`] and [`auth::AuthService`].

pub mod access;
pub mod app_context;
pub mod auth;
pub mod backup;
pub mod cluster_view;
pub mod config;
pub mod encode;
pub mod engine;
pub mod expr_limits;
pub mod json_ops;
pub mod maintenance;
pub mod metrics;
pub mod providers;
pub mod query_runtime;
pub mod row_filter;
pub mod schema_view;
pub mod server_logs;
pub mod sql;
pub mod topics;
pub mod transactions;
pub mod uuid_literals;

pub use app_context::AppContext;
pub use kalamdb_catalog::{KalamError, Result};
