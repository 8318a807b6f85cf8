//! Live queries: clients subscribe to `SELECT … FROM ns.t [WHERE …]` and receive the current
//! rows, then every committed change that alters the result.
//!
//! [`LiveQueryManager`] is the one owner of connections, subscriptions and compiled filters
//! (one place to close: dropping a connection removes all its state at once). It listens to the engine's committed changes
//! ([`kalamdb_tables::changes::ChangeListener`]) and routes each to the subscriptions that can see
//! it, indexed by table and user; `system.*` tables, which change through the catalog rather
//! than DML, are re-read and diffed after catalog writes (`system.rs`). Transport (WebSocket framing, auth, heartbeats) lives in
//! `kalamdb-api`; this crate hands it ready-to-send messages through a bounded queue per
//! connection.

mod compiled;
mod error;
mod initial;
mod manager;
mod outbox;
mod query;
mod subscription;
mod system;

pub use manager::{Connection, ConnectionLimits, LiveQueryManager};
pub use outbox::{CloseReason, Outbound, Outbox};
