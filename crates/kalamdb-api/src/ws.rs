//! `GET /v1/ws`: the WebSocket transport of live queries (`docs/protocol.md` §6).
//!
//! Authenticates (upgrade header or `authenticate` message), then pumps client messages into
//! the [`kalamdb_live::LiveQueryManager`] and its outbound queue onto the socket. Messages of 512 bytes or
//! more go out gzip-compressed as binary frames unless the client asked `?compress=false`. The
//! server never pings; a client silent for longer than the idle timeout is closed with 1000.

use crate::ApiState;
use crate::auth::bearer_token;
use axum::extract::ws::{CloseFrame, Message, Utf8Bytes, WebSocket, WebSocketUpgrade};
use axum::extract::{Query, State};
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use flate2::Compression;
use flate2::write::GzEncoder;
use futures::SinkExt;
use kalamdb_commons::ErrorCode;
use kalamdb_commons::ws::{ClientMessage, ProtocolOptions, ServerMessage};
use kalamdb_core::auth::Identity;
use kalamdb_live::{CloseReason, Connection, ConnectionLimits, Outbound};
use std::collections::HashMap;
use std::io::Write;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Messages of this size or more are gzip-compressed (unless `?compress=false`).
const COMPRESS_AT: usize = 512;
/// Socket read buffer (client messages are small).
const READ_BUFFER: usize = 8 * 1024;
/// Most queued messages written with one flush.
const WRITE_BATCH: usize = 256;
/// How often silence is checked.
const HEARTBEAT_CHECK: Duration = Duration::from_secs(1);

/// The URL of this transport on a server bound to `addr` (an unspecified address, listening
/// on every interface, is shown as `localhost`).
pub fn url(addr: SocketAddr) -> String {
    if addr.ip().is_unspecified() {
        format!("ws://localhost:{}/v1/ws", addr.port())
    } else {
        format!("ws://{addr}/v1/ws")
    }
}

/// The upgrade handler.
pub async fn upgrade(
    State(state): State<ApiState>,
    Query(params): Query<HashMap<String, String>>,
    headers: HeaderMap,
    slot: Option<axum::Extension<crate::ConnectionSlot>>,
    ws: WebSocketUpgrade,
) -> Response {
    if !state.cors.allows_upgrade(&headers) {
        let origin = headers
            .get(axum::http::header::ORIGIN)
            .and_then(|o| o.to_str().ok())
            .unwrap_or("?");
        let body = serde_json::json!({
            "error": "origin_not_allowed",
            "message": format!("Origin {origin} is not allowed: add it to [security.cors] allowed_origins"),
        });
        return (axum::http::StatusCode::FORBIDDEN, axum::Json(body)).into_response();
    }
    let compress = params.get("compress").is_none_or(|v| v != "false");
    let token = bearer_token(&headers).ok().map(str::to_string);
    let max = state.websocket.max_message_bytes;
    // Oversized messages are answered by us, so the socket's own limit sits above ours.
    ws.max_message_size(max.saturating_mul(4))
        // tungstenite zeroes its whole read buffer on every read attempt, and the pump tries a
        // read each time it wakes: 128 KiB (the default) was the top cost of change delivery.
        .read_buffer_size(READ_BUFFER)
        .on_upgrade(move |socket| async move {
            // The connection stays counted against the server's limits while the socket is open.
            let _slot = slot;
            session(state, socket, token, compress).await
        })
}

/// Sends one server message, gzip-compressed when large.
async fn send(socket: &mut WebSocket, text: &str, compress: bool) -> bool {
    socket.send(frame(text, compress)).await.is_ok()
}

/// The frame of one server message: gzip-compressed binary when large, else text.
fn frame(text: &str, compress: bool) -> Message {
    if compress && text.len() >= COMPRESS_AT {
        let mut gz = GzEncoder::new(Vec::with_capacity(text.len() / 3), Compression::fast());
        match gz.write_all(text.as_bytes()).and_then(|_| gz.finish()) {
            Ok(bytes) if bytes.len() < text.len() => Message::Binary(bytes.into()),
            _ => Message::Text(Utf8Bytes::from(text)),
        }
    } else {
        Message::Text(Utf8Bytes::from(text))
    }
}

/// Writes `first` and whatever else is queued (up to a bound) with one flush: a change fanned
/// out to many subscriptions of one socket costs one write, not one per subscription.
async fn write_queued(
    socket: &mut WebSocket,
    first: &str,
    rx: &mut tokio::sync::mpsc::Receiver<Outbound>,
    compress: bool,
) -> Result<(), axum::Error> {
    socket.feed(frame(first, compress)).await?;
    for _ in 0..WRITE_BATCH {
        match rx.try_recv() {
            Ok(Outbound::Message(text)) => socket.feed(frame(&text, compress)).await?,
            Err(_) => break,
        }
    }
    socket.flush().await
}

