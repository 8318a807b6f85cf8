//! Observability at the HTTP edge: [`ObserveLayer`] gives every request an id (the
//! client's `x-request-id` when sane, else a new UUID), logs its work inside a `request` span
//! carrying that id, echoes it in the response, and counts the request in the metrics by route
//! pattern, method and status with its latency (to the response head); [`metrics`] serves
//! `GET /metrics`.

use crate::ApiState;
use axum::extract::{ConnectInfo, MatchedPath, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use kalamdb_core::metrics::Metrics;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use tracing::Instrument;

/// The request id header.
const REQUEST_ID: &str = "x-request-id";

/// Ids this process makes: a random prefix per process and a counter (no system call per
/// request, unique across restarts in practice).
static NEXT_ID: std::sync::LazyLock<(String, AtomicU64)> = std::sync::LazyLock::new(|| {
    let prefix = uuid::Uuid::new_v4().simple().to_string()[..16].to_string();
    (prefix, AtomicU64::new(1))
});

/// The client's request id if it is short printable ASCII, else a fresh one.
fn request_id(headers: &HeaderMap) -> String {
    headers
        .get(REQUEST_ID)
        .and_then(|v| v.to_str().ok())
        .filter(|v| !v.is_empty() && v.len() <= 64 && v.bytes().all(|b| b.is_ascii_graphic()))
        .map_or_else(
            || {
                let (prefix, next) = &*NEXT_ID;
                format!("{prefix}{:016x}", next.fetch_add(1, Ordering::Relaxed))
            },
            str::to_string,
        )
}

/// The layer of [`Observe`]: request id, span and metrics; see the module doc.
#[derive(Debug, Clone)]
pub struct ObserveLayer {
    metrics: Option<Arc<Metrics>>,
}

impl ObserveLayer {
    /// Counts into `metrics` (`None`: `[metrics] enabled = false`, ids and spans only).
    pub fn new(metrics: Option<Arc<Metrics>>) -> Self {
        Self { metrics }
    }
}

impl<S> tower::Layer<S> for ObserveLayer {
    type Service = Observe<S>;

    fn layer(&self, inner: S) -> Observe<S> {
        Observe {
            inner,
            metrics: self.metrics.clone(),
        }
    }
}

/// Gives a request its id and span and counts it; see the module doc.
#[derive(Debug, Clone)]
pub struct Observe<S> {
    inner: S,
    metrics: Option<Arc<Metrics>>,
}

impl<S> tower::Service<Request> for Observe<S>
where
    S: tower::Service<Request, Response = Response> + Send + 'static,
    S::Future: Send + 'static,
{
    type Response = Response;
    type Error = S::Error;
    type Future = futures::future::BoxFuture<'static, Result<Response, S::Error>>;

    fn poll_ready(
        &mut self,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request) -> Self::Future {
        let started = std::time::Instant::now();
        // The router's own pattern (cheap to clone): its address identifies the route.
        let route = req.extensions().get::<MatchedPath>().cloned();
        // Static strings (their addresses key the metrics' handle cache).
        let method: &'static str = match req.method().as_str() {
            "GET" => "GET",
            "POST" => "POST",
            "PUT" => "PUT",
            "DELETE" => "DELETE",
            "PATCH" => "PATCH",
            "HEAD" => "HEAD",
            "OPTIONS" => "OPTIONS",
            _ => "OTHER",
        };
        let id = request_id(req.headers());
        let span = tracing::info_span!("request", request_id = %id);
        let served = self.inner.call(req).instrument(span);
        let metrics = self.metrics.clone();
        Box::pin(async move {
            let mut response = served.await?;
            if let Ok(value) = HeaderValue::from_str(&id) {
                response.headers_mut().insert(REQUEST_ID, value);
            }
            if let Some(metrics) = metrics {
                metrics.http_request(
                    route.as_ref().map_or("other", MatchedPath::as_str),
                    method,
                    response.status().as_u16(),
                    started.elapsed().as_secs_f64(),
                );
            }
            Ok(response)
        })
    }
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
        // Loopback only; a request a proxy on this host forwards is not the proxy's own.
        let forwarded =
            headers.contains_key("forwarded") || headers.contains_key("x-forwarded-for");
        peer.ip().to_canonical().is_loopback() && !forwarded
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
    // Reading RocksDB properties per partition and /proc: off the request threads.
    let app = Arc::clone(&state.app);
    let Ok(body) = tokio::task::spawn_blocking(move || app.render_metrics()).await else {
        return StatusCode::INTERNAL_SERVER_ERROR.into_response();
    };
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
        assert_ne!(request_id(&h), request_id(&h));
        h.insert(REQUEST_ID, HeaderValue::from_static("abc-123"));
        assert_eq!(request_id(&h), "abc-123");
        h.insert(REQUEST_ID, HeaderValue::from_static("has space"));
        assert_ne!(request_id(&h), "has space");
        assert!(constant_time_eq(b"tok", b"tok") && !constant_time_eq(b"tok", b"tok2"));
    }
}
