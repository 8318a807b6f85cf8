//! `POST /v1/api/topics/consume` and `POST /v1/api/topics/ack` (`docs/protocol.md` §7.1): the
//! routes the official SDKs' topic consumers poll and acknowledge through, with their request
//! and response shapes; a fetch that finds nothing waits for the next message up to its
//! `timeout_seconds` (long-poll). `POST /v1/api/topics/publish` appends messages directly.
//! The topics are `kalamdb_core::topics`.

use crate::ApiState;
use crate::auth::bearer_identity;
use crate::envelope::sql_error;
use axum::Json;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use base64::Engine;
use kalamdb_catalog::KalamError;
use kalamdb_commons::ErrorCode;
use kalamdb_core::sql::topics::MAX_CONSUME;
use kalamdb_core::topics::Start;
use serde::Deserialize;
use serde_json::{Value, json};
use std::time::Instant;

/// `POST /v1/api/topics/consume`.
#[derive(Debug, Deserialize)]
struct ConsumeRequest {
    topic_id: String,
    #[serde(default)]
    group_id: Option<String>,
    #[serde(default)]
    start: Option<Value>,
    #[serde(default)]
    limit: Option<u64>,
    #[serde(default)]
    partition_id: Option<u32>,
    /// How long a fetch that finds nothing waits for a message (capped at
    /// [`MAX_WAIT_SECS`]; absent or 0: answer at once).
    #[serde(default)]
    timeout_seconds: Option<Value>,
}

/// Longest long-poll wait: under the SDKs' 30 s request timeout.
const MAX_WAIT_SECS: f64 = 25.0;

/// `POST /v1/api/topics/publish`.
#[derive(Debug, Deserialize)]
struct PublishRequest {
    topic_id: String,
    messages: Vec<PublishMessage>,
}

/// One published message: `payload` is stored as its JSON text, `payload_base64` as bytes.
#[derive(Debug, Deserialize)]
struct PublishMessage {
    #[serde(default)]
    key: Option<String>,
    #[serde(default)]
    payload: Option<Value>,
    #[serde(default)]
    payload_base64: Option<String>,
}

/// Most messages one publish request carries.
const MAX_PUBLISH: usize = 10_000;

/// `POST /v1/api/topics/ack`.
#[derive(Debug, Deserialize)]
struct AckRequest {
    topic_id: String,
    group_id: String,
    #[serde(default)]
    partition_id: u32,
    upto_offset: u64,
}

/// `"Latest"`, `"Earliest"` (any case) or `{"Offset": n}`.
fn start_of(v: Option<&Value>) -> Result<Start, String> {
    match v {
        None | Some(Value::Null) => Ok(Start::Latest),
        Some(Value::String(s)) if s.eq_ignore_ascii_case("latest") => Ok(Start::Latest),
        Some(Value::String(s)) if s.eq_ignore_ascii_case("earliest") => Ok(Start::Earliest),
        Some(Value::Object(o)) => o
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case("offset"))
            .and_then(|(_, n)| n.as_u64())
            .map(Start::Offset)
            .ok_or_else(|| "start must be {\"Offset\": n} with a whole number".into()),
        Some(other) => Err(format!(
            "start must be \"Latest\", \"Earliest\" or {{\"Offset\": n}}, not {other}"
        )),
    }
}

/// The caller and the JSON body of a topics request; the error response otherwise.
async fn authed_body<T: serde::de::DeserializeOwned>(
    state: &ApiState,
    headers: &HeaderMap,
    body: &[u8],
    start: Instant,
) -> Result<(kalamdb_core::auth::Identity, T), Box<Response>> {
    let identity = bearer_identity(state, headers)
        .await
        .map_err(|(code, msg)| Box::new(sql_error(code, msg, None, start)))?;
    let request = serde_json::from_slice(body).map_err(|e| {
        Box::new(sql_error(
            ErrorCode::InvalidInput,
            format!("Invalid JSON body: {e}"),
            None,
            start,
        ))
    })?;
    Ok((identity, request))
}

fn error(e: KalamError, start: Instant) -> Response {
    let code = match &e {
        KalamError::NotFound { .. } => ErrorCode::NotFound,
        other => other.code(),
    };
    sql_error(code, e.to_string(), None, start)
}

