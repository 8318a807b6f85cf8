//! Shared vocabulary of KalamDB.
//!
//! This crate holds the names every other crate speaks in, and nothing else:
//!
//! - [`ids`]: typed identifiers (`NamespaceId`, `TableId`, `UserId`, `NodeId` …) and the identifier
//!   rules that CREATE statements enforce;
//! - [`datatype`]: [`KalamDataType`], the SQL-level column types as they appear on the wire;
//! - [`schema`]: table and column definitions, table types, access levels, roles;
//! - [`wire`]: the HTTP request/response bodies of `docs/protocol.md`, shared by the server, the
//!   bench tool and tests;
//! - [`error_code`]: the stable error codes clients key on, with their HTTP status;
//! - [`split`]: how request text splits into statements (the server and the `kalam` CLI agree).
//!
//! It depends on serde only: the engine's Arrow mapping lives in `kalamdb-core`, so clients can
//! use these types without pulling in DataFusion.

pub mod datatype;
pub mod error_code;
pub mod ids;
pub mod schema;
pub mod split;
pub mod wire;
pub mod ws;

pub use datatype::KalamDataType;
pub use error_code::ErrorCode;
pub use ids::{IdError, NamespaceId, NodeId, StorageId, TableId, TableName, UserId};
pub use schema::{AccessLevel, ColumnDefault, ColumnDefinition, Role, TableDefinition, TableType};
