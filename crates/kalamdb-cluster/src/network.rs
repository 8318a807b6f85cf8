//! The internal RPC between nodes (docs/cluster.md §2). openraft's AppendEntries, Vote and
//! InstallSnapshot messages travel as MessagePack frames over long-lived connections to each
//! peer, shared by the node's groups ([`Streams`]): an HTTP/1.1 request `POST /raft/stream`
//! upgraded to [`STREAM_PROTOCOL`], then request and answer frames in turn (`frame.rs`; each
//! request names its group), so a message costs one write and one read instead of an HTTP
//! exchange. The same messages are also served one per HTTP request
//! (`POST /raft/{group}/{append|vote|snapshot}`), for members of an earlier version that do
//! not upgrade. Other routes: membership changes a member asks of a group's leader
//! (`POST /raft/{group}/members`, see [`crate::membership`]), the holds of a leadership
//! transfer (`POST /raft/{group}/hold`) and a leader's read index
//! (`POST /raft/{group}/read_index`, both in [`crate::leadership`]), and the engine's calls
//! (`POST /engine/{name}`, [`crate::calls`]). [`router`] serves a node's groups; [`Network`]
//! is the client side openraft uses to reach peers. With a cluster key, every
//! request carries it in [`KEY_HEADER`] and a request without it is refused (403): a client
//! that reaches the RPC port cannot append entries without the members' shared secret.

use crate::calls::CallSlot;
use crate::leadership::Holds;
use crate::streams::Connection;
pub use crate::streams::Streams;
use crate::types::{Member, TypeConfig, decode, encode};
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
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
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite, BufStream};

/// A node's groups by id, as the RPC routes find them.
pub type Groups = Arc<HashMap<u64, Raft<TypeConfig>>>;

pub use crate::frame::MAX_BODY_BYTES;

/// Snapshot chunk size: MessagePack writes bytes as arrays of small integers (up to 2x), so a
/// chunk stays far below [`MAX_BODY_BYTES`].
pub const SNAPSHOT_CHUNK_BYTES: u64 = 4 * 1024 * 1024;

/// Largest AppendEntries a node sends with more than one entry (bytes of the entries'
/// writes): above it openraft is told to send fewer entries at a time, so a follower catching
/// up on large entries gets them within the RPC timeout (one heartbeat interval).
pub const MAX_APPEND_BYTES: usize = 8 * 1024 * 1024;

/// The header carrying the cluster key.
pub const KEY_HEADER: &str = "x-kalamdb-cluster-key";

/// The protocol `POST /raft/stream` upgrades its connection to.
pub const STREAM_PROTOCOL: &str = "kalamdb-raft/1";

/// A stream connection that brings no request for this long is closed (a peer that vanished
/// without closing it; a live replication stream sends a heartbeat every interval).
const STREAM_IDLE: Duration = Duration::from_secs(600);

/// The messages openraft sends a peer, by their code in a stream frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Message {
    Append = 0,
    Vote = 1,
    Snapshot = 2,
}

impl Message {
    fn from_code(code: u8) -> Option<Self> {
        [Self::Append, Self::Vote, Self::Snapshot]
            .into_iter()
            .find(|m| *m as u8 == code)
    }

    /// Its route in the one-request-per-message form.
    fn path(self) -> &'static str {
        match self {
            Self::Append => "append",
            Self::Vote => "vote",
            Self::Snapshot => "snapshot",
        }
    }
}

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
        .route("/raft/stream", post(stream))
        .route(
            "/raft/{group}/append",
            post(|s: State<Served>, g: Path<u64>, b: Bytes| one(s, g, b, Message::Append)),
        )
        .route(
            "/raft/{group}/vote",
            post(|s: State<Served>, g: Path<u64>, b: Bytes| one(s, g, b, Message::Vote)),
        )
        .route(
            "/raft/{group}/snapshot",
            post(|s: State<Served>, g: Path<u64>, b: Bytes| one(s, g, b, Message::Snapshot)),
        )
        .route("/raft/{group}/members", post(members))
        .route("/raft/{group}/hold", post(hold))
        .route("/raft/{group}/read_index", post(read_index))
        .route("/engine/{name}", post(engine_call))
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

/// Why a request was not handled: its status and a text.
type Refused = (StatusCode, String);

