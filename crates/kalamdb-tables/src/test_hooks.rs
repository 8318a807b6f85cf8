//! Test hooks: points where an end-to-end test can hold the server still, to force one
//! interleaving of two operations (a flush or a subscribe overtaken by an ALTER). Unset, a
//! hook costs one uncontended lock.

use kalamdb_commons::TableId;
use std::sync::Arc;
use tokio::sync::Notify;

/// A pause: the operation that takes it signals `reached` and waits for `resume`.
#[derive(Debug, Default)]
pub struct Pause {
    /// Notified when the operation stands at the pause.
    pub reached: Notify,
    /// Notify to let it go on.
    pub resume: Notify,
}

/// Where a test sets a pause for the next operation on one table.
pub type PauseSlot = parking_lot::Mutex<Option<(TableId, Arc<Pause>)>>;

/// Takes the pause in `slot` if it is set for `table`, and waits there until resumed.
pub async fn pause_here(slot: &PauseSlot, table: &TableId) {
    let pause = {
        let mut hook = slot.lock();
        let ours = hook.as_ref().is_some_and(|(id, _)| id == table);
        if ours {
            hook.take().map(|(_, p)| p)
        } else {
            None
        }
    };
    if let Some(pause) = pause {
        pause.reached.notify_one();
        pause.resume.notified().await;
    }
}
