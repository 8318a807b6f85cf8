//! Observability at the HTTP edge: [`observe_request`] gives every request an id (the
//! client's `x-request-id` when sane, else a new UUID), logs its work inside a `request` span
//! carrying that id, echoes it in the response, and counts the request in the metrics by route
//! pattern, method and status with its latency (to the response head); [`metrics`] serves
//! `GET /metrics`.

use crate::ApiState;
use axum::extract::{ConnectInfo, MatchedPath, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use kalamdb_core::metrics::{HttpLabels, KindLabel};
use std::net::SocketAddr;
use tracing::Instrument;

/// The request id header.
const REQUEST_ID: &str = "x-request-id";

/// The client's request id if it is short printable ASCII, else a fresh one.
fn request_id(headers: &HeaderMap) -> String {
    headers
        .get(REQUEST_ID)
        .and_then(|v| v.to_str().ok())
        .filter(|v| !v.is_empty() && v.len() <= 64 && v.bytes().all(|b| b.is_ascii_graphic()))
        .map_or_else(|| uuid::Uuid::new_v4().simple().to_string(), str::to_string)
}

/// Middleware: request id, span and metrics; see the module doc.
pub async fn observe_request(State(state): State<ApiState>, req: Request, next: Next) -> Response {
    let started = std::time::Instant::now();
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map_or("other", MatchedPath::as_str)
        .to_string();
    let method = req.method().as_str().to_string();
    let id = request_id(req.headers());
    let span = tracing::info_span!("request", request_id = %id);
    let mut response = next.run(req).instrument(span).await;
    if let Ok(value) = HeaderValue::from_str(&id) {
        response.headers_mut().insert(REQUEST_ID, value);
    }
    let metrics = state.app.metrics();
    metrics
        .http_requests
        .get_or_create(&HttpLabels {
            route: route.clone(),
            method,
            status: response.status().as_u16(),
        })
        .inc();
    metrics
        .http_seconds
        .get_or_create(&KindLabel { kind: route })
        .observe(started.elapsed().as_secs_f64());
    response
}

/// `GET /metrics`: the Prometheus/OpenMetrics exposition. With `[metrics] token` set, the
/// scraper must send it as a Bearer token; without one only loopback clients may scrape.
pub async fn metrics(
    State(state): State<ApiState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
) -> Response {
    let config = &state.app.config().metrics;
    if !config.enabled {
        return StatusCode::NOT_FOUND.into_response();
    }
    let allowed = if config.token.is_empty() {
        peer.ip().is_loopback()
    } else {
        let sent = headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .unwrap_or("");
        constant_time_eq(sent.as_bytes(), config.token.as_bytes())
    };
    if !allowed {
        return (
            StatusCode::UNAUTHORIZED,
            "metrics need the [metrics] token as a Bearer token (or a loopback client when no \
             token is set)\n",
        )
            .into_response();
    }
    let body = state.app.render_metrics();
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        body,
    )
        .into_response()
}

/// Compares without an early exit on the first differing byte.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_ids_are_kept_when_sane_and_made_otherwise() {
        let mut h = HeaderMap::new();
        assert_eq!(request_id(&h).len(), 32);
        h.insert(REQUEST_ID, HeaderValue::from_static("abc-123"));
        assert_eq!(request_id(&h), "abc-123");
        h.insert(REQUEST_ID, HeaderValue::from_static("has space"));
        assert_ne!(request_id(&h), "has space");
        assert!(constant_time_eq(b"tok", b"tok") && !constant_time_eq(b"tok", b"tok2"));
    }
}
