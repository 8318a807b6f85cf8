//! The internal RPC between nodes (docs/cluster.md §2): openraft's AppendEntries, Vote and
//! InstallSnapshot messages as MessagePack bodies over HTTP, one route per message and group
//! (`POST /raft/{group}/{append|vote|snapshot}`), membership changes a member asks of a
//! group's leader (`POST /raft/{group}/members`, see [`crate::membership`]), the holds of a
//! leadership transfer (`POST /raft/{group}/hold`) and a leader's read index
//! (`POST /raft/{group}/read_index`, both in [`crate::leadership`]), and the engine's calls
//! (`POST /engine/{name}`, [`crate::calls`]). [`router`] serves a node's groups; [`Network`]
//! is the client side openraft uses to reach peers. With a cluster key, every
//! request carries it in [`KEY_HEADER`] and a request without it is refused (403): a client
//! that reaches the RPC port cannot append entries without the members' shared secret.

use crate::calls::CallSlot;
use crate::leadership::Holds;
use crate::types::{Member, TypeConfig, decode, encode};
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use openraft::Raft;
use openraft::error::{
    InstallSnapshotError, NetworkError, PayloadTooLarge, RPCError, RaftError, RemoteError,
    Unreachable,
};
use openraft::network::{RPCOption, RaftNetwork, RaftNetworkFactory};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse,
    VoteRequest, VoteResponse,
};
use serde::Serialize;
use serde::de::DeserializeOwned;
use std::collections::HashMap;
use std::sync::Arc;

/// A node's groups by id, as the RPC routes find them.
pub type Groups = Arc<HashMap<u64, Raft<TypeConfig>>>;

/// Largest RPC body a node accepts: above openraft's snapshot chunks (set to
/// [`SNAPSHOT_CHUNK_BYTES`] by the node) and its AppendEntries batches of large write batches.
pub const MAX_BODY_BYTES: usize = 256 * 1024 * 1024;

/// Snapshot chunk size: MessagePack writes bytes as arrays of small integers (up to 2x), so a
/// chunk stays far below [`MAX_BODY_BYTES`].
pub const SNAPSHOT_CHUNK_BYTES: u64 = 4 * 1024 * 1024;

/// Largest AppendEntries a node sends with more than one entry (bytes of the entries'
/// writes): above it openraft is told to send fewer entries at a time, so a follower catching
/// up on large entries gets them within the RPC timeout (one heartbeat interval).
pub const MAX_APPEND_BYTES: usize = 8 * 1024 * 1024;

/// The header carrying the cluster key.
pub const KEY_HEADER: &str = "x-kalamdb-cluster-key";

/// Routes serving `groups` to peers.
pub fn router(groups: Groups) -> axum::Router {
    router_with_key(groups, Holds::default(), CallSlot::default(), None)
}

/// What the routes serve: the groups, and the holds transfers put on them.
#[derive(Clone)]
struct Served {
    groups: Groups,
    holds: Holds,
    calls: CallSlot,
}

/// [`router`] with this node's `holds` and engine `calls`, refusing requests that do not
/// carry `key`.
pub fn router_with_key(
    groups: Groups,
    holds: Holds,
    calls: CallSlot,
    key: Option<Arc<str>>,
) -> axum::Router {
    axum::Router::new()
        .route("/raft/{group}/append", axum::routing::post(append))
        .route("/raft/{group}/vote", axum::routing::post(vote))
        .route("/raft/{group}/snapshot", axum::routing::post(snapshot))
        .route("/raft/{group}/members", axum::routing::post(members))
        .route("/raft/{group}/hold", axum::routing::post(hold))
        .route("/raft/{group}/read_index", axum::routing::post(read_index))
        .route("/engine/{name}", axum::routing::post(engine_call))
        .layer(axum::extract::DefaultBodyLimit::max(MAX_BODY_BYTES))
        .with_state(Served {
            groups,
            holds,
            calls,
        })
        .layer(axum::middleware::from_fn(
            move |request: axum::extract::Request, next: axum::middleware::Next| {
                let key = key.clone();
                async move {
                    let given = request
                        .headers()
                        .get(KEY_HEADER)
                        .map(|v| v.as_bytes())
                        .unwrap_or_default();
                    match key {
                        Some(k) if !same(k.as_bytes(), given) => {
                            (StatusCode::FORBIDDEN, "cluster key required").into_response()
                        }
                        _ => next.run(request).await,
                    }
                }
            },
        ))
}

/// Compares in time independent of where the inputs differ.
fn same(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

fn reply<T: Serialize>(value: &T) -> Response {
    match encode(value) {
        Ok(bytes) => bytes.into_response(),
        Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, e.to_string()).into_response(),
    }
}

