//! The gate between changes of segment files and manifests (flushes, compactions, removals of
//! dropped data: held shared) and backups copying them (held alone), here or on another
//! cluster member ([`FileGate::hold`]: a pause another member's backup asks for, which lapses
//! unless renewed, so a backup that dies does not stop this node's flushes for good).

use parking_lot::Mutex;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{OwnedRwLockWriteGuard, RwLock, RwLockReadGuard};
use tokio::time::Instant;

/// A pause held for another member, by the id its backup chose.
#[derive(Debug)]
struct Held {
    lapses_at: Arc<Mutex<Instant>>,
    task: tokio::task::JoinHandle<()>,
}

/// See the module doc.
#[derive(Debug, Default)]
pub struct FileGate {
    gate: Arc<RwLock<()>>,
    held: Arc<Mutex<HashMap<u64, Held>>>,
}

impl FileGate {
    /// Held shared while segment files or manifests change.
    pub async fn changing(&self) -> RwLockReadGuard<'_, ()> {
        self.gate.read().await
    }

    /// Stops changes (each waits) until the guard is dropped.
    pub async fn pause(&self) -> OwnedRwLockWriteGuard<()> {
        Arc::clone(&self.gate).write_owned().await
    }

    /// A shared hold taken later, by a task that outlives the caller (a delayed removal of
    /// superseded segment files).
    pub fn changing_owned(
        &self,
    ) -> impl std::future::Future<Output = tokio::sync::OwnedRwLockReadGuard<()>> + Send + 'static
    {
        Arc::clone(&self.gate).read_owned()
    }

    /// Pauses changes for another member's backup `id` for `lease` (once running changes
    /// finish), or, with `renew`, pushes the end of that pause to `lease` from now. Answers
    /// whether the pause is held: a renewal of a pause that lapsed (or was never taken) is
    /// not, and is not taken again (the backup must know there was a gap).
    pub async fn hold(&self, id: u64, lease: Duration, renew: bool) -> bool {
        if self.renew(id, lease) {
            return true;
        }
        if renew {
            return false;
        }
        let guard = self.pause().await;
        let lapses_at = Arc::new(Mutex::new(Instant::now() + lease));
        let until = Arc::clone(&lapses_at);
        let held = Arc::clone(&self.held);
        // The map is locked from here until the pause is in it: the task below checks the
        // deadline and leaves the map under that lock, as renewals extend it under it, so a
        // renewal never answers "held" for a pause that is ending.
        let mut map = self.held.lock();
        let task = tokio::spawn(async move {
            let _guard = guard;
            loop {
                let at = *until.lock();
                if Instant::now() >= at {
                    let mut map = held.lock();
                    if Instant::now() >= *until.lock() {
                        map.remove(&id);
                        break;
                    }
                    continue;
                }
                tokio::time::sleep_until(at).await;
            }
        });
        map.insert(id, Held { lapses_at, task });
        true
    }

    /// Pushes the end of pause `id` to `lease` from now, if it is held and not ending.
    fn renew(&self, id: u64, lease: Duration) -> bool {
        let map = self.held.lock();
        let Some(held) = map.get(&id) else {
            return false;
        };
        let mut at = held.lapses_at.lock();
        if Instant::now() >= *at {
            return false;
        }
        *at = Instant::now() + lease;
        true
    }

    /// Ends pause `id` now; answers whether it was still held.
    pub fn release(&self, id: u64) -> bool {
        match self.held.lock().remove(&id) {
            Some(held) => {
                held.task.abort();
                true
            }
            None => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Whether changes can start now.
    async fn open(gate: &FileGate) -> bool {
        tokio::time::timeout(Duration::from_millis(50), gate.changing())
            .await
            .is_ok()
    }

    #[tokio::test]
    async fn a_held_pause_stops_changes_until_released_or_lapsed() {
        let gate = FileGate::default();
        assert!(open(&gate).await);
        assert!(gate.hold(1, Duration::from_secs(60), false).await);
        assert!(!open(&gate).await);
        // Renewing keeps it; another id waits behind it.
        assert!(gate.hold(1, Duration::from_secs(60), true).await);
        assert!(!gate.hold(2, Duration::from_secs(60), true).await);
        assert!(gate.release(1));
        assert!(open(&gate).await);
        assert!(!gate.release(1));
        // Released: a renewal does not take it again.
        assert!(!gate.hold(1, Duration::from_secs(60), true).await);
        assert!(open(&gate).await);

        // A short lease lapses on its own; renewed in time, it does not.
        assert!(gate.hold(3, Duration::from_millis(300), false).await);
        tokio::time::sleep(Duration::from_millis(150)).await;
        assert!(gate.hold(3, Duration::from_millis(300), true).await);
        tokio::time::sleep(Duration::from_millis(200)).await;
        assert!(!open(&gate).await, "renewed: still held");
        tokio::time::sleep(Duration::from_millis(250)).await;
        assert!(open(&gate).await, "lapsed");
        assert!(!gate.hold(3, Duration::from_millis(300), true).await);
    }
}
