//! Committed changes, handed to whoever listens (the live-query manager, `kalamdb-live`).
//!
//! The engine knows no subscribers: after a write batch commits, and while the writer still
//! holds the scope's write lock, the DML path hands its row versions to the registered
//! [`ChangeListener`]. Because registering a subscription takes the same lock, every write is
//! either fully visible to a subscription's snapshot or delivered to it as a change, never both
//! and never neither. Listeners must not block: they route and enqueue.

use crate::rows::StoredRow;
use crate::schema_registry::CachedTable;
use kalamdb_commons::{TableId, UserId};

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
}