/// Finds the group and decodes the request, or answers why not.
fn request<T: DeserializeOwned>(
    groups: &Groups,
    group: u64,
    body: &[u8],
) -> Result<(Raft<TypeConfig>, T), Response> {
    let raft = groups
        .get(&group)
        .cloned()
        .ok_or_else(|| (StatusCode::NOT_FOUND, format!("no group {group}")).into_response())?;
    let req = decode(body).map_err(|e| (StatusCode::BAD_REQUEST, e.to_string()).into_response())?;
    Ok((raft, req))
}

async fn append(
    State(Served { groups, .. }): State<Served>,
    Path(group): Path<u64>,
    body: Bytes,
) -> Response {
    match request::<AppendEntriesRequest<TypeConfig>>(&groups, group, &body) {
        Ok((raft, req)) => reply(&raft.append_entries(req).await),
        Err(r) => r,
    }
}

async fn vote(
    State(Served { groups, .. }): State<Served>,
    Path(group): Path<u64>,
    body: Bytes,
) -> Response {
    match request::<VoteRequest<u64>>(&groups, group, &body) {
        Ok((raft, req)) => reply(&raft.vote(req).await),
        Err(r) => r,
    }
}

async fn snapshot(
    State(Served { groups, .. }): State<Served>,
    Path(group): Path<u64>,
    body: Bytes,
) -> Response {
    match request::<InstallSnapshotRequest<TypeConfig>>(&groups, group, &body) {
        Ok((raft, req)) => reply(&raft.install_snapshot(req).await),
        Err(r) => r,
    }
}

async fn members(
    State(Served { groups, .. }): State<Served>,
    Path(group): Path<u64>,
    body: Bytes,
) -> Response {
    match request::<crate::membership::MemberChange>(&groups, group, &body) {
        Ok((raft, change)) => reply(&crate::membership::apply_here(&raft, &change).await),
        Err(r) => r,
    }
}

/// The group's read index as its leader confirms it (see `ClusterNode::read_index`).
async fn read_index(
    State(Served { groups, holds, .. }): State<Served>,
    Path(group): Path<u64>,
    body: Bytes,
) -> Response {
    match request::<()>(&groups, group, &body) {
        Ok((raft, ())) => {
            let held = holds.writes_paused(group);
            let timeout = crate::leadership::READ_INDEX_TIMEOUT;
            reply(&crate::leadership::confirmed_read_index(&raft, held, timeout).await)
        }
        Err(r) => r,
    }
}

async fn engine_call(
    State(Served { calls, .. }): State<Served>,
    Path(name): Path<String>,
    body: Bytes,
) -> Response {
    let Some(engine) = calls.get() else {
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            "the engine is not open yet",
        )
            .into_response();
    };
    match engine.call(name, body.to_vec()).await {
        Ok(answer) => answer.into_response(),
        Err(why) => (StatusCode::INTERNAL_SERVER_ERROR, why).into_response(),
    }
}

async fn hold(
    State(Served { groups, holds, .. }): State<Served>,
    Path(group): Path<u64>,
    body: Bytes,
) -> Response {
    match request::<u64>(&groups, group, &body) {
        Ok((raft, millis)) => {
            holds.hold(group, &raft, millis);
            reply(&Ok::<(), String>(()))
        }
        Err(r) => r,
    }
}

/// The client side of one group's RPC: one pooled HTTP client for every peer.
#[derive(Debug, Clone)]
pub struct Network {
    http: reqwest::Client,
    group: u64,
    key: Option<Arc<str>>,
    scheme: &'static str,
}

impl Network {
    /// The network of group `group`.
    pub fn new(http: reqwest::Client, group: u64) -> Self {
        Self {
            http,
            group,
            key: None,
            scheme: "http",
        }
    }

    /// Reaches peers over `https` (with an `http` client configured for mTLS, [`crate::tls`]).
    pub fn with_tls(mut self, tls: bool) -> Self {
        self.scheme = if tls { "https" } else { "http" };
        self
    }

    /// Sends `key` with every request (see [`router_with_key`]).
    pub fn with_key(mut self, key: Option<Arc<str>>) -> Self {
        self.key = key;
        self
    }
}

impl RaftNetworkFactory<TypeConfig> for Network {
    type Network = Peer;

    async fn new_client(&mut self, target: u64, node: &Member) -> Peer {
        Peer {
            http: self.http.clone(),
            target,
            base: format!("{}://{}/raft/{}", self.scheme, node.rpc_addr, self.group),
            key: self.key.clone(),
        }
    }
}

/// One peer of one group.
#[derive(Debug)]
pub struct Peer {
    http: reqwest::Client,
    target: u64,
    base: String,
    key: Option<Arc<str>>,
}

