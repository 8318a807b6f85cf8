//! `GET /v1/api/schema` (`docs/protocol.md` §7.2): the namespaces, tables, views and columns
//! the caller may query, in one JSON document (`kalamdb_core::schema_view`), for agents and
//! tools that need the schema before writing SQL.

use crate::ApiState;
use crate::auth::bearer_identity;
use crate::envelope::sql_error;
use axum::Json;
use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use std::time::Instant;

/// The schema handler.
pub async fn schema(State(state): State<ApiState>, headers: HeaderMap) -> Response {
    let start = Instant::now();
    let identity = match bearer_identity(&state, &headers).await {
        Ok(i) => i,
        Err((code, msg)) => return sql_error(code, msg, None, start),
    };
    match kalamdb_core::schema_view::describe(&state.app, &identity) {
        Ok(doc) => Json(doc).into_response(),
        Err(e) => sql_error(e.code(), e.to_string(), None, start),
    }
}
