//! Stable error codes of the HTTP API and of WebSocket `error` messages, with the HTTP status
//! each one is answered with over HTTP (WebSocket-only codes have one for completeness).
//!
//! Codes are part of the wire contract (`docs/protocol.md` §3.3 and §4.4): clients key on them
//! (`TOKEN_EXPIRED` triggers a re-login), so a code never changes meaning.

use serde::{Deserialize, Serialize};

/// An error code of the SQL envelope.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum ErrorCode {
    /// Unparsable body, wrong content type, bad `EXECUTE AS` wrapper.
    InvalidInput,
    /// The SQL does not parse or is not allowed.
    InvalidSql,
    /// The statement splitter failed (e.g. unterminated string).
    BatchParseError,
    /// No statement in the request.
    EmptySql,
    /// A bad entry in `params`.
    InvalidParameter,
    /// `params` given with more than one statement.
    ParamsWithBatch,
    /// The statement failed: not found, already exists, constraint, type mismatch …
    SqlExecutionError,
    /// A table that does not exist.
    TableNotFound,
    /// The caller's role may not run the statement.
    PermissionDenied,
    /// Too many requests.
    RateLimitExceeded,
    /// A server-side failure (never caused by input).
    InternalError,
    /// No `Authorization` header.
    MissingAuthorization,
    /// Credentials or token rejected.
    InvalidCredentials,
    /// The access token has expired; clients re-login on this code.
    TokenExpired,
    /// The server has no root password yet.
    SetupRequired,
    /// Too many failed logins.
    AccountLocked,
    /// The request body exceeds the limit.
    BodyTooLarge,
    /// A query needed more memory, a larger result or a larger value than the limits allow.
    ResourceExhausted,
    /// The request ran past `[query] timeout_secs`, or did not deliver its body in time.
    QueryTimeout,
    /// `KILL QUERY` cancelled the request.
    QueryCancelled,
    /// WebSocket: a message other than `authenticate` before authenticating.
    AuthRequired,
    /// WebSocket: an empty or too long subscription id.
    InvalidSubscriptionId,
    /// WebSocket: the user holds the most subscriptions allowed.
    SubscriptionLimitExceeded,
    /// WebSocket: the caller may not read the table, or lost the right to.
    Unauthorized,
    /// WebSocket: the table (or subscription) does not exist.
    NotFound,
    /// WebSocket: a query shape live queries do not support.
    Unsupported,
    /// WebSocket: the subscription could not be served (initial read failed, too slow a reader).
    SubscriptionFailed,
    /// WebSocket: a row could not be encoded (defined by the protocol; not sent today).
    ConversionError,
    /// WebSocket: `next_batch` for a subscription that does not exist.
    BatchFetchFailed,
    /// WebSocket: a client message over the size limit.
    MessageTooLarge,
    /// WebSocket: a binary message.
    UnsupportedData,
    /// COMMIT lost to a concurrent write of the same rows; nothing was written (retry).
    TransactionConflict,
    /// A statement inside a transaction that already failed (until ROLLBACK).
    TransactionAborted,
    /// WebSocket: a malformed message (defined by the protocol; not sent today: an unreadable
    /// message closes the connection).
    Protocol,
    /// Cluster: this node does not lead the group the statement writes, and could not forward
    /// it; the message ends with `Leader: <url>` when the leader is known. Nothing was written.
    NotLeader,
    /// Cluster: the write's group has no quorum (or stopped); it may or may not have been
    /// committed.
    ClusterUnavailable,
    /// Cluster: forwarding the statement to its group's leader failed.
    ForwardFailed,
}

