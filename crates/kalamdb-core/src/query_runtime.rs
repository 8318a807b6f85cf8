//! [`QueryRuntime`]: where statements are planned and executed, apart from the runtime that
//! accepts connections and answers health checks, logins and WebSocket traffic.
//!
//! - Its own tokio runtime (`[query] worker_threads`, one per core by default) at a slightly
//!   lower scheduling priority, so a CPU-heavy query never starves connection handling.
//! - Large thread stacks, so that every expression tree the parser admits within
//!   `[limits] max_expression_depth` (and every refused one, which still has to be dropped)
//!   fits whatever the recursion of planning, optimizing or dropping it costs.
//! - Every request run here is registered while it runs (`system.queries`), cancelled by
//!   `[query] timeout_secs`, by `KILL QUERY`, or when its caller goes away (a client that
//!   disconnects drops the request future, which aborts the query task).

use dashmap::DashMap;
use kalamdb_catalog::error::{KalamError, Result};
use std::future::Future;
use std::net::IpAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};
use tokio::task::AbortHandle;

/// Stack of each query thread. Only touched pages use memory; a statement as deep as the
/// largest SQL text allows (1 MiB of `1+1+…`: ~500,000 levels) is dropped in well under it.
const STACK_BYTES: usize = 512 * 1024 * 1024;

/// Threads for blocking work started by queries (DataFusion's file I/O).
const MAX_BLOCKING_THREADS: usize = 16;

/// Scheduling-priority increment of query threads (Linux `nice`): connection handling, health
/// checks and live delivery win the CPU from running queries.
const NICE: libc::c_int = 5;

/// A request that is running, as `system.queries` shows it.
#[derive(Debug, Clone)]
pub struct RunningQuery {
    /// Id for `KILL QUERY`.
    pub id: u64,
    /// Who runs it.
    pub user_id: String,
    /// From where.
    pub client_ip: Option<IpAddr>,
    /// Its SQL text (cut at 4 KiB).
    pub sql: String,
    /// When it started, µs since the epoch.
    pub started_at: i64,
    started: Instant,
    abort: AbortHandle,
}

impl RunningQuery {
    /// How long it has run.
    pub fn elapsed(&self) -> Duration {
        self.started.elapsed()
    }
}

/// The requests running now (what `system.queries` reads).
#[derive(Debug, Clone, Default)]
pub struct RunningQueries(Arc<DashMap<u64, RunningQuery>>);

impl RunningQueries {
    /// The requests running now, oldest first.
    pub fn list(&self) -> Vec<RunningQuery> {
        let mut all: Vec<RunningQuery> = self.0.iter().map(|e| e.value().clone()).collect();
        all.sort_by_key(|q| q.id);
        all
    }
}

/// The query runtime and its running requests.
#[derive(Debug)]
pub struct QueryRuntime {
    runtime: Option<tokio::runtime::Runtime>,
    handle: tokio::runtime::Handle,
    running: RunningQueries,
    next_id: AtomicU64,
    timeout: Option<Duration>,
}

/// Longest SQL text kept for `system.queries`.
const SQL_SHOWN_BYTES: usize = 4096;

/// Removes a request from the registry and aborts its task when the caller stops waiting
/// (done, timed out, or its own future dropped because the client went away).
struct Registration {
    running: RunningQueries,
    id: u64,
    abort: AbortHandle,
}

impl Drop for Registration {
    fn drop(&mut self) {
        self.abort.abort();
        self.running.0.remove(&self.id);
    }
}

