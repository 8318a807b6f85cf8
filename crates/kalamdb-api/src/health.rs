//! `GET /health`, `GET /v1/api/healthcheck` (liveness) and `GET /health/ready` (readiness):
//! answered to loopback callers only.

use axum::Json;
use axum::extract::ConnectInfo;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use kalamdb_commons::wire::HealthResponse;
use std::net::SocketAddr;

/// Health handler.
pub async fn health(ConnectInfo(peer): ConnectInfo<SocketAddr>) -> Response {
    if !peer.ip().is_loopback() {
        return (
            StatusCode::FORBIDDEN,
            Json(serde_json::json!({"error": "Access denied. Health endpoint is localhost-only."})),
        )
            .into_response();
    }
    Json(HealthResponse {
        status: "healthy".into(),
        version: env!("CARGO_PKG_VERSION").into(),
        api_version: "v1".into(),
        build_date: option_env!("KALAMDB_BUILD_DATE")
            .unwrap_or("unknown")
            .into(),
    })
    .into_response()
}

/// `GET /health/ready` (loopback callers only): 200 when this node serves fresh reads and
/// takes writes (a lone server once open; a cluster member once every group has a leader and
/// it applied what its logs hold), 503 otherwise. `/health` is liveness only.
pub async fn ready(
    axum::extract::State(state): axum::extract::State<crate::ApiState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
) -> Response {
    if !peer.ip().is_loopback() {
        return (
            StatusCode::FORBIDDEN,
            Json(serde_json::json!({"error": "Access denied. Health endpoint is localhost-only."})),
        )
            .into_response();
    }
    let (ready, cluster) = match state.app.cluster_view() {
        None => (true, false),
        Some(view) => (view.ready(), true),
    };
    let status = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (
        status,
        Json(serde_json::json!({"ready": ready, "is_cluster_mode": cluster})),
    )
        .into_response()
}
