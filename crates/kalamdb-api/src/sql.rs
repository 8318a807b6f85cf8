//! `POST /v1/api/sql`: Bearer JWT only; JSON `{sql, params?, namespace_id?}` in, the SQL
//! envelope out. Errors of non-admin callers that could reveal server internals get a fixed
//! public message; admins see `Statement N failed: …` and the statement in `details`.

use crate::ApiState;
use crate::auth::bearer_identity;
use crate::envelope::{public_message, sql_error, sql_success, streamed_success};
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{ConnectInfo, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::Response;
use kalamdb_commons::ErrorCode;
use kalamdb_commons::wire::SqlRequest;
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
    let identity = match bearer_identity(&state, &headers) {
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
    let is_json = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| {
            v.trim_start()
                .to_ascii_lowercase()
                .starts_with("application/json")
        });
    if !is_json {
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
    match state
        .executor
        .execute_reply(
            &identity,
            Some(peer.ip()),
            &request.sql,
            request.params,
            request.namespace_id,
            true,
        )
        .await
    {
        Ok(Reply::Results(results)) => sql_success(results, start),
        Ok(Reply::Stream(stream)) => streamed_success(stream, start),
        Err(e) if identity.role.is_admin() || e.public => {
            sql_error(e.code, e.message, e.details, start)
        }
        Err(e) => sql_error(e.code, public_message(e.code), None, start),
    }
}