/// Finds the group and decodes the request, or says why not.
fn request<T: DeserializeOwned>(
    groups: &Groups,
    group: u64,
    body: &[u8],
) -> Result<(Raft<TypeConfig>, T), Refused> {
    let raft = groups
        .get(&group)
        .cloned()
        .ok_or_else(|| (StatusCode::NOT_FOUND, format!("no group {group}")))?;
    let req = decode(body).map_err(|e| (StatusCode::BAD_REQUEST, e.to_string()))?;
    Ok((raft, req))
}

/// Handles message `kind` for `group`, encoded in `body`: the encoded answer, or why it was
/// not handled.
async fn handle(
    groups: &Groups,
    kind: Message,
    group: u64,
    body: &[u8],
) -> Result<Vec<u8>, Refused> {
    let answer = match kind {
        Message::Append => {
            let (raft, req) = request(groups, group, body)?;
            encode(&raft.append_entries(req).await)
        }
        Message::Vote => {
            let (raft, req) = request(groups, group, body)?;
            encode(&raft.vote(req).await)
        }
        Message::Snapshot => {
            let (raft, req) = request(groups, group, body)?;
            encode(&raft.install_snapshot(req).await)
        }
    };
    answer.map_err(|e| (StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))
}

/// One message in one HTTP request (peers of an earlier version).
async fn one(
    State(served): State<Served>,
    Path(group): Path<u64>,
    body: Bytes,
    kind: Message,
) -> Response {
    match handle(&served.groups, kind, group, &body).await {
        Ok(answer) => answer.into_response(),
        Err(refused) => refused.into_response(),
    }
}

/// Upgrades the connection to a stream of messages ([`STREAM_PROTOCOL`]).
async fn stream(State(served): State<Served>, mut request: axum::extract::Request) -> Response {
    let asked = request.headers().get(header::UPGRADE).is_some_and(|v| {
        v.as_bytes()
            .eq_ignore_ascii_case(STREAM_PROTOCOL.as_bytes())
    });
    if !asked {
        let why = format!("this route upgrades to {STREAM_PROTOCOL} only");
        return (StatusCode::BAD_REQUEST, why).into_response();
    }
    let upgrade = hyper::upgrade::on(&mut request);
    tokio::spawn(async move {
        if let Ok(io) = upgrade.await {
            serve_stream(&served.groups, hyper_util::rt::TokioIo::new(io)).await;
        }
    });
    let mut switching = Response::new(axum::body::Body::empty());
    *switching.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
    let headers = switching.headers_mut();
    headers.insert(
        header::CONNECTION,
        header::HeaderValue::from_static("upgrade"),
    );
    headers.insert(
        header::UPGRADE,
        header::HeaderValue::from_static(STREAM_PROTOCOL),
    );
    switching
}

/// Answers the request frames of one stream connection in turn, until the peer closes it.
async fn serve_stream<Io: AsyncRead + AsyncWrite + Unpin>(groups: &Groups, io: Io) {
    let mut io = BufStream::new(io);
    let mut request = Vec::new();
    while let Ok(Ok(true)) =
        tokio::time::timeout(STREAM_IDLE, crate::frame::read(&mut io, &mut request)).await
    {
        let answer = match crate::frame::split_request(&request) {
            Some((code, group, body)) => match Message::from_code(code) {
                Some(kind) => handle(groups, kind, group, body).await,
                None => Err((StatusCode::BAD_REQUEST, format!("no message {code}"))),
            },
            None => Err((StatusCode::BAD_REQUEST, "a frame too short".to_string())),
        };
        let written = match &answer {
            Ok(bytes) => crate::frame::write(&mut io, &[crate::frame::OK], bytes).await,
            Err((_, why)) => {
                crate::frame::write(&mut io, &[crate::frame::REFUSED], why.as_bytes()).await
            }
        };
        if written.is_err() {
            return;
        }
    }
}

async fn members(
    State(Served { groups, .. }): State<Served>,
    Path(group): Path<u64>,
    body: Bytes,
) -> Response {
    match request::<crate::membership::MemberChange>(&groups, group, &body) {
        Ok((raft, change)) => reply(&crate::membership::apply_here(&raft, &change).await),
        Err(r) => r.into_response(),
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
        Err(r) => r.into_response(),
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
        Err(r) => r.into_response(),
    }
}

/// The client side of one group's RPC: one pooled HTTP client for every peer, and the
/// node's kept stream connections ([`Streams`]).
#[derive(Debug, Clone)]
pub struct Network {
    http: reqwest::Client,
    group: u64,
    key: Option<Arc<str>>,
    scheme: &'static str,
    streams: Streams,
}