impl QueryRuntime {
    /// Starts `threads` query threads; requests time out after `timeout` (None: never).
    pub fn start(threads: usize, timeout: Option<Duration>) -> Result<Self> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(threads.max(1))
            .max_blocking_threads(MAX_BLOCKING_THREADS)
            .thread_name("kalamdb-query")
            .thread_stack_size(STACK_BYTES)
            .on_thread_start(lower_priority)
            .enable_all()
            .build()
            .map_err(|e| KalamError::Internal(format!("cannot start the query runtime: {e}")))?;
        Ok(Self {
            handle: runtime.handle().clone(),
            runtime: Some(runtime),
            running: RunningQueries::default(),
            next_id: AtomicU64::new(1),
            timeout,
        })
    }

    /// Runs one request's work on the query runtime and waits for it, registered in
    /// `system.queries` meanwhile; `timed`: held to the timeout. A panic in the work is an
    /// internal error, not a crash.
    pub async fn run<T, F>(
        &self,
        user_id: &str,
        client_ip: Option<IpAddr>,
        sql: &str,
        timed: bool,
        work: F,
    ) -> Result<T>
    where
        T: Send + 'static,
        F: Future<Output = T> + Send + 'static,
    {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        // The request's span (its request id) follows the work onto the query runtime.
        let task = self
            .handle
            .spawn(tracing::Instrument::in_current_span(work));
        let abort = task.abort_handle();
        self.running.0.insert(
            id,
            RunningQuery {
                id,
                user_id: user_id.to_string(),
                client_ip,
                sql: cut(sql, SQL_SHOWN_BYTES).to_string(),
                started_at: chrono::Utc::now().timestamp_micros(),
                started: Instant::now(),
                abort: abort.clone(),
            },
        );
        let _registration = Registration {
            running: self.running.clone(),
            id,
            abort,
        };
        let joined = match self.timeout.filter(|_| timed) {
            Some(limit) => match tokio::time::timeout(limit, task).await {
                Ok(joined) => joined,
                Err(_) => return Err(KalamError::Timeout(limit.as_secs())),
            },
            None => task.await,
        };
        match joined {
            Ok(out) => Ok(out),
            Err(e) if e.is_cancelled() => Err(KalamError::Cancelled),
            Err(e) => {
                tracing::error!(error = %e, sql = cut(sql, 200), "query task panicked");
                Err(KalamError::Internal("the query failed unexpectedly".into()))
            }
        }
    }

    /// Runs blocking or deeply recursive work (parsing a client's SQL) on a query thread.
    pub async fn run_small<T, F>(&self, work: F) -> Result<T>
    where
        T: Send + 'static,
        F: FnOnce() -> T + Send + 'static,
    {
        match self.handle.spawn(async move { work() }).await {
            Ok(out) => Ok(out),
            Err(e) => Err(KalamError::Internal(format!("query thread failed: {e}"))),
        }
    }

    /// The requests running now.
    pub fn running(&self) -> &RunningQueries {
        &self.running
    }

    /// Cancels a running request; false when no request has that id.
    pub fn kill(&self, id: u64) -> bool {
        match self.running.0.get(&id) {
            Some(q) => {
                q.abort.abort();
                true
            }
            None => false,
        }
    }
}

impl Drop for QueryRuntime {
    fn drop(&mut self) {
        // Dropping a runtime blocks, which is refused inside async code: let it go in the
        // background instead.
        if let Some(rt) = self.runtime.take() {
            rt.shutdown_background();
        }
    }
}

/// `s` cut to at most `max` bytes at a character boundary.
fn cut(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

/// Lowers the calling thread's priority; failure only means it keeps the normal priority.
fn lower_priority() {
    #[cfg(target_os = "linux")]
    // SAFETY: plain syscalls on the calling thread's own id; no memory is shared.
    unsafe {
        let tid = libc::syscall(libc::SYS_gettid) as libc::id_t;
        let _ = libc::setpriority(libc::PRIO_PROCESS, tid, NICE);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn results_timeouts_kills_and_panics() {
        let rt = QueryRuntime::start(1, Some(Duration::from_millis(300))).unwrap();
        assert_eq!(rt.run("u", None, "x", true, async { 7 }).await.unwrap(), 7);
        let slow = rt.run("u", None, "slow", true, async {
            tokio::time::sleep(Duration::from_secs(60)).await;
        });
        assert!(matches!(slow.await, Err(KalamError::Timeout(0))));
        assert!(
            rt.running().list().is_empty(),
            "a timed-out query is deregistered"
        );

        let rt = Arc::new(QueryRuntime::start(1, None).unwrap());
        let waiter = {
            let rt = Arc::clone(&rt);
            tokio::spawn(async move {
                rt.run("u", None, "sleep", true, async {
                    tokio::time::sleep(Duration::from_secs(60)).await;
                })
                .await
            })
        };
        let id = loop {
            if let Some(q) = rt.running().list().first() {
                break q.id;
            }
            tokio::task::yield_now().await;
        };
        assert_eq!(rt.running().list()[0].sql, "sleep");
        assert!(rt.kill(id));
        assert!(matches!(waiter.await.unwrap(), Err(KalamError::Cancelled)));
        assert!(!rt.kill(id));

        let panicked = rt.run("u", None, "p", true, async {
            if rt_is_up() {
                panic!("boom");
            }
        });
        assert!(matches!(panicked.await, Err(KalamError::Internal(_))));
    }

    fn rt_is_up() -> bool {
        true
    }

    #[test]
    fn cut_keeps_characters_whole() {
        assert_eq!(cut("héllo", 2), "h");
        assert_eq!(cut("abc", 10), "abc");
    }
}
