//! Committed changes, handed to whoever listens (the live-query manager, `kalamdb-live`).
//!
//! The engine knows no subscribers: after a write batch commits, and while the writer still
//! holds the scope's write lock, the DML path hands its row versions to the registered
//! [`ChangeListener`]. Because registering a subscription takes the same lock, every write is
//! either fully visible to a subscription's snapshot or delivered to it as a change, never both
//! and never neither. Listeners must not block: they route and enqueue.

use crate::rows::StoredRow;
use kalamdb_catalog::schema_registry::CachedTable;
use kalamdb_commons::{TableId, UserId};
use std::sync::{Arc, OnceLock};

/// Where the listener is registered once the server starts; shared by the engine's parts.
pub type ListenerSlot = Arc<OnceLock<Arc<dyn ChangeListener>>>;

/// Turns committed changes into more writes of the same atomic batch (topics fed by tables):
/// [`ChangeCapture::capture`] runs inside the commit gate, so what it appends commits with the
/// changes or not at all, in commit order.
pub trait ChangeCapture: Send + Sync + std::fmt::Debug {
    /// Whether changes of `table` are captured (writers then build change events for it).
    fn captures(&self, table: &TableId) -> bool;

    /// Adds the writes for `events` (committed to `user`'s scope of `table`, or its shared
    /// one) to `batch`.
    fn capture(
        &self,
        table: &CachedTable,
        user: Option<&UserId>,
        events: &[ChangeEvent],
        batch: &mut kalamdb_store::WriteBatch,
    );

    /// The batch was written (`true`) or failed (`false`: forget what `capture` reserved).
    /// Called inside the commit gate after every write.
    fn finished(&self, written: bool);
}

/// Where the change capture is registered once the engine opens.
pub type CaptureSlot = Arc<OnceLock<Arc<dyn ChangeCapture>>>;

/// Figures of the live-query side ([`ChangeListener::counts`]).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LiveCounts {
    /// Open client connections.
    pub connections: usize,
    /// Connections holding at least one subscription.
    pub subscribed_connections: usize,
    /// Subscriptions.
    pub subscriptions: usize,
}

/// One live subscription, as `system.live` shows it.
#[derive(Debug, Clone)]
pub struct LiveQueryInfo {
    /// Server-wide id (`KILL LIVE QUERY` takes it).
    pub live_id: String,
    /// The connection.
    pub connection_id: String,
    /// The client's id for the subscription.
    pub subscription_id: String,
    /// Namespace of the table.
    pub namespace_id: String,
    /// Table.
    pub table_name: String,
    /// Subscriber.
    pub user_id: String,
    /// The subscription SQL.
    pub query: String,
    /// Options as JSON.
    pub options: String,
    /// `loading` or `active`.
    pub status: String,
    /// µs since the epoch.
    pub created_at: i64,
    /// Last change delivered, µs since the epoch.
    pub last_update: Option<i64>,
    /// Changes delivered.
    pub changes: i64,
}

/// What happened to a row.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChangeKind {
    /// A new row (including one whose key was deleted before).
    Insert,
    /// A new version of an existing row.
    Update,
    /// A row was deleted.
    Delete,
}

/// One committed row change.
#[derive(Debug, Clone)]
pub struct ChangeEvent {
    /// What happened.
    pub kind: ChangeKind,
    /// `_seq` of the change: the new version's, or the tombstone's for a delete.
    pub seq: i64,
    /// The new version (insert, update).
    pub new: Option<StoredRow>,
    /// The replaced version (update, delete).
    pub old: Option<StoredRow>,
}

/// Receives committed changes.
pub trait ChangeListener: Send + Sync + std::fmt::Debug {
    /// Whether anyone listens to `table` (for `user`'s partition, or the table's only one when
    /// `None`); writers skip building events when not.
    fn wants(&self, table: &TableId, user: Option<&UserId>) -> bool;

    /// Changes committed to one scope of `table`, in `_seq` order.
    fn publish(&self, table: &CachedTable, user: Option<&UserId>, events: Vec<ChangeEvent>);

    /// The live subscriptions (`system.live`).
    fn live_queries(&self) -> Vec<LiveQueryInfo>;

    /// How many connections are open, how many of them hold subscriptions, and how many
    /// subscriptions there are (`system.stats`), counted without listing them.
    fn counts(&self) -> LiveCounts {
        LiveCounts::default()
    }

    /// Ends a live subscription (`KILL LIVE QUERY`); false when there is none with that id.
    fn kill_live_query(&self, live_id: &str) -> bool;

    /// `table` was dropped: its subscriptions get an error and end. Returns how many.
    fn table_dropped(&self, table: &TableId) -> usize;

    /// `table` was altered to `def`: subscriptions that read a column no longer there get an
    /// error and end; the others go on. Returns how many ended.
    fn table_altered(&self, def: &kalamdb_commons::TableDefinition) -> usize;

    /// `user` was dropped or given another role: connections signed in as them close (their
    /// identity is stale). Returns how many.
    fn user_revoked(&self, user: &UserId) -> usize;
}