impl Network {
    /// The network of group `group`.
    pub fn new(http: reqwest::Client, group: u64) -> Self {
        Self {
            http,
            group,
            key: None,
            scheme: "http",
            streams: Streams::default(),
        }
    }

    /// Shares `streams` (the node's, so that its groups share connections to a peer).
    pub fn with_streams(mut self, streams: Streams) -> Self {
        self.streams = streams;
        self
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
        let base = format!("{}://{}/raft", self.scheme, node.rpc_addr);
        Peer {
            http: self.http.clone(),
            target,
            group: self.group,
            addr: node.rpc_addr.clone(),
            stream_url: format!("{base}/stream"),
            base: format!("{base}/{}", self.group),
            key: self.key.clone(),
            streams: self.streams.clone(),
            answer: Vec::new(),
        }
    }
}

/// One peer of one group, as openraft reaches it: each message on a stream connection taken
/// from the node's [`Streams`] (see the module doc).
#[derive(Debug)]
pub struct Peer {
    http: reqwest::Client,
    target: u64,
    group: u64,
    /// Its RPC address, the key of its connections in `streams`.
    addr: String,
    stream_url: String,
    /// The one-request-per-message routes of this group.
    base: String,
    key: Option<Arc<str>>,
    streams: Streams,
    /// The last answer frame read.
    answer: Vec<u8>,
}

type Rpc<T, E> = Result<T, RPCError<u64, Member, E>>;

/// Why a stream exchange failed.
enum Failure {
    /// The peer could not be reached.
    Unreachable(reqwest::Error),
    /// The peer serves no streams.
    NoStreams,
    /// Anything else: the connection is dropped.
    Broken(std::io::Error),
}

