//! Statement forwarding in a cluster (docs/cluster.md §4): a request refused because another
//! node leads the group it writes, with nothing of it written here, runs again on that node;
//! its answer goes back to the client unchanged. The caller's own `Authorization` header
//! travels with it (every member holds the same users and signing secret), and a forwarded
//! request is never forwarded again: a leader that moved meanwhile answers `NOT_LEADER`, which
//! the client retries.

use axum::body::{Body, Bytes};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use std::sync::OnceLock;
use std::time::Duration;

/// Marks a forwarded request.
pub const FORWARDED: &str = "x-kalamdb-forwarded";

/// Whether `headers` belong to a request another member forwarded.
pub fn is_forwarded(headers: &HeaderMap) -> bool {
    headers.contains_key(FORWARDED)
}

fn client() -> &'static reqwest::Client {
    static CLIENT: OnceLock<reqwest::Client> = OnceLock::new();
    CLIENT.get_or_init(|| {
        reqwest::Client::builder()
            .pool_idle_timeout(Duration::from_secs(60))
            .build()
            .unwrap_or_default()
    })
}

/// Sends the JSON SQL request `body` to `leader` (a client URL) with the caller's
/// `Authorization`, waiting at most `timeout` (`None`: as long as it takes); an error when
/// the leader could not be reached or did not answer (the caller answers `FORWARD_FAILED`:
/// the statement may or may not have run there).
pub async fn forward_sql(
    leader: &str,
    headers: &HeaderMap,
    body: Bytes,
    timeout: Option<Duration>,
) -> Result<Response, String> {
    let mut request = client()
        .post(format!("{leader}/v1/api/sql"))
        .header(header::CONTENT_TYPE.as_str(), "application/json")
        .header(FORWARDED, "1")
        .body(body);
    // The caller's credentials, and the marks it asked for (read_your_writes.rs).
    for name in [
        header::AUTHORIZATION.as_str(),
        crate::read_your_writes::MIN_APPLIED,
        crate::read_your_writes::CONSISTENCY,
    ] {
        if let Some(value) = headers.get(name) {
            request = request.header(name, value.as_bytes());
        }
    }
    if let Some(timeout) = timeout {
        request = request.timeout(timeout);
    }
    let answer = request
        .send()
        .await
        .map_err(|e| format!("forwarding to the leader {leader} failed: {e}"))?;
    let status = StatusCode::from_u16(answer.status().as_u16()).unwrap_or(StatusCode::BAD_GATEWAY);
    let content_type = answer
        .headers()
        .get(reqwest::header::CONTENT_TYPE)
        .and_then(|v| HeaderValue::from_bytes(v.as_bytes()).ok());
    let applied = answer
        .headers()
        .get(crate::read_your_writes::APPLIED)
        .and_then(|v| HeaderValue::from_bytes(v.as_bytes()).ok());
    let bytes = answer
        .bytes()
        .await
        .map_err(|e| format!("reading the leader's answer failed: {e}"))?;
    let mut response = (status, Body::from(bytes)).into_response();
    if let Some(ct) = content_type {
        response.headers_mut().insert(header::CONTENT_TYPE, ct);
    }
    if let Some(marks) = applied {
        response
            .headers_mut()
            .insert(crate::read_your_writes::APPLIED, marks);
    }
    Ok(response)
}

/// Middleware of the endpoints that write the meta group (login, refresh, setup, logout:
/// they record logins and sessions): on a cluster member that does not lead it, the request
/// runs on the leader and its answer, cookies included, comes back unchanged.
pub async fn to_meta_leader(
    axum::extract::State(state): axum::extract::State<crate::ApiState>,
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    let leader = match state.app.cluster_view() {
        Some(view) if !is_forwarded(request.headers()) => view.meta_leader_url(),
        _ => None,
    };
    let Some(leader) = leader else {
        return next.run(request).await;
    };
    let (parts, body) = request.into_parts();
    let limit = state.app.config().limits.max_request_body_bytes;
    let body = match axum::body::to_bytes(body, limit).await {
        Ok(b) => b,
        Err(_) => return StatusCode::PAYLOAD_TOO_LARGE.into_response(),
    };
    let path = parts
        .uri
        .path_and_query()
        .map_or(parts.uri.path(), |p| p.as_str());
    let mut forwarded = client()
        .request(
            reqwest::Method::from_bytes(parts.method.as_str().as_bytes())
                .unwrap_or(reqwest::Method::POST),
            format!("{leader}{path}"),
        )
        .header(FORWARDED, "1")
        .timeout(Duration::from_secs(30))
        .body(body);
    for name in [
        header::AUTHORIZATION,
        header::COOKIE,
        header::CONTENT_TYPE,
        header::ORIGIN,
        header::USER_AGENT,
    ] {
        if let Some(v) = parts.headers.get(&name) {
            forwarded = forwarded.header(name.as_str(), v.as_bytes());
        }
    }
    let answer = match forwarded.send().await {
        Ok(a) => a,
        Err(e) => {
            return crate::envelope::sql_error(
                kalamdb_commons::ErrorCode::ForwardFailed,
                format!("forwarding to the leader {leader} failed: {e}"),
                None,
                std::time::Instant::now(),
            );
        }
    };
    let status = StatusCode::from_u16(answer.status().as_u16()).unwrap_or(StatusCode::BAD_GATEWAY);
    let mut headers = HeaderMap::new();
    for (name, value) in answer.headers() {
        if matches!(
            name.as_str(),
            "content-type" | "set-cookie" | "cache-control"
        ) && let (Ok(n), Ok(v)) = (
            header::HeaderName::from_bytes(name.as_str().as_bytes()),
            HeaderValue::from_bytes(value.as_bytes()),
        ) {
            headers.append(n, v);
        }
    }
    let bytes = answer.bytes().await.unwrap_or_default();
    let mut response = (status, Body::from(bytes)).into_response();
    response.headers_mut().extend(headers);
    response
}
