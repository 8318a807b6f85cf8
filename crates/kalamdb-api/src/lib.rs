//! The HTTP surface of KalamDB (`docs/protocol.md` §2-5), built on axum.
//!
//! - [`sql`]: `POST /v1/api/sql`, Bearer-authenticated, answering with the SQL envelope;
//!   [`forward`] runs a request refused for want of leadership on its group's leader;
//! - [`auth`]: the `/v1/api/auth/*` endpoints (login, refresh, logout, me, status, setup);
//! - [`ws`]: `GET /v1/ws`, the WebSocket transport of live queries;
//! - [`files`]: `GET /v1/files/…`, downloads of FILE columns' files;
//! - [`topics`]: `POST /v1/api/topics/consume` and `…/ack`, the SDKs' topic consumers;
//! - [`schema`]: `GET /v1/api/schema`, the caller's queryable schema in one document;
//! - [`exports`]: `GET /v1/api/exports/{id}`, downloads of `EXPORT USER DATA` archives;
//! - [`health`]: `/health` and `/v1/api/healthcheck` (loopback callers only);
//! - [`observe`]: request ids and HTTP metrics on every request, and `GET /metrics`;
//! - [`ui`]: the web console's files at `/ui` (`[server] ui`);
//! - [`envelope`]: the one place errors become responses.
//!
//! [`router`] assembles them over an [`ApiState`]. The engine is `kalamdb-core`; this crate only
//! translates HTTP to engine calls and back.

pub mod auth;
pub mod cors;
pub mod envelope;
pub mod exports;
pub mod files;
pub mod forward;
pub mod health;
pub mod observe;
pub mod read_your_writes;
pub mod schema;
pub mod sql;
pub mod topics;
pub mod ui;
pub mod ws;
pub mod ws_config;

pub use cors::{CorsConfig, SecurityConfig};
pub use ws_config::WebSocketConfig;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::routing::{get, post};
use kalamdb_core::AppContext;
use kalamdb_core::sql::executor::SqlExecutor;
use kalamdb_live::LiveQueryManager;
use std::net::SocketAddr;
use std::sync::Arc;

/// A connection's place in the server's connection limits, put into each request's
/// extensions by whoever accepts connections. What outlives the HTTP exchange (an upgraded
/// WebSocket) keeps it, so the connection stays counted until the socket closes.
#[derive(Clone)]
pub struct ConnectionSlot(pub Arc<dyn std::any::Any + Send + Sync>);

impl std::fmt::Debug for ConnectionSlot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ConnectionSlot")
    }
}

/// State shared by the handlers.
#[derive(Clone)]
pub struct ApiState {
    /// The engine.
    pub app: Arc<AppContext>,
    /// The SQL executor.
    pub executor: SqlExecutor,
    /// Per-IP limit on the auth endpoints.
    pub auth_limiter: Arc<auth::IpRateLimiter>,
    /// Live queries.
    pub live: Arc<LiveQueryManager>,
    /// `[websocket]`: limits of live-query connections.
    pub websocket: Arc<WebSocketConfig>,
    /// `[security.cors]`: origins browsers may call from.
    pub cors: Arc<CorsConfig>,
}

impl std::fmt::Debug for ApiState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ApiState")
            .field("app", &self.app)
            .finish_non_exhaustive()
    }
}

impl ApiState {
    /// State over an opened engine serving on `addr` (the bound address: `SUBSCRIBE TO`
    /// over HTTP answers with the WebSocket URL on it).
    pub fn new(app: Arc<AppContext>, websocket: WebSocketConfig, addr: SocketAddr) -> Self {
        let per_sec = app.config().auth.auth_requests_per_ip_per_sec;
        Self {
            executor: SqlExecutor::new(Arc::clone(&app), ws::url(addr)),
            auth_limiter: Arc::new(auth::ip_rate_limiter(per_sec)),
            live: LiveQueryManager::start(&app),
            websocket: Arc::new(websocket),
            cors: Arc::default(),
            app,
        }
    }

    /// The same state with `[security.cors]` set to `cors`.
    pub fn with_cors(mut self, cors: CorsConfig) -> Self {
        self.cors = Arc::new(cors);
        self
    }
}

