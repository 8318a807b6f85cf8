//! Errors of live-query requests, with the protocol's stable codes.

/// A refused or failed live-query request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct LiveError {
    /// `INVALID_SQL`, `UNSUPPORTED`, `NOT_FOUND`, `UNAUTHORIZED`, …
    pub(crate) code: &'static str,
    /// What went wrong, for the client.
    pub(crate) message: String,
}

impl LiveError {
    pub(crate) fn new(code: &'static str, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
        }
    }

    pub(crate) fn invalid(message: impl Into<String>) -> Self {
        Self::new("INVALID_SQL", message)
    }

    pub(crate) fn unsupported(message: impl Into<String>) -> Self {
        Self::new("UNSUPPORTED", message)
    }
}

impl std::fmt::Display for LiveError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.code, self.message)
    }
}

impl std::error::Error for LiveError {}
