//! `GET /v1/files/{namespace}/{table}/{sub}/{stored_name}[?user_id=]`: the content of a FILE
//! column's file, under the access rules of its row (`kalamdb_core::sql::files::download`).

use crate::ApiState;
use crate::auth::bearer_identity;
use crate::envelope::{public_message, sql_error};
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, header};
use axum::response::{IntoResponse, Response};
use kalamdb_commons::ErrorCode;
use kalamdb_core::sql::parse::TableRef;
use std::collections::HashMap;
use std::time::Instant;

/// The download handler.
pub async fn download(
    State(state): State<ApiState>,
    Path((namespace, table, sub, name)): Path<(String, String, String, String)>,
    Query(query): Query<HashMap<String, String>>,
    headers: HeaderMap,
) -> Response {
    let identity = match bearer_identity(&state, &headers).await {
        Ok(id) => id,
        Err((code, message)) => return sql_error(code, message, None, Instant::now()),
    };
    let table = TableRef {
        namespace: Some(namespace.to_ascii_lowercase()),
        table: table.to_ascii_lowercase(),
    };
    let found = kalamdb_core::sql::files::download(
        &state.app,
        &identity,
        &table,
        &sub,
        &name,
        query.get("user_id").map(String::as_str),
    )
    .await;
    match found {
        Ok(file) => {
            let mut response = file.bytes.into_response();
            if let Ok(mime) = HeaderValue::from_str(&file.mime) {
                response.headers_mut().insert(header::CONTENT_TYPE, mime);
            }
            if let Ok(disposition) = HeaderValue::from_str(&format!("inline; filename=\"{name}\""))
            {
                response
                    .headers_mut()
                    .insert(header::CONTENT_DISPOSITION, disposition);
            }
            response
        }
        // A missing file (or table) is a 404 here, not a statement error.
        Err(e @ kalamdb_catalog::KalamError::NotFound { .. }) => {
            sql_error(ErrorCode::NotFound, e.to_string(), None, Instant::now())
        }
        Err(e) if e.is_public() => sql_error(e.code(), e.to_string(), None, Instant::now()),
        Err(e) => sql_error(e.code(), public_message(e.code()), None, Instant::now()),
    }
}
