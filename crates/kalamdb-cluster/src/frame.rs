//! Frames of the stream RPC (see `network.rs`): each frame is its length (u32, big-endian)
//! and that many bytes. A request frame holds the message kind (one byte), the group (u64,
//! big-endian) and the MessagePack body; an answer frame holds a status byte ([`OK`]: the
//! body is the encoded answer; [`REFUSED`]: UTF-8 text saying why) and the body.

use std::io;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Answer status: the body is the encoded answer.
pub(crate) const OK: u8 = 0;

/// Answer status: the message was not handled (no such group, undecodable); the body says why.
pub(crate) const REFUSED: u8 = 1;

/// Largest RPC body a node accepts, on a stream or in an HTTP request: above openraft's
/// snapshot chunks (`network::SNAPSHOT_CHUNK_BYTES`) and its AppendEntries batches of large
/// write batches.
pub const MAX_BODY_BYTES: usize = 256 * 1024 * 1024;

/// The largest frame either side reads: a peer announcing more is cut off.
pub(crate) const MAX_FRAME: usize = MAX_BODY_BYTES + 64;

/// Writes one frame of `head` then `body` and flushes it.
pub(crate) async fn write<W>(io: &mut W, head: &[u8], body: &[u8]) -> io::Result<()>
where
    W: AsyncWriteExt + Unpin,
{
    let len = u32::try_from(head.len() + body.len())
        .ok()
        .filter(|len| *len as usize <= MAX_FRAME)
        .ok_or_else(|| io::Error::other("frame too large"))?;
    io.write_all(&len.to_be_bytes()).await?;
    io.write_all(head).await?;
    io.write_all(body).await?;
    io.flush().await
}

/// Bytes reserved for a frame before its body arrives: a peer announcing a large frame gets
/// memory as its bytes come, not on its word.
const RESERVE_UP_FRONT: usize = 1024 * 1024;

/// Reads the next frame into `buf` (replacing what it held; a buffer grown past
/// [`RESERVE_UP_FRONT`] by a large frame is given up, not kept for the connection's life);
/// `false` when the peer closed the connection before a frame's first byte.
pub(crate) async fn read<R>(io: &mut R, buf: &mut Vec<u8>) -> io::Result<bool>
where
    R: AsyncReadExt + Unpin,
{
    let mut len = [0u8; 4];
    match io.read_exact(&mut len).await {
        Ok(_) => {}
        Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(false),
        Err(e) => return Err(e),
    }
    let len = u32::from_be_bytes(len) as usize;
    if len > MAX_FRAME {
        return Err(io::Error::other(format!("frame of {len} bytes announced")));
    }
    if buf.capacity() > RESERVE_UP_FRONT {
        *buf = Vec::new();
    }
    buf.clear();
    buf.reserve(len.min(RESERVE_UP_FRONT));
    (&mut *io).take(len as u64).read_to_end(buf).await?;
    if buf.len() != len {
        return Err(io::Error::new(
            io::ErrorKind::UnexpectedEof,
            "the peer closed the connection inside a frame",
        ));
    }
    Ok(true)
}

/// The head of a request frame: `kind` and `group`.
pub(crate) fn request_head(kind: u8, group: u64) -> [u8; 9] {
    let mut head = [0u8; 9];
    head[0] = kind;
    head[1..].copy_from_slice(&group.to_be_bytes());
    head
}

/// Splits a request frame into kind, group and body.
pub(crate) fn split_request(frame: &[u8]) -> Option<(u8, u64, &[u8])> {
    let (head, body) = frame.split_at_checked(9)?;
    let group = u64::from_be_bytes(head[1..].try_into().ok()?);
    Some((head[0], group, body))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn frames_round_trip_and_oversized_ones_are_refused() {
        let (mut a, mut b) = tokio::io::duplex(1024);
        let body = vec![7u8; 5000];
        let writer = async {
            write(&mut a, &request_head(2, 42), &body).await.unwrap();
            write(&mut a, &[OK], b"").await.unwrap();
            // A length far above the limit, then nothing.
            a.write_all(&u32::MAX.to_be_bytes()).await.unwrap();
            drop(a);
        };
        let reader = async {
            let mut buf = Vec::new();
            assert!(read(&mut b, &mut buf).await.unwrap());
            assert_eq!(split_request(&buf), Some((2, 42, &body[..])));
            assert!(read(&mut b, &mut buf).await.unwrap());
            assert_eq!(buf, [OK]);
            assert!(read(&mut b, &mut buf).await.is_err());
        };
        tokio::join!(writer, reader);
        assert_eq!(split_request(&[1, 2, 3]), None);

        // A frame cut short is an error.
        let (mut a, mut b) = tokio::io::duplex(64);
        a.write_all(&10u32.to_be_bytes()).await.unwrap();
        a.write_all(b"abc").await.unwrap();
        drop(a);
        assert!(read(&mut b, &mut Vec::new()).await.is_err());

        // A clean close between frames is the end, not an error.
        let (a, mut b) = tokio::io::duplex(64);
        drop(a);
        assert!(!read(&mut b, &mut Vec::new()).await.unwrap());
    }
}