fn network_error<E>(e: &(impl std::error::Error + 'static)) -> RPCError<u64, Member, E>
where
    E: std::error::Error,
{
    RPCError::Network(NetworkError::new(e))
}

fn reqwest_error<E: std::error::Error>(e: reqwest::Error) -> RPCError<u64, Member, E> {
    if e.is_connect() {
        RPCError::Unreachable(Unreachable::new(&e))
    } else {
        network_error(&e)
    }
}

impl Peer {
    async fn send<Req, Resp, E>(
        &mut self,
        kind: Message,
        req: &Req,
        option: &RPCOption,
    ) -> Rpc<Resp, E>
    where
        Req: Serialize,
        Resp: DeserializeOwned,
        E: std::error::Error + DeserializeOwned,
    {
        let body = encode(req).map_err(|e| network_error(&e))?;
        if !self.streams.per_request(&self.addr) {
            let exchanged = tokio::time::timeout(option.hard_ttl(), self.exchange(kind, &body))
                .await
                .unwrap_or_else(|_| {
                    let why = format!("no answer from peer {} in time", self.target);
                    Err(Failure::Broken(std::io::Error::new(
                        std::io::ErrorKind::TimedOut,
                        why,
                    )))
                });
            match exchanged {
                Ok(()) => return self.stream_answer(),
                // An earlier version: one request per message, below.
                Err(Failure::NoStreams) => self.streams.serves_no_streams(&self.addr),
                Err(Failure::Unreachable(e)) => {
                    return Err(RPCError::Unreachable(Unreachable::new(&e)));
                }
                Err(Failure::Broken(e)) => return Err(network_error(&e)),
            }
        }
        let answer = self.post(kind, body, option).await?;
        Self::decode_answer(self.target, &answer)
    }

    /// The answer frame the last exchange read.
    fn stream_answer<Resp, E>(&self) -> Rpc<Resp, E>
    where
        Resp: DeserializeOwned,
        E: std::error::Error + DeserializeOwned,
    {
        match self.answer.split_first() {
            Some((&crate::frame::OK, answer)) => Self::decode_answer(self.target, answer),
            _ => {
                let text = self.answer.get(1..).unwrap_or_default();
                let why = std::io::Error::other(format!(
                    "peer {} refused a message of group {}: {}",
                    self.target,
                    self.group,
                    String::from_utf8_lossy(text)
                ));
                Err(network_error(&why))
            }
        }
    }

    fn decode_answer<Resp, E>(target: u64, bytes: &[u8]) -> Rpc<Resp, E>
    where
        Resp: DeserializeOwned,
        E: std::error::Error + DeserializeOwned,
    {
        let answer: Result<Resp, E> = decode(bytes).map_err(|e| network_error(&e))?;
        answer.map_err(|e| RPCError::RemoteError(RemoteError::new(target, e)))
    }

    /// Sends `body` as a `kind` frame on a stream connection and reads the answer frame into
    /// `self.answer`; the connection goes back to the node's [`Streams`] only when the
    /// exchange completed (a failed or cancelled one drops it, so no later read meets a stale
    /// answer). A kept connection that fails (the peer restarted, or closed it) is replaced
    /// by a new one for a second try: Raft messages may arrive twice.
    async fn exchange(&mut self, kind: Message, body: &[u8]) -> Result<(), Failure> {
        let head = crate::frame::request_head(kind as u8, self.group);
        if let Some(kept) = self.streams.take(&self.addr)
            && let Ok(connection) = self.exchange_on(kept, &head, body).await
        {
            self.streams.put(&self.addr, connection);
            return Ok(());
        }
        let fresh = self.open().await?;
        let connection = self.exchange_on(fresh, &head, body).await?;
        self.streams.put(&self.addr, connection);
        Ok(())
    }

    async fn exchange_on(
        &mut self,
        mut connection: Connection,
        head: &[u8],
        body: &[u8],
    ) -> Result<Connection, Failure> {
        crate::frame::write(&mut connection, head, body)
            .await
            .map_err(Failure::Broken)?;
        match crate::frame::read(&mut connection, &mut self.answer).await {
            Ok(true) => Ok(connection),
            Ok(false) => Err(Failure::Broken(std::io::Error::new(
                std::io::ErrorKind::UnexpectedEof,
                "the peer closed the connection",
            ))),
            Err(e) => Err(Failure::Broken(e)),
        }
    }

    async fn open(&self) -> Result<Connection, Failure> {
        let mut post = self
            .http
            .post(&self.stream_url)
            .header(header::CONNECTION, "upgrade")
            .header(header::UPGRADE, STREAM_PROTOCOL);
        if let Some(key) = &self.key {
            post = post.header(KEY_HEADER, key.as_ref());
        }
        let answer = post.send().await.map_err(|e| match e.is_connect() {
            true => Failure::Unreachable(e),
            false => Failure::Broken(std::io::Error::other(e)),
        })?;
        match answer.status() {
            StatusCode::SWITCHING_PROTOCOLS => {}
            StatusCode::NOT_FOUND => return Err(Failure::NoStreams),
            other => {
                return Err(Failure::Broken(std::io::Error::other(format!(
                    "peer {} answered {other} to {}",
                    self.target, self.stream_url
                ))));
            }
        }
        let io = answer
            .upgrade()
            .await
            .map_err(|e| Failure::Broken(std::io::Error::other(e)))?;
        Ok(BufStream::new(io))
    }

    /// Sends `body` in one HTTP request to the message's route; the answer's bytes.
    async fn post<E>(&self, kind: Message, body: Vec<u8>, option: &RPCOption) -> Rpc<Bytes, E>
    where
        E: std::error::Error,
    {
        let path = kind.path();
        let mut post = self
            .http
            .post(format!("{}/{path}", self.base))
            .timeout(option.hard_ttl());
        if let Some(key) = &self.key {
            post = post.header(KEY_HEADER, key.as_ref());
        }
        let sent = post.body(body).send().await.map_err(reqwest_error)?;
        if !sent.status().is_success() {
            // 404: the peer runs no such group (a different shard map): never silently retried
            // forever without a trace.
            let why = std::io::Error::other(format!(
                "peer {} answered {} for {}/{path}",
                self.target,
                sent.status(),
                self.base
            ));
            return Err(network_error(&why));
        }
        sent.bytes().await.map_err(|e| network_error(&e))
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
        self.send(Message::Append, &rpc, &option).await
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest<u64>,
        option: RPCOption,
    ) -> Rpc<VoteResponse<u64>, RaftError<u64>> {
        self.send(Message::Vote, &rpc, &option).await
    }

    async fn install_snapshot(
        &mut self,
        rpc: InstallSnapshotRequest<TypeConfig>,
        option: RPCOption,
    ) -> Rpc<InstallSnapshotResponse<u64>, RaftError<u64, InstallSnapshotError>> {
        self.send(Message::Snapshot, &rpc, &option).await
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
