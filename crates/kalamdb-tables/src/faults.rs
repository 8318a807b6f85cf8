//! [`Faults`]: the failure and pause points one engine offers its tests, to force the
//! interleavings and crash states they check (a flush stopped between its steps, a flush or
//! a subscription overtaken by an ALTER, a DROP whose cleanup did not run).
//!
//! Each engine owns its own `Faults` (held by its [`crate::TableStore`]), so tests running in
//! one process do not see each other's faults. Setting a fault needs the `test-hooks` feature;
//! without it the type is empty and every check is a no-op the compiler removes.

use kalamdb_catalog::error::Result;
use kalamdb_commons::TableId;
#[cfg(feature = "test-hooks")]
use std::sync::Arc;
use tokio::sync::Notify;

/// A step of a flush after which a test may stop it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FlushStep {
    /// The segment file is in place; the manifest does not name it yet.
    SegmentWritten,
    /// The manifest names the segment; the hot versions are still there.
    ManifestCommitted,
}

/// Where an operation can be held still.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PausePoint {
    /// A flush, just before it reads the scope's rows (with the definition it already holds).
    FlushBeforeRead,
    /// A subscription, after it compiled its query and before it takes the scope's lock.
    SubscribeBeforeLock,
}

/// A pause: the operation that takes it signals `reached` and waits for `resume`.
#[derive(Debug, Default)]
pub struct Pause {
    /// Notified when the operation stands at the pause.
    pub reached: Notify,
    /// Notify to let it go on.
    pub resume: Notify,
}

/// The faults of one engine; see the module doc.
#[derive(Debug, Default)]
pub struct Faults {
    #[cfg(feature = "test-hooks")]
    set: parking_lot::Mutex<Set>,
}

#[cfg(feature = "test-hooks")]
#[derive(Debug, Default)]
struct Set {
    fail_flush_at: Option<FlushStep>,
    fail_drop_cleanup: bool,
    pauses: Vec<(PausePoint, TableId, Arc<Pause>)>,
}

impl Faults {
    /// A flush reached `step`: fails (once) when a test asked for it.
    pub fn flush_step(&self, step: FlushStep) -> Result<()> {
        #[cfg(feature = "test-hooks")]
        {
            let mut set = self.set.lock();
            if set.fail_flush_at == Some(step) {
                set.fail_flush_at = None;
                return Err(kalamdb_catalog::error::KalamError::Internal(format!(
                    "flush stopped after {step:?} (injected failure)"
                )));
            }
        }
        let _ = step;
        Ok(())
    }

    /// Whether the table cleanup starting now is to fail before it removes anything (once).
    pub fn drop_cleanup_fails(&self) -> bool {
        #[cfg(feature = "test-hooks")]
        {
            return std::mem::take(&mut self.set.lock().fail_drop_cleanup);
        }
        #[cfg(not(feature = "test-hooks"))]
        false
    }

    /// Waits at `point` for `table` when a test set a pause there (once).
    pub async fn pause(&self, point: PausePoint, table: &TableId) {
        #[cfg(feature = "test-hooks")]
        {
            let pause = {
                let mut set = self.set.lock();
                let at = set
                    .pauses
                    .iter()
                    .position(|(p, t, _)| *p == point && t == table);
                at.map(|i| set.pauses.remove(i).2)
            };
            if let Some(pause) = pause {
                pause.reached.notify_one();
                pause.resume.notified().await;
            }
        }
        let _ = (point, table);
    }

    /// The next flush that reaches `step` stops there with an error, leaving what a crash at
    /// that point would leave.
    #[cfg(feature = "test-hooks")]
    pub fn fail_flush_at(&self, step: FlushStep) {
        self.set.lock().fail_flush_at = Some(step);
    }

    /// The next table cleanup (the part of DROP TABLE after the definition is gone) stops
    /// before it removes anything, leaving what a stop at that point would leave.
    #[cfg(feature = "test-hooks")]
    pub fn fail_next_drop_cleanup(&self) {
        self.set.lock().fail_drop_cleanup = true;
    }

    /// The next operation on `table` that reaches `point` waits there on `pause`.
    #[cfg(feature = "test-hooks")]
    pub fn pause_at(&self, point: PausePoint, table: TableId, pause: Arc<Pause>) {
        self.set.lock().pauses.push((point, table, pause));
    }
}
