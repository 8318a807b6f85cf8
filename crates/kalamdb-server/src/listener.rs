//! Accepting and serving connections: how many, for how long, and how they end.
//!
//! - At most `server.max_connections` connections at once (further bounded by the open-file
//!   limit, which [`raise_file_limit`] lifts to the hard limit at start), and at most
//!   `server.max_connections_per_ip` per client address; a connection over a limit is closed
//!   as soon as it is accepted, so it cannot hold a slot. A connection upgraded to a WebSocket
//!   keeps its slot until the socket closes.
//! - A connection must deliver a complete request head within
//!   `server.request_header_timeout_secs` of opening or of its previous response; slow
//!   senders and idle keep-alive connections are closed (hyper's header-read timer, which runs
//!   while a connection waits for a request).
//! - A client that stops reading (accepts no bytes of a response or WebSocket message for
//!   `server.response_write_timeout_secs`) is disconnected, so it cannot pin a large response
//!   in memory ([`SendDeadline`]).
//! - Graceful shutdown: stop accepting, let each connection finish its request in flight,
//!   then close it.
//!
//! Body read timeouts are a layer of the router (`kalamdb-api`), so they hold for every way of
//! serving it.

use axum::Router;
use axum::extract::ConnectInfo;
use dashmap::DashMap;
use hyper_util::rt::{TokioIo, TokioTimer};
use kalamdb_api::ConnectionSlot;
use std::future::Future;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::task::{Context, Poll};
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
    pub(crate) write_timeout: Duration,
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

/// A connection's IO whose writes fail once the peer has accepted no bytes for `limit`.
struct SendDeadline<T> {
    inner: T,
    limit: Duration,
    /// Running since the peer last left the connection unable to take more bytes.
    stalled: Option<Pin<Box<tokio::time::Sleep>>>,
    /// Bytes accepted since the timer started: a trickle below [`MIN_PROGRESS`] per limit
    /// does not restart it.
    accepted: usize,
}

/// Bytes the peer must take within the limit to count as reading: a client that reads a few
/// bytes now and then cannot pin a large response.
const MIN_PROGRESS: usize = 64 * 1024;

impl<T> SendDeadline<T> {
    fn new(inner: T, limit: Duration) -> Self {
        Self {
            inner,
            limit,
            stalled: None,
            accepted: 0,
        }
    }

    fn restart(&mut self) {
        self.stalled = None;
        self.accepted = 0;
    }

    /// Passes a write's `progress` through, turning a stall longer than the limit into an
    /// error; `bytes` tells how much a ready write took.
    fn watch<R>(
        &mut self,
        cx: &mut Context<'_>,
        progress: Poll<io::Result<R>>,
        bytes: impl FnOnce(&R) -> usize,
    ) -> Poll<io::Result<R>> {
        if let Poll::Ready(result) = &progress {
            match result {
                Ok(r) if self.stalled.is_some() => {
                    self.accepted += bytes(r);
                    if self.accepted >= MIN_PROGRESS {
                        self.restart();
                    }
                }
                _ => {}
            }
            if self.stalled.is_none() {
                return progress;
            }
        }
        let limit = self.limit;
        let stalled = self
            .stalled
            .get_or_insert_with(|| Box::pin(tokio::time::sleep(limit)));
        if stalled.as_mut().poll(cx).is_ready() {
            return Poll::Ready(Err(io::Error::new(
                io::ErrorKind::TimedOut,
                "the client stopped reading",
            )));
        }
        progress
    }
}

impl<T: hyper::rt::Read + Unpin> hyper::rt::Read for SendDeadline<T> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: hyper::rt::ReadBufCursor<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_read(cx, buf)
    }
}

impl<T: hyper::rt::Write + Unpin> hyper::rt::Write for SendDeadline<T> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let progress = Pin::new(&mut this.inner).poll_write(cx, buf);
        this.watch(cx, progress, |n| *n)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        match Pin::new(&mut this.inner).poll_flush(cx) {
            // Everything handed over: whatever comes next starts afresh.
            Poll::Ready(Ok(())) => {
                this.restart();
                Poll::Ready(Ok(()))
            }
            progress => this.watch(cx, progress, |_| 0),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let progress = Pin::new(&mut this.inner).poll_write_vectored(cx, bufs);
        this.watch(cx, progress, |n| *n)
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
        let slot = ConnectionSlot(Arc::new(slot));
        let held = slot.clone();
        let service = hyper::service::service_fn(move |mut req| {
            req.extensions_mut().insert(ConnectInfo::<SocketAddr>(peer));
            req.extensions_mut().insert(slot.clone());
            router.clone().oneshot(req)
        });
        let conn = http
            .serve_connection(
                SendDeadline::new(TokioIo::new(stream), limits.write_timeout),
                service,
            )
            .with_upgrades();
        let mut closing = closing.clone();
        let open = open_tx.clone();
        tokio::spawn(async move {
            let _slot = held;
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
            write_timeout: Duration::from_secs(1),
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

    /// Writes `total` bytes through a deadline of `limit` to a peer that reads `chunk` bytes
    /// every 20 ms; returns the write's outcome.
    async fn send_to_slow_reader(total: usize, chunk: usize, limit: Duration) -> io::Result<()> {
        use hyper::rt::Write;
        use tokio::io::AsyncReadExt;
        let (near, mut far) = tokio::io::duplex(1024);
        tokio::spawn(async move {
            let mut buf = vec![0u8; chunk];
            while far.read_exact(&mut buf).await.is_ok() {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        });
        let mut io = SendDeadline::new(TokioIo::new(near), limit);
        let data = vec![7u8; total];
        let mut sent = 0;
        while sent < total {
            sent +=
                std::future::poll_fn(|cx| Pin::new(&mut io).poll_write(cx, &data[sent..])).await?;
        }
        Ok(())
    }

    #[tokio::test]
    async fn readers_that_trickle_are_cut_off_and_steady_ones_are_not() {
        let limit = Duration::from_millis(300);
        // 256 KiB at 50 KiB per 20 ms: done in ~100 ms.
        send_to_slow_reader(256 * 1024, 50 * 1024, limit)
            .await
            .unwrap();
        // 64 bytes per 20 ms never adds up to 64 KiB within the limit.
        let err = send_to_slow_reader(256 * 1024, 64, limit)
            .await
            .unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::TimedOut);
    }

    #[test]
    fn file_limit_leaves_room() {
        assert_eq!(connections_allowed_by(1024), 768);
        assert_eq!(connections_allowed_by(10), 16);
    }
}