/// The consume handler.
pub async fn consume(State(state): State<ApiState>, headers: HeaderMap, body: Bytes) -> Response {
    let start = Instant::now();
    let (identity, request): (_, ConsumeRequest) =
        match authed_body(&state, &headers, &body, start).await {
            Ok(r) => r,
            Err(response) => return *response,
        };
    let from = match start_of(request.start.as_ref()) {
        Ok(s) => s,
        Err(msg) => return sql_error(ErrorCode::InvalidInput, msg, None, start),
    };
    let limit = request.limit.unwrap_or(100);
    if limit == 0 || limit > MAX_CONSUME {
        return sql_error(
            ErrorCode::InvalidInput,
            format!("limit must be between 1 and {MAX_CONSUME}"),
            None,
            start,
        );
    }
    let topics = state.app.topics();
    let (group, partition) = (
        request.group_id.as_deref().filter(|g| !g.is_empty()),
        request.partition_id.unwrap_or(0),
    );
    let fetch_now = |from: Start| {
        topics.consume(
            &identity,
            &request.topic_id,
            group,
            partition,
            from,
            limit as usize,
        )
    };
    let mut fetch = match fetch_now(from).await {
        Ok(f) => f,
        Err(e) => return error(e, start),
    };
    let wait = request
        .timeout_seconds
        .as_ref()
        .and_then(Value::as_f64)
        .unwrap_or(0.0)
        .clamp(0.0, MAX_WAIT_SECS);
    if fetch.messages.is_empty() && wait > 0.0 {
        let timeout = std::time::Duration::from_secs_f64(wait);
        topics
            .wait_for(&request.topic_id, partition, fetch.next_offset, timeout)
            .await;
        // From where the first read ended ("Latest" would have moved on meanwhile).
        fetch = match fetch_now(Start::Offset(fetch.next_offset)).await {
            Ok(f) => f,
            Err(e) => return error(e, start),
        };
    }
    let has_more = fetch.messages.len() as u64 == limit;
    let messages: Vec<Value> = fetch
        .messages
        .into_iter()
        .map(|m| {
            json!({
                "topic_id": request.topic_id,
                "partition_id": m.partition,
                "offset": m.offset,
                "key": m.message.key,
                "op": m.message.op.as_str(),
                "timestamp_ms": m.message.ts_ms.max(0),
                "payload": base64::engine::general_purpose::STANDARD.encode(&m.message.payload),
                "user": m.message.user,
                "source_table": m.message.source,
            })
        })
        .collect();
    Json(json!({
        "messages": messages,
        "next_offset": fetch.next_offset,
        "has_more": has_more,
    }))
    .into_response()
}

/// The ack handler.
pub async fn ack(State(state): State<ApiState>, headers: HeaderMap, body: Bytes) -> Response {
    let start = Instant::now();
    let (identity, request): (_, AckRequest) =
        match authed_body(&state, &headers, &body, start).await {
            Ok(r) => r,
            Err(response) => return *response,
        };
    let acked = state.app.topics().ack(
        &identity,
        &request.topic_id,
        &request.group_id,
        request.partition_id,
        request.upto_offset,
    );
    match acked.await {
        Ok(done) => Json(json!({"success": true, "acknowledged_offset": done})).into_response(),
        Err(e) => error(e, start),
    }
}

/// The publish handler: `{"topic_id", "messages": [{"key"?, "payload"? | "payload_base64"?}]}`
/// → `{"offsets": [{"partition_id", "offset"}]}`.
pub async fn publish(State(state): State<ApiState>, headers: HeaderMap, body: Bytes) -> Response {
    let start = Instant::now();
    let (identity, request): (_, PublishRequest) =
        match authed_body(&state, &headers, &body, start).await {
            Ok(r) => r,
            Err(response) => return *response,
        };
    let bad = |msg: String| sql_error(ErrorCode::InvalidInput, msg, None, start);
    if request.messages.is_empty() || request.messages.len() > MAX_PUBLISH {
        return bad(format!("messages must hold 1 to {MAX_PUBLISH} messages"));
    }
    let mut messages = Vec::with_capacity(request.messages.len());
    for m in request.messages {
        let payload = match (m.payload, m.payload_base64) {
            (Some(v), None) => v.to_string().into_bytes(),
            (None, Some(b)) => match base64::engine::general_purpose::STANDARD.decode(b) {
                Ok(bytes) => bytes,
                Err(e) => return bad(format!("payload_base64 is not base64: {e}")),
            },
            _ => return bad("each message needs exactly one of payload, payload_base64".into()),
        };
        messages.push((m.key, payload));
    }
    let placed = state
        .app
        .topics()
        .publish(&identity, state.app.tables(), &request.topic_id, messages)
        .await;
    match placed {
        Ok(placed) => {
            let offsets: Vec<Value> = placed
                .into_iter()
                .map(|(p, o)| json!({"partition_id": p, "offset": o}))
                .collect();
            Json(json!({ "offsets": offsets })).into_response()
        }
        Err(e) => error(e, start),
    }
}
