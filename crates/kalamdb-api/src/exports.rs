//! `GET /v1/api/exports/{id}`: downloads an `EXPORT USER DATA` archive (tar). Only the user
//! whose rows it holds, or a dba/system user, may; an export past its lifetime is gone (410)
//! and removed.

use crate::ApiState;
use crate::auth::bearer_identity;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use kalamdb_core::sql::export;

/// The handler; see the module doc.
pub async fn download(
    State(state): State<ApiState>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Response {
    let identity = match bearer_identity(&state, &headers).await {
        Ok(i) => i,
        Err((_, msg)) => return (StatusCode::UNAUTHORIZED, msg).into_response(),
    };
    let app = &state.app;
    // Someone else's export and no export answer alike.
    let not_found = || (StatusCode::NOT_FOUND, "no such export\n").into_response();
    let (Some(info), Some(path)) = (export::info(app, &id), export::archive_path(app, &id)) else {
        return not_found();
    };
    if info.user_id != identity.user_id.as_str() && !identity.role.is_admin() {
        return not_found();
    }
    let age_secs = (chrono::Utc::now().timestamp_micros() - info.created_at) / 1_000_000;
    if age_secs > export::EXPORT_TTL_SECS as i64 {
        export::remove_expired(app, export::EXPORT_TTL_SECS);
        return (StatusCode::GONE, "this export has expired\n").into_response();
    }
    match tokio::fs::read(&path).await {
        Ok(bytes) => (
            [
                (header::CONTENT_TYPE, "application/x-tar".to_string()),
                (
                    header::CONTENT_DISPOSITION,
                    format!("attachment; filename=\"kalamdb-export-{id}.tar\""),
                ),
            ],
            bytes,
        )
            .into_response(),
        Err(_) => not_found(),
    }
}
