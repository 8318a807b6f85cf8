//! `[websocket]` of `server.toml`: limits of live-query connections (`GET /v1/ws`). Transport
//! settings live with the transport; the server composes them with the engine's sections.

use kalamdb_core::config::ConfigError;
use serde::{Deserialize, Serialize};

/// `[websocket]`: live-query connections (`GET /v1/ws`).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct WebSocketConfig {
    /// Seconds a new connection has to send `authenticate` (when the upgrade carried no token).
    pub auth_timeout_secs: u64,
    /// Seconds of client silence after which a connection is closed (1000).
    pub client_timeout_secs: u64,
    /// Largest client message handled, in bytes; larger ones get `MESSAGE_TOO_LARGE`.
    pub max_message_bytes: usize,
    /// Client messages per second per connection; more get `RATE_LIMIT_EXCEEDED`.
    pub max_messages_per_sec: u32,
    /// Server messages queued per connection; a connection that falls further behind is
    /// closed, so it never slows writers or other subscribers.
    pub outbound_queue: usize,
    /// Subscriptions one connection may hold (`SUBSCRIPTION_LIMIT_EXCEEDED` beyond).
    pub max_subscriptions_per_connection: usize,
}

impl Default for WebSocketConfig {
    fn default() -> Self {
        Self {
            auth_timeout_secs: 3,
            client_timeout_secs: 10,
            max_message_bytes: 1024 * 1024,
            max_messages_per_sec: 50,
            outbound_queue: 4096,
            max_subscriptions_per_connection: 1000,
        }
    }
}

impl WebSocketConfig {
    /// Every value must be positive.
    pub fn validate(&self) -> Result<(), ConfigError> {
        for (key, value) in [
            (
                "websocket.auth_timeout_secs",
                self.auth_timeout_secs as usize,
            ),
            (
                "websocket.client_timeout_secs",
                self.client_timeout_secs as usize,
            ),
            ("websocket.max_message_bytes", self.max_message_bytes),
            (
                "websocket.max_messages_per_sec",
                self.max_messages_per_sec as usize,
            ),
            ("websocket.outbound_queue", self.outbound_queue),
            (
                "websocket.max_subscriptions_per_connection",
                self.max_subscriptions_per_connection,
            ),
        ] {
            if value == 0 {
                return Err(ConfigError::Invalid {
                    key,
                    reason: "must be > 0".into(),
                });
            }
        }
        Ok(())
    }
}
