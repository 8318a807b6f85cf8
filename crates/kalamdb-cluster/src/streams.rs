//! The stream connections a node keeps to its peers (see `network.rs`), shared by every
//! group and every openraft client of the node: a message takes an idle connection to its
//! peer (or opens one) and gives it back once its answer is read, so replication, votes and
//! the read-index rounds of linearizable reads reuse connections instead of each opening and
//! upgrading its own. Also remembers which peers serve no streams (an earlier version).

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};
use tokio::io::BufStream;

/// An upgraded connection to a peer.
pub(crate) type Connection = BufStream<reqwest::Upgraded>;

/// Idle connections kept per peer; one given back beyond that is closed. Above the groups a
/// small cluster runs (10 by default), whose heartbeats reach a peer at about the same time.
const MAX_IDLE: usize = 32;

/// A connection idle this long is closed instead of reused (well before the peer closes an
/// idle stream, after 10 minutes).
const MAX_IDLE_FOR: Duration = Duration::from_secs(60);

/// A peer that serves no streams is sent one HTTP request per message, and asked again for
/// a stream after this long (it may have been upgraded).
const PER_REQUEST_FOR: Duration = Duration::from_secs(60);

#[derive(Debug, Default)]
struct Kept {
    idle: Vec<(Connection, Instant)>,
    per_request_until: Option<Instant>,
}

/// The kept connections, by peer RPC address. Cheap to clone: clones share them.
#[derive(Debug, Clone, Default)]
pub struct Streams(Arc<Mutex<HashMap<String, Kept>>>);

impl Streams {
    fn kept(&self) -> MutexGuard<'_, HashMap<String, Kept>> {
        // Every change is one push, pop or assignment: go on after a panic elsewhere.
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// An idle connection to `addr`, the most recently used first.
    pub(crate) fn take(&self, addr: &str) -> Option<Connection> {
        let mut kept = self.kept();
        let idle = &mut kept.get_mut(addr)?.idle;
        while let Some((connection, since)) = idle.pop() {
            if since.elapsed() < MAX_IDLE_FOR {
                return Some(connection);
            }
        }
        None
    }

    /// Gives back a connection to `addr` whose last exchange completed.
    pub(crate) fn put(&self, addr: &str, connection: Connection) {
        let mut kept = self.kept();
        let idle = &mut kept.entry(addr.to_string()).or_default().idle;
        if idle.len() < MAX_IDLE {
            idle.push((connection, Instant::now()));
        }
    }

    /// Whether `addr` is sent one request per message now.
    pub(crate) fn per_request(&self, addr: &str) -> bool {
        self.kept()
            .get(addr)
            .and_then(|k| k.per_request_until)
            .is_some_and(|until| Instant::now() < until)
    }

    /// `addr` served no stream: one request per message for a while.
    pub(crate) fn serves_no_streams(&self, addr: &str) {
        self.kept()
            .entry(addr.to_string())
            .or_default()
            .per_request_until = Some(Instant::now() + PER_REQUEST_FOR);
    }
}
