//! Building responses: the SQL envelope (success and error) and the auth error body. Every
//! error that reaches a client passes through here, so codes and statuses stay consistent.

use axum::Json;
use axum::body::{Body, Bytes};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use futures::StreamExt;
use kalamdb_commons::ErrorCode;
use kalamdb_commons::wire::{AuthErrorBody, ErrorDetail, QueryResult, ResponseStatus, SqlResponse};
use kalamdb_core::sql::stream::ResultStream;
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

/// A successful SQL envelope around a result still being produced: the same JSON as
/// [`sql_success`] with one result, written as its rows arrive (chunked). An error after the
/// first rows ends the body early, so the client sees a failed transfer, never a shorter
/// result.
pub fn streamed_success(stream: ResultStream, start: Instant) -> Response {
    let ResultStream {
        schema,
        as_user,
        rows,
        rest,
        cancel,
    } = stream;
    let head = format!(
        "{{\"status\":{},\"results\":[{{\"schema\":{},\"rows\":[",
        json_text(&ResponseStatus::Success),
        json_text(&schema)
    );
    // The guard travels with the body: the query runs while the client reads.
    let state = (Some(rows), (rest, cancel), 0usize, false);
    let body =
        futures::stream::once(async move { Ok::<_, std::io::Error>(Bytes::from(head)) }).chain(
            futures::stream::unfold(state, move |(first, mut rest, count, done)| {
                let as_user = as_user.clone();
                async move {
                    if done {
                        return None;
                    }
                    let (rows, count) = match first {
                        Some(rows) => (rows, count),
                        None => match rest.0.recv().await {
                            Some(Ok(Some(rows))) => (rows, count),
                            Some(Err(e)) => {
                                let err =
                                    std::io::Error::other(format!("{:?}: {}", e.code, e.message));
                                return Some((Err(err), (None, rest, count, true)));
                            }
                            None => {
                                let err = std::io::Error::other("the query stopped before its end");
                                return Some((Err(err), (None, rest, count, true)));
                            }
                            Some(Ok(None)) => {
                                let tail = format!(
                                    "],\"row_count\":{count},\"as_user\":{}}}],\"took\":{}}}",
                                    json_text(&as_user),
                                    took_ms(start)
                                );
                                return Some((Ok(Bytes::from(tail)), (None, rest, count, true)));
                            }
                        },
                    };
                    let mut chunk = Vec::with_capacity(rows.len() * 64);
                    for (i, row) in rows.iter().enumerate() {
                        if count + i > 0 {
                            chunk.push(b',');
                        }
                        if serde_json::to_writer(&mut chunk, row).is_err() {
                            let err = std::io::Error::other("a row could not be encoded");
                            return Some((Err(err), (None, rest, count, true)));
                        }
                    }
                    let count = count + rows.len();
                    Some((Ok(Bytes::from(chunk)), (None, rest, count, false)))
                }
            }),
        );
    Response::builder()
        .status(StatusCode::OK)
        .header(header::CONTENT_TYPE, "application/json")
        .body(Body::from_stream(body))
        .unwrap_or_else(|_| StatusCode::INTERNAL_SERVER_ERROR.into_response())
}

fn json_text<T: serde::Serialize>(value: &T) -> String {
    serde_json::to_string(value).unwrap_or_else(|_| "null".into())
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

/// 413 for a body over the limit, in the transport's shape (`docs/protocol.md` §1), before
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
