//! The bytes of a group's snapshot as openraft moves them ([`SnapshotBytes`]): the bytes a
//! follower receives, or a dump of the state machine that is taken only when something reads
//! it. Building a snapshot records which entries it covers and nothing else (cheap, so logs
//! can be purged soon after every member has them, docs/cluster.md §8); openraft also asks for
//! the current snapshot when a group starts and uses only its description then, so the dump
//! runs only when a snapshot is really sent to a member, on tokio's blocking threads.

use std::future::Future;
use std::io::{Cursor, SeekFrom};
use std::pin::Pin;
use std::task::{Context, Poll};
use tokio::io::{AsyncRead, AsyncSeek, AsyncWrite, ReadBuf};

/// Produces a snapshot's bytes from a view of the store fixed when the snapshot was asked for.
pub type Dump = Box<dyn FnOnce() -> std::io::Result<Vec<u8>> + Send>;

/// A snapshot's bytes, read, written and sought like a `Cursor<Vec<u8>>`. A lazy one is
/// dumped on tokio's blocking threads the first time it is read or sought, so the Raft threads
/// (heartbeats) go on meanwhile.
pub struct SnapshotBytes {
    state: State,
    /// A seek asked for before the bytes were there.
    seek: Option<SeekFrom>,
}

enum State {
    Ready(Cursor<Vec<u8>>),
    Pending(Dump),
    Dumping(tokio::task::JoinHandle<std::io::Result<Vec<u8>>>),
    /// The dump failed: every later operation fails the same way.
    Failed(String),
}

fn failed(why: &str) -> std::io::Error {
    std::io::Error::other(format!("the snapshot could not be dumped: {why}"))
}

impl SnapshotBytes {
    /// Bytes already at hand (received from a leader, or an empty buffer to receive into).
    pub fn ready(bytes: Vec<u8>) -> Self {
        Self {
            state: State::Ready(Cursor::new(bytes)),
            seek: None,
        }
    }

    /// Bytes that `dump` produces the first time they are read or sought.
    pub fn lazy(dump: Dump) -> Self {
        Self {
            state: State::Pending(dump),
            seek: None,
        }
    }

    /// The bytes (dumped here if they were not yet; an error while a dump runs elsewhere).
    pub fn into_bytes(self) -> std::io::Result<Vec<u8>> {
        match self.state {
            State::Ready(cursor) => Ok(cursor.into_inner()),
            State::Pending(dump) => dump(),
            State::Dumping(_) => Err(std::io::Error::other("the snapshot is being dumped")),
            State::Failed(why) => Err(failed(&why)),
        }
    }

    /// Makes the bytes ready (starting or awaiting the dump), then applies a pending seek.
    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<std::io::Result<&mut Cursor<Vec<u8>>>> {
        loop {
            let next = match &mut self.state {
                State::Ready(_) => break,
                State::Failed(why) => return Poll::Ready(Err(failed(why))),
                State::Pending(_) => {
                    match std::mem::replace(&mut self.state, State::Failed(String::new())) {
                        State::Pending(dump) => match tokio::runtime::Handle::try_current() {
                            Ok(runtime) => State::Dumping(runtime.spawn_blocking(dump)),
                            Err(_) => match dump() {
                                Ok(bytes) => State::Ready(Cursor::new(bytes)),
                                Err(e) => State::Failed(e.to_string()),
                            },
                        },
                        other => other,
                    }
                }
                State::Dumping(task) => match Pin::new(task).poll(cx) {
                    Poll::Pending => return Poll::Pending,
                    Poll::Ready(Ok(Ok(bytes))) => State::Ready(Cursor::new(bytes)),
                    Poll::Ready(Ok(Err(e))) => State::Failed(e.to_string()),
                    Poll::Ready(Err(e)) => State::Failed(e.to_string()),
                },
            };
            self.state = next;
        }
        let seek = self.seek.take();
        match &mut self.state {
            State::Ready(cursor) => {
                if let Some(position) = seek {
                    std::io::Seek::seek(cursor, position)?;
                }
                Poll::Ready(Ok(cursor))
            }
            _ => Poll::Ready(Err(failed("not ready"))),
        }
    }
}

