//! [`Outbox`]: the sending side of one client connection: its id, its bounded queue of
//! ready-to-send messages and the signal that tells the transport to close it. Subscriptions
//! hold it (weakly) to deliver; the transport drains it.

use kalamdb_commons::ws::ServerMessage;
use parking_lot::Mutex;
use std::sync::Arc;
use tokio::sync::{Notify, mpsc};

/// What the transport sends on a connection.
#[derive(Debug, Clone)]
pub enum Outbound {
    /// A serialized server message (JSON).
    Message(Arc<str>),
}

/// Why the server closes a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CloseReason {
    /// Its outbound queue overflowed: the client does not keep up.
    Overflow,
    /// Its user was dropped or given another role.
    Revoked,
}

/// The outbound side of a connection; see the module doc.
#[derive(Debug)]
pub struct Outbox {
    /// Server-wide connection id.
    pub id: u64,
    out: mpsc::Sender<Outbound>,
    closing: Mutex<Option<CloseReason>>,
    close: Notify,
}

impl Outbox {
    pub(crate) fn new(id: u64, out: mpsc::Sender<Outbound>) -> Self {
        Self {
            id,
            out,
            closing: Mutex::new(None),
            close: Notify::new(),
        }
    }

    /// Queues a message; a full queue marks the connection overflowed (the transport closes
    /// it), so a slow reader never blocks writers or other connections.
    pub(crate) fn send(&self, msg: &ServerMessage) {
        match serde_json::to_string(msg) {
            Ok(text) => self.send_text(text.into()),
            Err(e) => tracing::error!(error = %e, "cannot serialize a live message"),
        }
    }

    /// Queues a serialized message (see [`Outbox::send`]).
    pub(crate) fn send_text(&self, text: Arc<str>) {
        if let Err(mpsc::error::TrySendError::Full(_)) = self.out.try_send(Outbound::Message(text))
        {
            self.overflow_now();
        }
    }

    /// Marks the connection too slow: the transport closes it.
    pub(crate) fn overflow_now(&self) {
        self.close_now(CloseReason::Overflow);
    }

    /// Asks the transport to close the connection (the first reason given wins).
    pub(crate) fn close_now(&self, why: CloseReason) {
        let mut closing = self.closing.lock();
        if closing.is_none() {
            *closing = Some(why);
            self.close.notify_one();
        }
    }

    /// Resolves when the connection is to be closed, with why.
    pub async fn closed(&self) -> CloseReason {
        loop {
            if let Some(why) = *self.closing.lock() {
                return why;
            }
            self.close.notified().await;
        }
    }
}
