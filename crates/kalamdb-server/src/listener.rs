//! Accepting and serving connections: how many, for how long, and how they end.
//!
//! - At most `server.max_connections` connections at once (further bounded by the open-file
//!   limit, which [`raise_file_limit`] lifts to the hard limit at start), and at most
//!   `server.max_connections_per_ip` per client address; a connection over a limit is closed
//!   as soon as it is accepted, so it cannot hold a slot.
//! - A connection must deliver a complete request head within
//!   `server.request_header_timeout_secs` of opening or of its previous response; slow
//!   senders and idle keep-alive connections are closed (hyper's header-read timer, which runs
//!   while a connection waits for a request).
//! - Graceful shutdown: stop accepting, let each connection finish its request in flight,
//!   then close it.
//!
//! Body read timeouts are a layer of the router (`kalamdb-api`), so they hold for every way of
//! serving it.

use axum::Router;
use axum::extract::ConnectInfo;
use dashmap::DashMap;
use hyper_util::rt::{TokioIo, TokioTimer};
use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::{mpsc, watch};
use tower::ServiceExt;

/// File descriptors kept free of connections (RocksDB, Parquet segments, spill files, logs).
const RESERVED_FILES: u64 = 256;

/// Connection limits and timeouts.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Limits {
    pub(crate) max_connections: usize,
    pub(crate) max_per_ip: usize,
    pub(crate) header_timeout: Duration,
}

/// Open connections, overall and per address.
#[derive(Debug, Default)]
struct Slots {
    total: AtomicUsize,
    per_ip: DashMap<IpAddr, usize>,
}

/// One connection's place in [`Slots`], given back on drop.
struct Slot {
    slots: Arc<Slots>,
    ip: IpAddr,
}

impl Slots {
    fn take(self: &Arc<Self>, ip: IpAddr, limits: &Limits) -> Option<Slot> {
        if self.total.fetch_add(1, Ordering::AcqRel) >= limits.max_connections {
            self.total.fetch_sub(1, Ordering::AcqRel);
            return None;
        }
        let mut count = self.per_ip.entry(ip).or_insert(0);
        if *count >= limits.max_per_ip {
            drop(count);
            self.total.fetch_sub(1, Ordering::AcqRel);
            return None;
        }
        *count += 1;
        Some(Slot {
            slots: Arc::clone(self),
            ip,
        })
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.slots.total.fetch_sub(1, Ordering::AcqRel);
        self.slots.per_ip.remove_if_mut(&self.ip, |_, count| {
            *count -= 1;
            *count == 0
        });
    }
}

/// Raises the soft open-file limit to the hard limit; returns the soft limit now in force.
pub(crate) fn raise_file_limit() -> u64 {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit only read and write the struct passed.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) != 0 {
            return 1024;
        }
        if limit.rlim_cur < limit.rlim_max {
            let raised = libc::rlimit {
                rlim_cur: limit.rlim_max,
                rlim_max: limit.rlim_max,
            };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &raised) == 0 {
                limit.rlim_cur = raised.rlim_cur;
            }
        }
    }
    limit.rlim_cur
}

/// How many connections the file limit leaves room for.
pub(crate) fn connections_allowed_by(file_limit: u64) -> usize {
    file_limit.saturating_sub(RESERVED_FILES).max(16) as usize
}

/// Serves `router` on `listener` until `stop` completes, then lets open connections finish
/// their request in flight and returns when all have closed.
pub(crate) async fn serve(
    listener: TcpListener,
    router: Router,
    limits: Limits,
    stop: impl Future<Output = ()>,
) {
    let slots = Arc::new(Slots::default());
    let mut http = hyper::server::conn::http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(limits.header_timeout)
        .keep_alive(true);
    let (closing_tx, closing) = watch::channel(false);
    // Every connection task holds a sender; all dropped = all connections closed.
    let (open_tx, mut open_rx) = mpsc::channel::<()>(1);
    tokio::pin!(stop);
    loop {
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(pair) => pair,
                Err(e) => {
                    // Out of file descriptors, or a connection reset before accept: wait a
                    // moment instead of spinning.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = &mut stop => break,
        };
        let Some(slot) = slots.take(peer.ip(), &limits) else {
            tracing::debug!(%peer, "connection refused: connection limit reached");
            continue;
        };
        let _ = stream.set_nodelay(true);
        let router = router.clone();
        let service = hyper::service::service_fn(move |mut req| {
            req.extensions_mut().insert(ConnectInfo::<SocketAddr>(peer));
            router.clone().oneshot(req)
        });
        let conn = http
            .serve_connection(TokioIo::new(stream), service)
            .with_upgrades();
        let mut closing = closing.clone();
        let open = open_tx.clone();
        tokio::spawn(async move {
            let _slot = slot;
            let _open = open;
            tokio::pin!(conn);
            tokio::select! {
                _ = &mut conn => {}
                _ = closing.changed() => {
                    conn.as_mut().graceful_shutdown();
                    let _ = conn.await;
                }
            }
        });
    }
    drop(listener);
    let _ = closing_tx.send(true);
    drop(open_tx);
    let _ = open_rx.recv().await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_bound_connections_overall_and_per_address() {
        let limits = Limits {
            max_connections: 3,
            max_per_ip: 2,
            header_timeout: Duration::from_secs(1),
        };
        let slots = Arc::new(Slots::default());
        let a: IpAddr = "127.0.0.2".parse().unwrap();
        let b: IpAddr = "127.0.0.3".parse().unwrap();
        let a1 = slots.take(a, &limits).unwrap();
        let _a2 = slots.take(a, &limits).unwrap();
        assert!(slots.take(a, &limits).is_none(), "per address");
        let _b1 = slots.take(b, &limits).unwrap();
        assert!(slots.take(b, &limits).is_none(), "overall");
        drop(a1);
        let b2 = slots.take(b, &limits);
        assert!(b2.is_some());
        assert_eq!(slots.total.load(Ordering::Acquire), 3);
    }

    #[test]
    fn file_limit_leaves_room() {
        assert_eq!(connections_allowed_by(1024), 768);
        assert_eq!(connections_allowed_by(10), 16);
    }
}