impl std::fmt::Debug for SnapshotBytes {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let state = match &self.state {
            State::Ready(c) => format!("{} bytes", c.get_ref().len()),
            State::Pending(_) => "not dumped yet".to_string(),
            State::Dumping(_) => "being dumped".to_string(),
            State::Failed(why) => format!("failed: {why}"),
        };
        f.debug_struct("SnapshotBytes")
            .field("state", &state)
            .finish()
    }
}

impl AsyncRead for SnapshotBytes {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        match self.get_mut().poll_ready(cx) {
            Poll::Ready(Ok(cursor)) => Pin::new(cursor).poll_read(cx, buf),
            Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
            Poll::Pending => Poll::Pending,
        }
    }
}

impl AsyncWrite for SnapshotBytes {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        match self.get_mut().poll_ready(cx) {
            Poll::Ready(Ok(cursor)) => Pin::new(cursor).poll_write(cx, buf),
            Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
            Poll::Pending => Poll::Pending,
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        match self.get_mut().poll_ready(cx) {
            Poll::Ready(Ok(cursor)) => Pin::new(cursor).poll_flush(cx),
            Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
            Poll::Pending => Poll::Pending,
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        match self.get_mut().poll_ready(cx) {
            Poll::Ready(Ok(cursor)) => Pin::new(cursor).poll_shutdown(cx),
            Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
            Poll::Pending => Poll::Pending,
        }
    }
}

impl AsyncSeek for SnapshotBytes {
    fn start_seek(self: Pin<&mut Self>, position: SeekFrom) -> std::io::Result<()> {
        let this = self.get_mut();
        match &mut this.state {
            State::Ready(cursor) => Pin::new(cursor).start_seek(position),
            State::Failed(why) => Err(failed(why)),
            // Applied once the bytes are there (poll_complete).
            _ => {
                this.seek = Some(position);
                Ok(())
            }
        }
    }

    fn poll_complete(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<u64>> {
        match self.get_mut().poll_ready(cx) {
            Poll::Ready(Ok(cursor)) => Pin::new(cursor).poll_complete(cx),
            Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
            Poll::Pending => Poll::Pending,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use tokio::io::{AsyncReadExt, AsyncSeekExt, AsyncWriteExt};

    #[tokio::test]
    async fn a_lazy_snapshot_dumps_once_and_only_when_read() -> std::io::Result<()> {
        let dumps = Arc::new(AtomicUsize::new(0));
        let counted = Arc::clone(&dumps);
        let mut bytes = SnapshotBytes::lazy(Box::new(move || {
            counted.fetch_add(1, Ordering::SeqCst);
            Ok(b"hello snapshot".to_vec())
        }));
        assert_eq!(dumps.load(Ordering::SeqCst), 0);
        assert_eq!(bytes.seek(SeekFrom::Start(6)).await?, 6);
        let mut rest = String::new();
        bytes.read_to_string(&mut rest).await?;
        assert_eq!(rest, "snapshot");
        assert_eq!(bytes.into_bytes()?, b"hello snapshot");
        assert_eq!(dumps.load(Ordering::SeqCst), 1);

        // Never read: never dumped.
        let untouched = Arc::new(AtomicUsize::new(0));
        let counted = Arc::clone(&untouched);
        drop(SnapshotBytes::lazy(Box::new(move || {
            counted.fetch_add(1, Ordering::SeqCst);
            Ok(Vec::new())
        })));
        assert_eq!(untouched.load(Ordering::SeqCst), 0);

        let mut received = SnapshotBytes::ready(Vec::new());
        received.write_all(b"abc").await?;
        assert_eq!(received.into_bytes()?, b"abc");

        let mut failing = SnapshotBytes::lazy(Box::new(|| Err(std::io::Error::other("disk"))));
        let mut buf = Vec::new();
        let err = failing.read_to_end(&mut buf).await.unwrap_err();
        assert!(err.to_string().contains("disk"), "{err}");
        assert!(failing.seek(SeekFrom::Start(0)).await.is_err());
        Ok(())
    }
}
