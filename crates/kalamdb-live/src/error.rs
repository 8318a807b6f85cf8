//! Errors of live-query requests, with the protocol's stable codes.

use kalamdb_commons::ErrorCode;

/// A refused or failed live-query request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct LiveError {
    /// `INVALID_SQL`, `UNSUPPORTED`, `NOT_FOUND`, `UNAUTHORIZED`, …
    pub(crate) code: ErrorCode,
    /// What went wrong, for the client.
    pub(crate) message: String,
}

impl LiveError {
    pub(crate) fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
        }
    }

    pub(crate) fn invalid(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::InvalidSql, message)
    }

    pub(crate) fn unsupported(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::Unsupported, message)
    }
}

impl std::fmt::Display for LiveError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.code.as_str(), self.message)
    }
}

impl std::error::Error for LiveError {}
