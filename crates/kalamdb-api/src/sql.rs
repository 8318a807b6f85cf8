//! `POST /v1/api/sql`: Bearer JWT only; JSON `{sql, params?, namespace_id?}` (or a multipart
//! form with files for FILE columns) in, the SQL envelope out. Errors of non-admin callers that could reveal server internals get a fixed
//! public message; admins see `Statement N failed: …` and the statement in `details`.

use crate::ApiState;
use crate::auth::bearer_identity;
use crate::envelope::{public_message, sql_error, sql_success, streamed_success};
use crate::forward;
use crate::read_your_writes;
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{ConnectInfo, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::Response;
use kalamdb_commons::ErrorCode;
use kalamdb_commons::wire::SqlRequest;
use kalamdb_core::sql::files::Upload;
use kalamdb_core::sql::stream::Reply;
use std::net::SocketAddr;
use std::time::Instant;

/// The SQL handler.
pub async fn execute_sql(
    State(state): State<ApiState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let start = Instant::now();
    let identity = match bearer_identity(&state, &headers).await {
        Ok(id) => id,
        Err((code, msg)) => return sql_error(code, msg, None, start),
    };
    let body = match body {
        Ok(b) => b,
        Err(rejection) if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE => {
            return sql_error(
                ErrorCode::BodyTooLarge,
                format!(
                    "Request body exceeds the limit of {} bytes",
                    state.app.config().limits.max_request_body_bytes
                ),
                None,
                start,
            );
        }
        Err(rejection) => {
            return sql_error(ErrorCode::InvalidInput, rejection.body_text(), None, start);
        }
    };
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .trim_start()
        .to_ascii_lowercase();
    let view = state.app.cluster_view().cloned();
    if let Some(view) = &view
        && let Err((bad, why)) = read_your_writes::before(view.as_ref(), &headers).await
    {
        let code = if bad {
            ErrorCode::InvalidInput
        } else {
            ErrorCode::ClusterUnavailable
        };
        return sql_error(code, why, None, start);
    }
    if content_type.starts_with("multipart/form-data") {
        let mut response = multipart_sql(&state, identity, peer, &headers, body, start).await;
        if let Some(view) = &view {
            read_your_writes::stamp(view.as_ref(), &mut response);
        }
        return response;
    }
    if !content_type.starts_with("application/json") {
        return sql_error(
            ErrorCode::InvalidInput,
            "Content-Type must be application/json",
            None,
            start,
        );
    }
    let request: SqlRequest = match serde_json::from_slice(&body) {
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
    if request.sql.trim().is_empty() {
        return sql_error(ErrorCode::EmptySql, "No SQL statement given", None, start);
    }
    let mut response = match state
        .executor
        .execute_reply(
            &identity,
            Some(peer.ip()),
            &request.sql,
            request.params,
            request.namespace_id,
            request.transaction_id,
            true,
        )
        .await
    {
        Ok(Reply::Results(results)) => sql_success(results, start),
        Ok(Reply::Stream(stream)) => streamed_success(stream, start),
        Err(e) if e.forward_to.is_some() && !forward::is_forwarded(&headers) => {
            let leader = e.forward_to.unwrap_or_default();
            // The leader holds the statement to the query timeout; a little more for the hop.
            let secs = state.app.config().query.timeout_secs;
            let timeout = (secs > 0).then(|| std::time::Duration::from_secs(secs + 5));
            return match forward::forward_sql(&leader, &headers, body, timeout).await {
                Ok(answer) => {
                    if let Some(view) = &view {
                        read_your_writes::follow(view.as_ref(), answer.headers()).await;
                    }
                    answer
                }
                Err(why) => sql_error(ErrorCode::ForwardFailed, why, None, start),
            };
        }
        Err(e) if identity.role.is_admin() || e.public => {
            sql_error(e.code, e.message, e.details, start)
        }
        Err(e) => sql_error(e.code, public_message(e.code), None, start),
    };
    if let Some(view) = &view {
        read_your_writes::stamp(view.as_ref(), &mut response);
    }
    response
}

/// A multipart SQL request (`docs/protocol.md` §4.1): text parts `sql`, `params` (a JSON array)
/// and `namespace_id`, and one part `file:<placeholder>` per `FILE("placeholder")` of the
/// statement.
async fn multipart_sql(
    state: &ApiState,
    identity: kalamdb_core::auth::Identity,
    peer: SocketAddr,
    headers: &HeaderMap,
    body: Bytes,
    start: Instant,
) -> Response {
    let bad = |message: String| sql_error(ErrorCode::InvalidInput, message, None, start);
    let boundary = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| multer::parse_boundary(v).ok());
    let Some(boundary) = boundary else {
        return bad("multipart/form-data without a boundary".into());
    };
    let stream = futures::stream::once(async move { Ok::<_, std::convert::Infallible>(body) });
    let mut parts = multer::Multipart::new(stream, boundary);
    let (mut sql, mut params, mut namespace, mut uploads) = (None, None, None, Vec::new());
    loop {
        let field = match parts.next_field().await {
            Ok(Some(field)) => field,
            Ok(None) => break,
            Err(e) => return bad(format!("Invalid multipart body: {e}")),
        };
        let name = field.name().unwrap_or_default().to_string();
        if let Some(placeholder) = name.strip_prefix("file:") {
            let file_name = field.file_name().unwrap_or(placeholder).to_string();
            let mime = field
                .content_type()
                .map_or("application/octet-stream".to_string(), |m| m.to_string());
            let placeholder = placeholder.to_string();
            match field.bytes().await {
                Ok(bytes) => uploads.push(Upload {
                    placeholder,
                    name: file_name,
                    mime,
                    bytes: bytes.to_vec(),
                }),
                Err(e) => return bad(format!("Invalid multipart body: {e}")),
            }
            continue;
        }
        let text = match field.text().await {
            Ok(t) => t,
            Err(e) => return bad(format!("Invalid multipart body: {e}")),
        };
        match name.as_str() {
            "sql" => sql = Some(text),
            "namespace_id" => namespace = Some(text),
            "params" => match serde_json::from_str::<Vec<serde_json::Value>>(&text) {
                Ok(p) => params = Some(p),
                Err(e) => {
                    return sql_error(
                        ErrorCode::InvalidParameter,
                        format!("params must be a JSON array: {e}"),
                        None,
                        start,
                    );
                }
            },
            other => return bad(format!("Unknown multipart part '{other}'")),
        }
    }
    let Some(sql) = sql.filter(|s| !s.trim().is_empty()) else {
        return sql_error(ErrorCode::EmptySql, "No SQL statement given", None, start);
    };
    match state
        .executor
        .execute_with_files(&identity, Some(peer.ip()), &sql, params, namespace, uploads)
        .await
    {
        Ok(results) => sql_success(results, start),
        Err(e) if identity.role.is_admin() || e.public => {
            sql_error(e.code, e.message, e.details, start)
        }
        Err(e) => sql_error(e.code, public_message(e.code), None, start),
    }
}
