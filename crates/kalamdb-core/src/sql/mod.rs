//! The SQL front end: split a request into statements ([`split`]), recognise KalamDB's own
//! statements ([`parse`]), run them ([`ddl`], [`dml`]) or hand standard queries to DataFusion,
//! and encode results for the wire ([`encode`]). [`executor::SqlExecutor`] is the entry point;
//! [`subscribe`] answers `SUBSCRIBE TO` sent over HTTP.

pub mod alter;
pub mod checked_arithmetic;
pub mod ddl;
pub mod dml;
pub use crate::encode;
pub mod executor;
pub mod files;
pub mod functions;
mod insert_values;
pub mod params;
pub mod parse;
mod point_lookup;
pub use crate::row_filter;
pub mod session;
pub use kalamdb_commons::split;
pub mod export;
pub mod stream;
pub mod subscribe;
pub mod table_select;
pub mod topics;
pub mod value_caps;
pub mod views;
