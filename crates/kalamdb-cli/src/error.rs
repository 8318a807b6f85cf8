//! What can go wrong for a `kalam` user, each as one human line (never a stack trace), and the
//! process exit code it maps to.

/// A failure the CLI reports.
#[derive(Debug, thiserror::Error)]
pub enum CliError {
    /// The server could not be reached.
    #[error("cannot reach the server at {url}: {reason} (is it running? see --url)")]
    Connect {
        /// Where it tried.
        url: String,
        /// What the transport said.
        reason: String,
    },
    /// Login or token refresh refused.
    #[error("{0}")]
    Auth(String),
    /// The server answered with an error envelope.
    #[error("{code}: {message}")]
    Server {
        /// The stable code (`SQL_EXECUTION_ERROR`, `PERMISSION_DENIED`, …).
        code: String,
        /// The server's message.
        message: String,
    },
    /// The user pressed Ctrl-C during a request.
    #[error("cancelled")]
    Cancelled,
    /// Wrong usage (a bad flag value, a backslash command's argument).
    #[error("{0}")]
    Usage(String),
    /// A local file could not be read or written.
    #[error("{path}: {reason}")]
    File {
        /// The file.
        path: String,
        /// Why.
        reason: String,
    },
    /// Anything else (a malformed reply, a WebSocket failure).
    #[error("{0}")]
    Other(String),
}

impl CliError {
    /// The process exit code: 1 for a statement the server refused, 2 for wrong usage, 3 when
    /// the server is unreachable, 4 for authentication, 130 for Ctrl-C, 1 otherwise.
    pub fn exit_code(&self) -> u8 {
        match self {
            CliError::Usage(_) => 2,
            CliError::Connect { .. } => 3,
            CliError::Auth(_) => 4,
            CliError::Cancelled => 130,
            _ => 1,
        }
    }

    /// A file error for `path`.
    pub fn file(path: &std::path::Path, e: impl std::fmt::Display) -> Self {
        CliError::File {
            path: path.display().to_string(),
            reason: e.to_string(),
        }
    }
}

/// Result alias of the CLI.
pub type Result<T, E = CliError> = std::result::Result<T, E>;
