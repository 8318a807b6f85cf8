//! Building responses: the SQL envelope (success and error) and the auth error body. Every
//! error that reaches a client passes through here, so codes and statuses stay consistent.

use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use kalamdb_commons::ErrorCode;
use kalamdb_commons::wire::{AuthErrorBody, ErrorDetail, QueryResult, ResponseStatus, SqlResponse};
use std::time::Instant;

/// Milliseconds since `start`, rounded to three decimals.
pub fn took_ms(start: Instant) -> f64 {
    (start.elapsed().as_secs_f64() * 1_000_000.0).round() / 1000.0
}

/// A successful SQL envelope.
pub fn sql_success(results: Vec<QueryResult>, start: Instant) -> Response {
    let body = SqlResponse {
        status: ResponseStatus::Success,
        results,
        took: took_ms(start),
        error: None,
    };
    (StatusCode::OK, Json(body)).into_response()
}

/// An error SQL envelope with the code's HTTP status.
pub fn sql_error(
    code: ErrorCode,
    message: impl Into<String>,
    details: Option<String>,
    start: Instant,
) -> Response {
    let status =
        StatusCode::from_u16(code.http_status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let body = SqlResponse {
        status: ResponseStatus::Error,
        results: vec![],
        took: took_ms(start),
        error: Some(ErrorDetail {
            code,
            message: message.into(),
            details,
        }),
    };
    (status, Json(body)).into_response()
}

/// The fixed public message of a code, for errors whose real text is not shown to non-admins.
pub fn public_message(code: ErrorCode) -> &'static str {
    match code {
        ErrorCode::InvalidSql => "SQL statement is invalid or not allowed",
        ErrorCode::BatchParseError => "Failed to parse SQL batch",
        ErrorCode::TableNotFound => "Requested table is not available",
        ErrorCode::InternalError => "SQL request failed",
        _ => "SQL statement failed",
    }
}

/// An auth-endpoint error: `{"error": "<snake_code>", "message": "…"}`.
pub fn auth_error(status: StatusCode, error: &str, message: impl Into<String>) -> Response {
    (
        status,
        Json(AuthErrorBody {
            error: error.into(),
            message: message.into(),
        }),
    )
        .into_response()
}

/// A transport-level failure before any handler ran: `{"error": CODE, "message": …}`.
pub fn transport_error(status: StatusCode, code: &str, message: String) -> Response {
    (
        status,
        Json(serde_json::json!({ "error": code, "message": message })),
    )
        .into_response()
}

/// 413 for a body over the limit, in the transport's shape (`spec/protocol.md` §1), before
/// any handler reads it.
pub fn body_too_large(size: u64, max: usize) -> Response {
    (
        StatusCode::PAYLOAD_TOO_LARGE,
        Json(serde_json::json!({
            "error": "BODY_TOO_LARGE",
            "message": format!("Request body of {size} bytes exceeds the limit of {max} bytes"),
            "size_bytes": size,
            "max_bytes": max,
        })),
    )
        .into_response()
}