impl ErrorCode {
    /// The HTTP status this code is answered with.
    pub fn http_status(&self) -> u16 {
        match self {
            Self::InvalidInput
            | Self::InvalidSql
            | Self::BatchParseError
            | Self::EmptySql
            | Self::InvalidParameter
            | Self::ParamsWithBatch
            | Self::SqlExecutionError
            | Self::TableNotFound
            | Self::ResourceExhausted
            | Self::QueryCancelled
            | Self::InvalidSubscriptionId
            | Self::Unsupported
            | Self::ConversionError
            | Self::BatchFetchFailed
            | Self::UnsupportedData
            | Self::TransactionAborted
            | Self::Protocol => 400,
            Self::TransactionConflict => 409,
            Self::AuthRequired | Self::Unauthorized => 401,
            Self::NotFound => 404,
            Self::MessageTooLarge => 413,
            Self::SubscriptionLimitExceeded => 429,
            Self::SubscriptionFailed => 500,
            // Not 408: browsers resend a request answered 408, which would run it again.
            Self::QueryTimeout => 504,
            Self::MissingAuthorization
            | Self::InvalidCredentials
            | Self::TokenExpired
            | Self::AccountLocked => 401,
            Self::PermissionDenied => 403,
            Self::BodyTooLarge => 413,
            Self::SetupRequired => 428,
            Self::RateLimitExceeded => 429,
            Self::InternalError => 500,
            Self::NotLeader | Self::ClusterUnavailable => 503,
            Self::ForwardFailed => 502,
        }
    }

    /// The code as it appears on the wire.
    pub fn as_str(&self) -> &'static str {
        match self {
            Self::InvalidInput => "INVALID_INPUT",
            Self::InvalidSql => "INVALID_SQL",
            Self::BatchParseError => "BATCH_PARSE_ERROR",
            Self::EmptySql => "EMPTY_SQL",
            Self::InvalidParameter => "INVALID_PARAMETER",
            Self::ParamsWithBatch => "PARAMS_WITH_BATCH",
            Self::SqlExecutionError => "SQL_EXECUTION_ERROR",
            Self::TableNotFound => "TABLE_NOT_FOUND",
            Self::PermissionDenied => "PERMISSION_DENIED",
            Self::RateLimitExceeded => "RATE_LIMIT_EXCEEDED",
            Self::InternalError => "INTERNAL_ERROR",
            Self::MissingAuthorization => "MISSING_AUTHORIZATION",
            Self::InvalidCredentials => "INVALID_CREDENTIALS",
            Self::TokenExpired => "TOKEN_EXPIRED",
            Self::SetupRequired => "SETUP_REQUIRED",
            Self::AccountLocked => "ACCOUNT_LOCKED",
            Self::BodyTooLarge => "BODY_TOO_LARGE",
            Self::ResourceExhausted => "RESOURCE_EXHAUSTED",
            Self::QueryTimeout => "QUERY_TIMEOUT",
            Self::QueryCancelled => "QUERY_CANCELLED",
            Self::AuthRequired => "AUTH_REQUIRED",
            Self::InvalidSubscriptionId => "INVALID_SUBSCRIPTION_ID",
            Self::SubscriptionLimitExceeded => "SUBSCRIPTION_LIMIT_EXCEEDED",
            Self::Unauthorized => "UNAUTHORIZED",
            Self::NotFound => "NOT_FOUND",
            Self::Unsupported => "UNSUPPORTED",
            Self::SubscriptionFailed => "SUBSCRIPTION_FAILED",
            Self::ConversionError => "CONVERSION_ERROR",
            Self::BatchFetchFailed => "BATCH_FETCH_FAILED",
            Self::MessageTooLarge => "MESSAGE_TOO_LARGE",
            Self::UnsupportedData => "UNSUPPORTED_DATA",
            Self::Protocol => "PROTOCOL",
            Self::TransactionConflict => "TRANSACTION_CONFLICT",
            Self::TransactionAborted => "TRANSACTION_ABORTED",
            Self::NotLeader => "NOT_LEADER",
            Self::ClusterUnavailable => "CLUSTER_UNAVAILABLE",
            Self::ForwardFailed => "FORWARD_FAILED",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn serde_matches_as_str() {
        for code in [
            ErrorCode::InvalidSql,
            ErrorCode::TokenExpired,
            ErrorCode::ParamsWithBatch,
        ] {
            assert_eq!(
                serde_json::to_string(&code).unwrap(),
                format!("\"{}\"", code.as_str())
            );
        }
    }
}
