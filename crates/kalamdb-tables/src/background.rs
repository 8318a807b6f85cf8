//! One low-priority worker thread for CPU-heavy background work (decoding and encoding a
//! flush's rows, merging segments in a compaction), so that work neither occupies a tokio
//! worker that serves requests nor competes with request handling for the cores at equal
//! priority: the thread runs at a lower scheduling priority (`nice` +10 on Linux), and gets
//! the CPU the server does not use for requests.

use kalamdb_catalog::error::{KalamError, Result};
use std::sync::OnceLock;
use std::sync::mpsc::{Sender, channel};

type Task = Box<dyn FnOnce() + Send>;

/// Scheduling-priority increment of the worker (Linux `nice`).
const NICE: libc::c_int = 10;

fn worker() -> &'static std::sync::Mutex<Sender<Task>> {
    static WORKER: OnceLock<std::sync::Mutex<Sender<Task>>> = OnceLock::new();
    WORKER.get_or_init(|| {
        let (tx, rx) = channel::<Task>();
        let started = std::thread::Builder::new()
            .name("kalamdb-background".into())
            .spawn(move || {
                lower_priority();
                for task in rx {
                    task();
                }
            });
        // Without the thread its receiver is gone, so every `run` reports an error.
        if let Err(e) = started {
            tracing::error!(error = %e, "cannot start the background thread");
        }
        std::sync::Mutex::new(tx)
    })
}

/// Lowers the calling thread's priority; failure only means it keeps the normal priority.
fn lower_priority() {
    #[cfg(target_os = "linux")]
    // SAFETY: plain syscalls on the calling thread's own id; no memory is shared.
    unsafe {
        let tid = libc::syscall(libc::SYS_gettid) as libc::id_t;
        if libc::setpriority(libc::PRIO_PROCESS, tid, NICE) != 0 {
            tracing::debug!("could not lower the background thread's priority");
        }
    }
}

/// Runs `f` on the background thread and waits for its result without blocking the caller's
/// executor thread. Tasks run one at a time, in the order given.
pub async fn run<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> Result<T> {
    let (tx, rx) = tokio::sync::oneshot::channel();
    let task: Task = Box::new(move || {
        // A panicking task must not take the worker down with it; its caller gets an error.
        if let Ok(out) = std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)) {
            let _ = tx.send(out);
        }
    });
    worker()
        .lock()
        .map_err(|_| KalamError::Internal("background worker lock poisoned".into()))?
        .send(task)
        .map_err(|_| KalamError::Internal("background worker is not running".into()))?;
    rx.await
        .map_err(|_| KalamError::Internal("background task panicked".into()))
}

#[cfg(test)]
mod tests {
    #[tokio::test]
    async fn runs_tasks_in_order_off_the_caller_thread() {
        let caller = std::thread::current().id();
        let a = super::run(move || std::thread::current().id() != caller);
        let b = super::run(|| 2 + 2);
        assert!(a.await.unwrap());
        assert_eq!(b.await.unwrap(), 4);
        let name = super::run(|| std::thread::current().name().map(str::to_string))
            .await
            .unwrap();
        assert_eq!(name.as_deref(), Some("kalamdb-background"));
    }
}
