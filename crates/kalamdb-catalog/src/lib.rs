//! The catalog of KalamDB: what exists, and the vocabulary every engine layer shares.
//!
//! ```text
//!  DDL (kalamdb-core) ──> Catalog ──> sys/* partitions of the hot store (kalamdb-store)
//!                           │
//!  readers and writers ──> SchemaRegistry (memoized CachedTable: definition, Arrow schema,
//!                           partitions, defaults)
//! ```
//!
//! - [`catalog::Catalog`]: persisted namespaces, table definitions and their versions, users,
//!   storages, views, pending drops, the audit log's hot part, jobs.
//! - [`schema_registry`]: the in-memory view of table definitions, built once per version.
//! - [`partitions`]: which hot-store partition a table's rows live in.
//! - [`seq`]: `_seq` / `SNOWFLAKE_ID()` generation; [`audit`]: the audit trail; [`jobs`]:
//!   `system.jobs` records and their runner; [`storages`]: opening a storage's object store.
//! - [`types`], [`value`], [`defaults`]: SQL types to Arrow, stored values, column defaults.
//! - [`error`]: the engine's error type and its stable codes, shared by the layers above.
//!
//! This crate knows no SQL statements, no table rows and no HTTP; the table storage layer
//! (`kalamdb-tables`) and the SQL layer (`kalamdb-core`) build on it.

pub mod audit;
pub mod catalog;
pub mod defaults;
pub mod error;
pub mod jobs;
pub mod partitions;
pub mod schema_registry;
pub mod seq;
pub mod storages;
pub mod types;
pub mod value;

pub use error::{KalamError, Result};
