//! Auth endpoints (`docs/protocol.md` §3) and the Bearer check used by protected routes.

use crate::ApiState;
use crate::envelope::auth_error;
use axum::Json;
use axum::body::Bytes;
use axum::extract::{ConnectInfo, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, SecondsFormat, Utc};
use kalamdb_catalog::catalog::UserRecord;
use kalamdb_commons::ErrorCode;
use kalamdb_commons::wire::{
    AuthStatusResponse, LoginRequest, LoginResponse, SetupRequest, SetupResponse, UserInfo,
};
use kalamdb_core::auth::tokens::TokenKind;
use kalamdb_core::auth::{AuthError, Identity, LoginGrant};
use std::net::SocketAddr;

/// A per-client-IP rate limiter (governor's keyed limiter).
pub type IpRateLimiter = governor::DefaultKeyedRateLimiter<std::net::IpAddr>;

/// A limiter allowing `per_sec` requests per second per IP, with a burst of the same size.
pub fn ip_rate_limiter(per_sec: u32) -> IpRateLimiter {
    let n = std::num::NonZeroU32::new(per_sec.max(1)).expect("at least 1");
    governor::RateLimiter::keyed(governor::Quota::per_second(n))
}

/// Middleware for the credential endpoints (login, refresh, setup): 429 `rate_limited` once a
/// client IP has used up its budget, before any password work is done.
pub async fn limit_by_ip(
    State(state): State<ApiState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    if state.auth_limiter.check_key(&peer.ip()).is_err() {
        return auth_error(
            StatusCode::TOO_MANY_REQUESTS,
            "rate_limited",
            "Too many authentication requests. Please retry shortly.",
        );
    }
    next.run(request).await
}

const ACCESS_COOKIE: &str = "kalamdb_auth";
const REFRESH_COOKIE: &str = "kalamdb_refresh";

fn rfc3339_micros(us: i64) -> String {
    DateTime::<Utc>::from_timestamp_micros(us)
        .unwrap_or_default()
        .to_rfc3339_opts(SecondsFormat::Secs, false)
}

fn rfc3339_secs(s: i64) -> String {
    DateTime::<Utc>::from_timestamp(s, 0)
        .unwrap_or_default()
        .to_rfc3339_opts(SecondsFormat::Secs, false)
}

/// The wire form of a user.
pub fn user_info(u: &UserRecord) -> UserInfo {
    UserInfo {
        id: u.user_id.clone(),
        role: u.role.as_str().into(),
        name: None,
        email: u.email.clone(),
        created_at: rfc3339_micros(u.created_at),
        updated_at: rfc3339_micros(u.updated_at),
    }
}

/// The token in `Authorization: Bearer …`, or the envelope error code to answer with.
pub(crate) fn bearer_token(headers: &HeaderMap) -> Result<&str, (ErrorCode, &'static str)> {
    let value = headers
        .get(header::AUTHORIZATION)
        .ok_or((ErrorCode::MissingAuthorization, "Authentication required"))?;
    value
        .to_str()
        .ok()
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim)
        .filter(|t| !t.is_empty())
        .ok_or((ErrorCode::InvalidCredentials, "Invalid credentials"))
}

/// Authenticates a protected request by its Bearer access token.
pub async fn bearer_identity(
    state: &ApiState,
    headers: &HeaderMap,
) -> Result<Identity, (ErrorCode, &'static str)> {
    let token = bearer_token(headers)?;
    match state.app.auth().identify(token).await {
        Ok(identity) => Ok(identity),
        Err(AuthError::TokenExpired) => Err((ErrorCode::TokenExpired, "Invalid credentials")),
        Err(AuthError::Internal(_) | AuthError::Engine(_)) => {
            Err((ErrorCode::InternalError, "Authentication failed"))
        }
        Err(_) => Err((ErrorCode::InvalidCredentials, "Invalid credentials")),
    }
}

fn map_auth_error(e: AuthError) -> Response {
    match e {
        AuthError::InvalidCredentials | AuthError::TokenExpired => auth_error(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "Invalid credentials",
        ),
        AuthError::AccountLocked => {
            auth_error(StatusCode::UNAUTHORIZED, "account_locked", e.to_string())
        }
        AuthError::SetupRequired => auth_error(
            StatusCode::PRECONDITION_REQUIRED,
            "setup_required",
            e.to_string(),
        ),
        AuthError::AlreadyConfigured => {
            auth_error(StatusCode::CONFLICT, "already_configured", e.to_string())
        }
        AuthError::WeakPassword(m) => auth_error(StatusCode::BAD_REQUEST, "weak_password", m),
        AuthError::InvalidUser(m) => auth_error(StatusCode::BAD_REQUEST, "invalid_user", m),
        AuthError::UserExists(_) => auth_error(StatusCode::CONFLICT, "user_exists", e.to_string()),
        AuthError::Engine(e) => {
            crate::envelope::sql_error(e.code(), e.to_string(), None, std::time::Instant::now())
        }
        AuthError::Internal(m) => {
            tracing::error!(error = %m, "auth failure");
            auth_error(
                StatusCode::INTERNAL_SERVER_ERROR,
                "internal_error",
                "Internal error",
            )
        }
    }
}

fn cookie(name: &str, value: &str, max_age: i64) -> HeaderValue {
    HeaderValue::from_str(&format!(
        "{name}={value}; HttpOnly; SameSite=Strict; Path=/; Max-Age={max_age}"
    ))
    .unwrap_or_else(|_| HeaderValue::from_static(""))
}