/// Sends a message as uncompressed text (auth replies are always text).
async fn send_text(socket: &mut WebSocket, msg: &ServerMessage) -> bool {
    let text = serde_json::to_string(msg).unwrap_or_default();
    socket.send(Message::Text(text.into())).await.is_ok()
}

async fn close(socket: &mut WebSocket, code: u16, reason: &str) {
    // A close reason is at most 123 bytes.
    let mut end = reason.len().min(123);
    while !reason.is_char_boundary(end) {
        end -= 1;
    }
    let reason = &reason[..end];
    let _ = socket
        .send(Message::Close(Some(CloseFrame {
            code,
            reason: Utf8Bytes::from(reason),
        })))
        .await;
}

/// After the client's Close: the WebSocket layer has queued the echo (same code) but sends it
/// only when the socket is driven again, so read once more (it flushes the echo, then reports
/// the closed connection), bounded in case the peer vanished.
async fn finish_close(socket: &mut WebSocket) {
    let _ = tokio::time::timeout(Duration::from_secs(1), socket.recv()).await;
}

fn error(subscription_id: &str, code: ErrorCode, message: impl Into<String>) -> ServerMessage {
    ServerMessage::Error {
        subscription_id: subscription_id.into(),
        code: code.as_str().into(),
        message: message.into(),
    }
}

async fn session(state: ApiState, mut socket: WebSocket, token: Option<String>, compress: bool) {
    let Some((identity, protocol)) = authenticate(&state, &mut socket, token).await else {
        return;
    };
    let ok = send_text(
        &mut socket,
        &ServerMessage::AuthSuccess {
            user: identity.user_id.to_string(),
            role: identity.role.to_string(),
            protocol,
        },
    )
    .await;
    if !ok {
        return;
    }
    let limits = ConnectionLimits {
        outbound_queue: state.websocket.outbound_queue,
        max_subscriptions: state.websocket.max_subscriptions_per_connection,
    };
    let (conn, rx) = state.live.connect(identity, limits);
    pump(&state, &mut socket, &conn, rx, compress).await;
    state.live.disconnect(&conn);
}

/// Authenticates by the upgrade's token, else by an `authenticate` message.
async fn authenticate(
    state: &ApiState,
    socket: &mut WebSocket,
    token: Option<String>,
) -> Option<(Identity, ProtocolOptions)> {
    let refuse = |message: &str| ServerMessage::AuthError {
        message: message.into(),
    };
    if let Some(token) = token {
        return match state.app.auth().identify(&token).await {
            Ok(identity) => Some((identity, ProtocolOptions::default())),
            Err(_) => {
                send_text(socket, &refuse("Invalid credentials")).await;
                close(socket, 1008, "Authentication failed").await;
                None
            }
        };
    }
    let auth_timeout = state.websocket.auth_timeout_secs;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(auth_timeout);
    loop {
        let msg = match tokio::time::timeout_at(deadline, socket.recv()).await {
            Err(_) => {
                let m = format!(
                    "Authentication timeout - no auth message received within {auth_timeout} seconds"
                );
                send_text(socket, &refuse(&m)).await;
                close(socket, 1008, "Authentication failed").await;
                return None;
            }
            Ok(None | Some(Err(_))) => return None,
            Ok(Some(Ok(m))) => m,
        };
        let text = match msg {
            Message::Text(t) => t,
            Message::Ping(p) => {
                let _ = socket.send(Message::Pong(p)).await;
                continue;
            }
            Message::Close(_) => {
                finish_close(socket).await;
                return None;
            }
            _ => continue,
        };
        match serde_json::from_str::<ClientMessage>(&text) {
            Ok(ClientMessage::Authenticate {
                method,
                token,
                protocol,
            }) => {
                let identity = match (method == "jwt").then_some(token).flatten() {
                    Some(t) => state.app.auth().identify(&t).await.ok(),
                    None => None,
                };
                return match identity {
                    Some(identity) => Some((
                        identity,
                        ProtocolOptions {
                            // Only JSON is spoken; the client adopts what we echo.
                            serialization: "json".into(),
                            compression: protocol.compression,
                        },
                    )),
                    None => {
                        send_text(socket, &refuse("Invalid credentials")).await;
                        close(socket, 1008, "Authentication failed").await;
                        None
                    }
                };
            }
            Ok(ClientMessage::Subscribe { .. }) => {
                let e = error("subscribe", ErrorCode::AuthRequired, "Authenticate first");
                send_text(socket, &e).await;
            }
            Ok(_) => {}
            Err(e) => {
                close(socket, 1011, &format!("Invalid message: {e}")).await;
                return None;
            }
        }
    }
}

/// Counts client messages per one-second window.
struct RateWindow {
    start: Instant,
    count: u32,
    limit: u32,
}

impl RateWindow {
    fn allow(&mut self) -> bool {
        if self.start.elapsed() >= Duration::from_secs(1) {
            self.start = Instant::now();
            self.count = 0;
        }
        self.count += 1;
        self.count <= self.limit
    }
}