/// The full router. Serve it with `into_make_service_with_connect_info::<SocketAddr>()`: the
/// loopback-only endpoints need the peer address.
pub fn router(state: ApiState) -> Router {
    let body_limit = state.app.config().limits.max_request_body_bytes;
    let body_timeout =
        std::time::Duration::from_secs(state.app.config().server.request_body_timeout_secs);
    // Endpoints that take credentials are rate limited per client IP.
    // They record logins and sessions: a cluster member runs them on the meta leader, after
    // limiting by the client's own address.
    let to_meta_leader =
        axum::middleware::from_fn_with_state(state.clone(), forward::to_meta_leader);
    let credential_routes = Router::new()
        .route("/v1/api/auth/login", post(auth::login))
        .route("/v1/api/auth/refresh", post(auth::refresh))
        .route("/v1/api/auth/setup", post(auth::setup))
        .route_layer(to_meta_leader.clone())
        .route_layer(axum::middleware::from_fn_with_state(
            state.clone(),
            auth::limit_by_ip,
        ))
        .merge(
            Router::new()
                .route("/v1/api/auth/logout", post(auth::logout))
                .route_layer(to_meta_leader.clone()),
        );
    let router = Router::new()
        .route("/health", get(health::health))
        .route("/health/ready", get(health::ready))
        .route("/v1/api/healthcheck", get(health::health))
        .route("/v1/api/sql", post(sql::execute_sql))
        .route("/v1/api/schema", get(schema::schema))
        .merge(
            // A cluster member runs them on the meta leader: offsets are handed out there
            // and consumer groups' claims are kept there (docs/cluster.md §6).
            Router::new()
                .route("/v1/api/topics/consume", post(topics::consume))
                .route("/v1/api/topics/ack", post(topics::ack))
                .route("/v1/api/topics/publish", post(topics::publish))
                .route_layer(to_meta_leader.clone()),
        )
        .route(
            "/v1/files/{namespace}/{table}/{sub}/{name}",
            get(files::download),
        )
        .route("/v1/ws", get(ws::upgrade))
        .merge(credential_routes)
        .route("/v1/api/auth/me", get(auth::me))
        .route("/v1/api/auth/status", get(auth::status))
        .route("/metrics", get(observe::metrics))
        .route("/v1/api/exports/{id}", get(exports::download));
    let router = if state.app.config().server.ui {
        router
            .route("/ui", get(ui::redirect))
            .route("/ui/", get(ui::index))
            .route("/ui/{file}", get(ui::file))
    } else {
        router
    };
    let router = router
        .layer(DefaultBodyLimit::max(body_limit))
        .layer(axum::middleware::from_fn_with_state(
            (body_timeout, body_limit),
            read_body_in_time,
        ))
        .layer(axum::middleware::from_fn_with_state(
            body_limit,
            reject_oversize,
        ))
        .layer(observe::ObserveLayer::new(
            state
                .app
                .config()
                .metrics
                .enabled
                .then(|| Arc::clone(&state.app.provider_deps().metrics)),
        ));
    // Outermost: preflights are answered before anything else looks at the request.
    let router = match state.cors.layer() {
        Some(cors) => router.layer(cors),
        None => router,
    };
    router.with_state(state)
}

/// Reads a request's whole body within `server.request_body_timeout_secs` (408
/// `REQUEST_TIMEOUT` otherwise), so a client that trickles or stalls its body cannot hold a
/// handler. Handlers then read the body from memory.
async fn read_body_in_time(
    axum::extract::State((timeout, max)): axum::extract::State<(std::time::Duration, usize)>,
    req: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    use axum::body::HttpBody;
    if req.body().size_hint().exact() == Some(0) {
        return next.run(req).await;
    }
    let (parts, body) = req.into_parts();
    match tokio::time::timeout(timeout, axum::body::to_bytes(body, max)).await {
        Ok(Ok(bytes)) => {
            let req = axum::extract::Request::from_parts(parts, axum::body::Body::from(bytes));
            next.run(req).await
        }
        Ok(Err(e)) if e.to_string().contains("length limit") => {
            envelope::body_too_large(max as u64 + 1, max)
        }
        Ok(Err(e)) => envelope::transport_error(
            axum::http::StatusCode::BAD_REQUEST,
            "INVALID_INPUT",
            format!("Cannot read the request body: {e}"),
        ),
        Err(_) => envelope::transport_error(
            axum::http::StatusCode::REQUEST_TIMEOUT,
            "REQUEST_TIMEOUT",
            format!(
                "The request body did not arrive within {} s",
                timeout.as_secs()
            ),
        ),
    }
}

/// Answers 413 when a request declares a body over the limit (bodies without a length are cut
/// at the limit by the extractors).
async fn reject_oversize(
    axum::extract::State(max): axum::extract::State<usize>,
    req: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    let declared = req
        .headers()
        .get(axum::http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    match declared {
        Some(size) if size > max as u64 => envelope::body_too_large(size, max),
        _ => next.run(req).await,
    }
}
