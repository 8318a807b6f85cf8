//! `GET /health` and `GET /v1/api/healthcheck`: answered to loopback callers only.

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