async fn pump(
    state: &ApiState,
    socket: &mut WebSocket,
    conn: &Arc<Connection>,
    mut rx: tokio::sync::mpsc::Receiver<Outbound>,
    compress: bool,
) {
    let cfg = &state.websocket;
    let (max_message, client_timeout) = (
        cfg.max_message_bytes,
        Duration::from_secs(cfg.client_timeout_secs),
    );
    let mut last_seen = Instant::now();
    let mut rate = RateWindow {
        start: Instant::now(),
        count: 0,
        limit: cfg.max_messages_per_sec,
    };
    let mut heartbeat = tokio::time::interval(HEARTBEAT_CHECK);
    loop {
        tokio::select! {
            incoming = socket.recv() => {
                let msg = match incoming {
                    None | Some(Err(_)) => return,
                    Some(Ok(m)) => m,
                };
                last_seen = Instant::now();
                let text = match msg {
                    Message::Text(t) => t,
                    Message::Binary(_) => {
                        let e = error("protocol", ErrorCode::UnsupportedData, "Binary not supported");
                        conn_send(socket, &e, compress).await;
                        continue;
                    }
                    Message::Ping(p) => {
                        let _ = socket.send(Message::Pong(p)).await;
                        continue;
                    }
                    Message::Pong(_) => continue,
                    Message::Close(_) => {
                        finish_close(socket).await;
                        return;
                    }
                };
                if text.len() > max_message {
                    let e = error("protocol", ErrorCode::MessageTooLarge, format!(
                        "message of {} bytes exceeds the limit of {max_message}", text.len()));
                    conn_send(socket, &e, compress).await;
                    continue;
                }
                if !rate.allow() {
                    let e = error("rate_limit", ErrorCode::RateLimitExceeded, format!(
                        "more than {} messages per second; message dropped", rate.limit));
                    conn_send(socket, &e, compress).await;
                    continue;
                }
                match serde_json::from_str::<ClientMessage>(&text) {
                    Ok(msg) => {
                        handle(state, socket, conn, msg).await;
                        // The client waited on us meanwhile (a large initial load, say):
                        // its silence counts from our answer, not from its request.
                        last_seen = Instant::now();
                    }
                    Err(e) => {
                        close(socket, 1011, &format!("Invalid message: {e}")).await;
                        return;
                    }
                }
            }
            out = rx.recv() => match out {
                Some(Outbound::Message(text)) => {
                    // A client that stops reading blocks this write; once its queue has
                    // overflowed too, the connection is dropped.
                    // A write that cannot finish within the idle timeout means a dead peer.
                    let write = tokio::time::timeout(
                        client_timeout,
                        write_queued(socket, &text, &mut rx, compress),
                    );
                    tokio::select! {
                        written = write => {
                            if !matches!(written, Ok(Ok(()))) {
                                return;
                            }
                        }
                        _ = overflowed(conn) => return,
                    }
                }
                None => return,
            },
            why = conn.closed() => {
                let (code, message, close_code, reason) = match why {
                    CloseReason::Overflow => (ErrorCode::SubscriptionFailed,
                        "the connection fell too far behind its changes and was closed",
                        1011, "Outbound queue overflow"),
                    CloseReason::Revoked => (ErrorCode::Unauthorized,
                        "the user was dropped or given another role; sign in again",
                        1008, "Credentials revoked"),
                };
                conn_send(socket, &error("protocol", code, message), compress).await;
                close(socket, close_code, reason).await;
                return;
            }
            _ = heartbeat.tick() => {
                if last_seen.elapsed() > client_timeout {
                    close(socket, 1000, "Heartbeat timeout").await;
                    return;
                }
            }
        }
    }
}

/// Resolves only if the connection overflowed: a stuck write is abandoned then, while a
/// revoke waits for the write in flight and is answered with its error and close after it.
async fn overflowed(conn: &Connection) {
    if conn.closed().await != CloseReason::Overflow {
        std::future::pending::<()>().await;
    }
}

async fn conn_send(socket: &mut WebSocket, msg: &ServerMessage, compress: bool) {
    let text = serde_json::to_string(msg).unwrap_or_default();
    send(socket, &text, compress).await;
}

async fn handle(
    state: &ApiState,
    socket: &mut WebSocket,
    conn: &Arc<Connection>,
    msg: ClientMessage,
) {
    match msg {
        ClientMessage::Authenticate { protocol, .. } => {
            let again = ServerMessage::AuthSuccess {
                user: conn.identity.user_id.to_string(),
                role: conn.identity.role.to_string(),
                protocol,
            };
            send_text(socket, &again).await;
        }
        ClientMessage::Subscribe { subscription } => {
            state.live.subscribe(conn, subscription).await;
        }
        ClientMessage::NextBatch {
            subscription_id, ..
        } => state.live.next_batch(conn, &subscription_id),
        ClientMessage::Unsubscribe { subscription_id } => {
            state.live.unsubscribe(conn, &subscription_id);
        }
        ClientMessage::Ping => {}
    }
}
