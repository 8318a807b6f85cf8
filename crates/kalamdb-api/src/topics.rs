//! `POST /v1/api/topics/consume` and `POST /v1/api/topics/ack` (`docs/protocol.md` §7.1): the
//! routes the official SDKs' topic consumers poll and acknowledge through, with their request
//! and response shapes. The topics are `kalamdb_core::topics`.

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
    /// Accepted; the fetch answers at once (as upstream's does).
    #[serde(default)]
    #[allow(dead_code)]
    timeout_seconds: Option<Value>,
}

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
    let identity = match bearer_identity(&state, &headers) {
        Ok(id) => id,
        Err((code, msg)) => return sql_error(code, msg, None, start),
    };
    let request: ConsumeRequest = match serde_json::from_slice(&body) {
        Ok(r) => r,
        Err(e) => {
            return sql_error(
                ErrorCode::InvalidInput,
                format!("Invalid JSON body: {e}"),
                None,
                start,
            );
        }
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
    let fetched = state.app.topics().consume(
        &identity,
        &request.topic_id,
        request.group_id.as_deref().filter(|g| !g.is_empty()),
        request.partition_id.unwrap_or(0),
        from,
        limit as usize,
    );
    let fetch = match fetched {
        Ok(f) => f,
        Err(e) => return error(e, start),
    };
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
    let identity = match bearer_identity(&state, &headers) {
        Ok(id) => id,
        Err((code, msg)) => return sql_error(code, msg, None, start),
    };
    let request: AckRequest = match serde_json::from_slice(&body) {
        Ok(r) => r,
        Err(e) => {
            return sql_error(
                ErrorCode::InvalidInput,
                format!("Invalid JSON body: {e}"),
                None,
                start,
            );
        }
    };
    match state.app.topics().ack(
        &identity,
        &request.topic_id,
        &request.group_id,
        request.partition_id,
        request.upto_offset,
    ) {
        Ok(done) => Json(json!({"success": true, "acknowledged_offset": done})).into_response(),
        Err(e) => error(e, start),
    }
}