fn grant_response(state: &ApiState, grant: LoginGrant) -> Response {
    let now = Utc::now().timestamp();
    let body = LoginResponse {
        user: user_info(&grant.user),
        admin_ui_access: grant.user.role.is_admin(),
        expires_at: rfc3339_secs(grant.access.1),
        access_token: grant.access.0.clone(),
        refresh_token: Some(grant.refresh.0.clone()),
        refresh_expires_at: Some(rfc3339_secs(grant.refresh.1)),
    };
    let _ = state;
    let mut resp = Json(body).into_response();
    let headers = resp.headers_mut();
    headers.append(
        header::SET_COOKIE,
        cookie(ACCESS_COOKIE, &grant.access.0, grant.access.1 - now),
    );
    headers.append(
        header::SET_COOKIE,
        cookie(REFRESH_COOKIE, &grant.refresh.0, grant.refresh.1 - now),
    );
    resp
}

fn parse_json<T: serde::de::DeserializeOwned>(body: &Bytes) -> Result<T, Box<Response>> {
    serde_json::from_slice(body).map_err(|e| {
        Box::new(auth_error(
            StatusCode::BAD_REQUEST,
            "bad_request",
            format!("Invalid JSON body: {e}"),
        ))
    })
}

/// `POST /v1/api/auth/login`.
pub async fn login(
    State(state): State<ApiState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    body: Bytes,
) -> Response {
    let req: LoginRequest = match parse_json(&body) {
        Ok(r) => r,
        Err(resp) => return *resp,
    };
    if req.user.len() > 128 || req.password.len() > 256 {
        return auth_error(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "Invalid credentials",
        );
    }
    match state
        .app
        .auth()
        .login(&req.user, &req.password, Some(peer.ip()))
        .await
    {
        Ok(grant) => grant_response(&state, grant),
        Err(e) => map_auth_error(e),
    }
}

fn cookie_value<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find_map(|v| {
            v.split(';')
                .map(str::trim)
                .find_map(|kv| kv.strip_prefix(name)?.strip_prefix('='))
        })
}

/// `POST /v1/api/auth/refresh`: a refresh token (cookie, else Bearer) for a new pair.
pub async fn refresh(State(state): State<ApiState>, headers: HeaderMap) -> Response {
    let token = cookie_value(&headers, REFRESH_COOKIE).or_else(|| bearer_token(&headers).ok());
    let Some(token) = token else {
        return auth_error(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "Refresh endpoint requires a refresh token",
        );
    };
    match state
        .app
        .auth()
        .authenticate(token, TokenKind::Refresh)
        .await
    {
        Ok((_, user)) => match state.app.auth().grant(user) {
            Ok(grant) => grant_response(&state, grant),
            Err(e) => map_auth_error(e),
        },
        Err(_) => auth_error(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "Refresh endpoint requires a refresh token",
        ),
    }
}

/// `GET /v1/api/auth/me`.
pub async fn me(State(state): State<ApiState>, headers: HeaderMap) -> Response {
    let token = bearer_token(&headers)
        .ok()
        .or_else(|| cookie_value(&headers, ACCESS_COOKIE));
    let Some(token) = token else {
        return auth_error(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "Invalid credentials",
        );
    };
    match state
        .app
        .auth()
        .authenticate(token, TokenKind::Access)
        .await
    {
        Ok((_, user)) => Json(serde_json::json!({
            "user": user_info(&user),
            "admin_ui_access": user.role.is_admin(),
        }))
        .into_response(),
        Err(e) => map_auth_error(e),
    }
}

/// `POST /v1/api/auth/logout`: clears the cookies.
pub async fn logout() -> Response {
    let mut resp = Json(serde_json::json!({"message": "Logged out successfully"})).into_response();
    resp.headers_mut()
        .append(header::SET_COOKIE, cookie(ACCESS_COOKIE, "", 0));
    resp.headers_mut()
        .append(header::SET_COOKIE, cookie(REFRESH_COOKIE, "", 0));
    resp
}

fn setup_allowed(state: &ApiState, peer: &SocketAddr) -> bool {
    peer.ip().is_loopback() || state.app.config().auth.allow_remote_setup
}

/// `GET /v1/api/auth/status`.
pub async fn status(
    State(state): State<ApiState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
) -> Response {
    if !setup_allowed(&state, &peer) {
        return auth_error(
            StatusCode::FORBIDDEN,
            "forbidden",
            "Setup status is only available from localhost",
        );
    }
    match state.app.auth().needs_setup() {
        Ok(needs_setup) => Json(AuthStatusResponse {
            needs_setup,
            message: if needs_setup {
                "Server requires initial setup: POST /v1/api/auth/setup".into()
            } else {
                "Server is configured".into()
            },
        })
        .into_response(),
        Err(e) => map_auth_error(e),
    }
}

/// `POST /v1/api/auth/setup`.
pub async fn setup(
    State(state): State<ApiState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    body: Bytes,
) -> Response {
    if !setup_allowed(&state, &peer) {
        return auth_error(
            StatusCode::FORBIDDEN,
            "forbidden",
            "Setup is only available from localhost",
        );
    }
    let req: SetupRequest = match parse_json(&body) {
        Ok(r) => r,
        Err(resp) => return *resp,
    };
    match state
        .app
        .auth()
        .setup(&req.user, &req.password, &req.root_password, req.email)
        .await
    {
        Ok(user) => Json(SetupResponse {
            user: user_info(&user),
            message: "Server setup complete. Log in with the new credentials.".into(),
        })
        .into_response(),
        Err(e) => map_auth_error(e),
    }
}