type Rpc<T, E> = Result<T, RPCError<u64, Member, E>>;

impl Peer {
    async fn send<Req, Resp, E>(&self, path: &str, req: &Req, option: &RPCOption) -> Rpc<Resp, E>
    where
        Req: Serialize,
        Resp: DeserializeOwned,
        E: std::error::Error + DeserializeOwned,
    {
        let body = encode(req).map_err(|e| RPCError::Network(NetworkError::new(&e)))?;
        let mut post = self
            .http
            .post(format!("{}/{path}", self.base))
            .timeout(option.hard_ttl());
        if let Some(key) = &self.key {
            post = post.header(KEY_HEADER, key.as_ref());
        }
        let sent = post.body(body).send().await.map_err(|e| {
            if e.is_connect() {
                RPCError::Unreachable(Unreachable::new(&e))
            } else {
                RPCError::Network(NetworkError::new(&e))
            }
        })?;
        if !sent.status().is_success() {
            // 404: the peer runs no such group (a different shard map): never silently retried
            // forever without a trace.
            let why = std::io::Error::other(format!(
                "peer {} answered {} for {}/{path}",
                self.target,
                sent.status(),
                self.base
            ));
            return Err(RPCError::Network(NetworkError::new(&why)));
        }
        let bytes = sent
            .bytes()
            .await
            .map_err(|e| RPCError::Network(NetworkError::new(&e)))?;
        let answer: Result<Resp, E> =
            decode(&bytes).map_err(|e| RPCError::Network(NetworkError::new(&e)))?;
        answer.map_err(|e| RPCError::RemoteError(RemoteError::new(self.target, e)))
    }
}

/// How many entries of `rpc` to send at a time when it carries more than one and they exceed
/// [`MAX_APPEND_BYTES`] together; `None` to send it as it is.
fn fewer_entries(rpc: &AppendEntriesRequest<TypeConfig>) -> Option<u64> {
    if rpc.entries.len() < 2 {
        return None;
    }
    let bytes: usize = rpc.entries.iter().map(crate::types::entry_bytes).sum();
    (bytes > MAX_APPEND_BYTES).then(|| {
        let fit = rpc.entries.len() * MAX_APPEND_BYTES / bytes;
        fit.clamp(1, rpc.entries.len() - 1) as u64
    })
}

impl RaftNetwork<TypeConfig> for Peer {
    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<TypeConfig>,
        option: RPCOption,
    ) -> Rpc<AppendEntriesResponse<u64>, RaftError<u64>> {
        if let Some(fit) = fewer_entries(&rpc) {
            return Err(RPCError::PayloadTooLarge(
                PayloadTooLarge::new_entries_hint(fit),
            ));
        }
        self.send("append", &rpc, &option).await
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest<u64>,
        option: RPCOption,
    ) -> Rpc<VoteResponse<u64>, RaftError<u64>> {
        self.send("vote", &rpc, &option).await
    }

    async fn install_snapshot(
        &mut self,
        rpc: InstallSnapshotRequest<TypeConfig>,
        option: RPCOption,
    ) -> Rpc<InstallSnapshotResponse<u64>, RaftError<u64, InstallSnapshotError>> {
        self.send("snapshot", &rpc, &option).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::types::Command;
    use kalamdb_store::WriteBatch;
    use openraft::{CommittedLeaderId, Entry, EntryPayload, LogId, Vote};

    fn append(sizes: &[usize]) -> AppendEntriesRequest<TypeConfig> {
        let entries = sizes
            .iter()
            .enumerate()
            .map(|(i, size)| {
                let mut batch = WriteBatch::new();
                batch.put("t", vec![1], vec![0; *size]);
                Entry {
                    log_id: LogId::new(CommittedLeaderId::new(1, 1), i as u64 + 1),
                    payload: EntryPayload::Normal(Command::write(batch)),
                }
            })
            .collect();
        AppendEntriesRequest {
            vote: Vote::new_committed(1, 1),
            prev_log_id: None,
            entries,
            leader_commit: None,
        }
    }

    #[test]
    fn large_appends_ask_openraft_for_fewer_entries() {
        let mb = 1024 * 1024;
        assert_eq!(fewer_entries(&append(&[100; 300])), None);
        // One entry goes whatever its size.
        assert_eq!(fewer_entries(&append(&[20 * mb])), None);
        // 10 entries of a little over 4 MB: one at a time (two would pass 8 MB).
        assert_eq!(fewer_entries(&append(&[4 * mb; 10])), Some(1));
        assert_eq!(fewer_entries(&append(&[mb; 20])), Some(7));
        assert_eq!(fewer_entries(&append(&[20 * mb, 100])), Some(1));
    }
}
