//! `[security.cors]` of `server.toml`: which web origins may call the server from a browser.
//! HTTP requests get their CORS headers (and preflights their answer) from `tower-http`'s
//! `CorsLayer`; WebSocket upgrades, which browsers do not subject to CORS, are checked against
//! the same list here (`GET /v1/ws` from another origin: 403).
//!
//! Off by default: no origin is allowed besides the server's own (a page it serves), and
//! clients that send no `Origin` (everything but browsers) are never affected.

use axum::http::{HeaderMap, HeaderName, HeaderValue, Method, header};
use kalamdb_core::config::ConfigError;
use serde::{Deserialize, Serialize};
use std::time::Duration;
use tower_http::cors::{AllowOrigin, CorsLayer};

/// `[security]` of `server.toml`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SecurityConfig {
    /// `[security.cors]`.
    pub cors: CorsConfig,
}

/// `[security.cors]`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct CorsConfig {
    /// Origins allowed (`https://app.example.com`), or `["*"]` for any; empty: none but the
    /// server's own.
    pub allowed_origins: Vec<String>,
    /// Methods a cross-origin request may use.
    pub allowed_methods: Vec<String>,
    /// Request headers a cross-origin request may send.
    pub allowed_headers: Vec<String>,
    /// Whether cross-origin requests may carry cookies (not with `["*"]`).
    pub allow_credentials: bool,
    /// Seconds a browser may cache a preflight answer.
    pub max_age_secs: u64,
}

impl Default for CorsConfig {
    fn default() -> Self {
        Self {
            allowed_origins: Vec::new(),
            allowed_methods: ["GET", "POST", "OPTIONS"].map(String::from).to_vec(),
            allowed_headers: [
                "authorization",
                "content-type",
                crate::read_your_writes::MIN_APPLIED,
                crate::read_your_writes::CONSISTENCY,
            ]
            .map(String::from)
            .to_vec(),
            allow_credentials: false,
            max_age_secs: 600,
        }
    }
}

impl CorsConfig {
    fn any(&self) -> bool {
        self.allowed_origins.iter().any(|o| o == "*")
    }

    /// Checks the lists parse.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let bad = |reason: String| ConfigError::Invalid {
            key: "security.cors",
            reason,
        };
        if self.any() && self.allow_credentials {
            return Err(bad(
                "allow_credentials cannot be true with allowed_origins = [\"*\"]".into(),
            ));
        }
        for o in self.allowed_origins.iter().filter(|o| *o != "*") {
            HeaderValue::from_str(o).map_err(|_| bad(format!("bad origin {o:?}")))?;
        }
        for m in &self.allowed_methods {
            Method::from_bytes(m.as_bytes()).map_err(|_| bad(format!("bad method {m:?}")))?;
        }
        for h in &self.allowed_headers {
            HeaderName::from_bytes(h.as_bytes()).map_err(|_| bad(format!("bad header {h:?}")))?;
        }
        Ok(())
    }

    /// The layer answering preflights and adding CORS headers; `None` when no origin is
    /// allowed (same-origin pages need none).
    pub fn layer(&self) -> Option<CorsLayer> {
        if self.allowed_origins.is_empty() {
            return None;
        }
        let origins = if self.any() {
            AllowOrigin::any()
        } else {
            AllowOrigin::list(
                self.allowed_origins
                    .iter()
                    .filter_map(|o| HeaderValue::from_str(o).ok()),
            )
        };
        let methods: Vec<Method> = self
            .allowed_methods
            .iter()
            .filter_map(|m| Method::from_bytes(m.as_bytes()).ok())
            .collect();
        let headers: Vec<HeaderName> = self
            .allowed_headers
            .iter()
            .filter_map(|h| HeaderName::from_bytes(h.as_bytes()).ok())
            .collect();
        Some(
            CorsLayer::new()
                .allow_origin(origins)
                .allow_methods(methods)
                .allow_headers(headers)
                // A cluster member's read-your-writes marks (read_your_writes.rs).
                .expose_headers([HeaderName::from_static(crate::read_your_writes::APPLIED)])
                .allow_credentials(self.allow_credentials)
                .max_age(Duration::from_secs(self.max_age_secs)),
        )
    }

    /// Whether a WebSocket upgrade with these headers may proceed: no `Origin` (not a
    /// browser), the server's own origin (same host and port as `Host`), or an allowed one.
    pub fn allows_upgrade(&self, headers: &HeaderMap) -> bool {
        let Some(origin) = headers.get(header::ORIGIN).and_then(|o| o.to_str().ok()) else {
            return true;
        };
        if self.any()
            || self
                .allowed_origins
                .iter()
                .any(|o| o.eq_ignore_ascii_case(origin))
        {
            return true;
        }
        let host = headers.get(header::HOST).and_then(|h| h.to_str().ok());
        let origin_host = origin.split_once("://").map(|(_, rest)| rest);
        matches!((host, origin_host), (Some(h), Some(o)) if h.eq_ignore_ascii_case(o))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(origin: Option<&str>) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(header::HOST, HeaderValue::from_static("127.0.0.1:8080"));
        if let Some(o) = origin {
            h.insert(header::ORIGIN, HeaderValue::from_str(o).unwrap());
        }
        h
    }

    #[test]
    fn upgrades_from_other_origins_need_the_list() {
        let off = CorsConfig::default();
        assert!(off.allows_upgrade(&headers(None)));
        assert!(off.allows_upgrade(&headers(Some("http://127.0.0.1:8080"))));
        assert!(!off.allows_upgrade(&headers(Some("http://evil.example"))));
        let on = CorsConfig {
            allowed_origins: vec!["https://app.example".into()],
            ..CorsConfig::default()
        };
        assert!(on.allows_upgrade(&headers(Some("https://app.example"))));
        assert!(!on.allows_upgrade(&headers(Some("https://other.example"))));
        assert!(off.layer().is_none() && on.layer().is_some());
        let wild_with_cookies = CorsConfig {
            allowed_origins: vec!["*".into()],
            allow_credentials: true,
            ..CorsConfig::default()
        };
        assert!(wild_with_cookies.validate().is_err());
    }
}
