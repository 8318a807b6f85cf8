//! The engine's error type and its mapping to stable [`ErrorCode`]s.
//!
//! Variants are grouped by who is at fault: the statement (`InvalidSql`, `NotFound`,
//! `AlreadyExists`, `Constraint`, `TypeMismatch`, `InvalidParameter`), the caller's rights
//! (`PermissionDenied`, `Unauthorized`) or the server (`Store`, `Internal`). Only the last group
//! is hidden from non-admin callers.

use datafusion::error::DataFusionError;
use kalamdb_commons::ErrorCode;

/// Errors of the engine.
#[derive(Debug, thiserror::Error)]
pub enum KalamError {
    /// The SQL does not parse, or uses a construct that is not allowed.
    #[error("{0}")]
    InvalidSql(String),
    /// A valid statement of a form this path does not support (a subscription with ORDER BY).
    #[error("{0}")]
    Unsupported(String),
    /// A named object does not exist.
    #[error("{kind} '{name}' not found")]
    NotFound {
        /// namespace, table, column, user …
        kind: &'static str,
        /// Its name.
        name: String,
    },
    /// A named object exists already.
    #[error("{kind} '{name}' already exists")]
    AlreadyExists {
        /// namespace, table, user …
        kind: &'static str,
        /// Its name.
        name: String,
    },
    /// A constraint was violated (primary key, NOT NULL, non-empty namespace …).
    #[error("{0}")]
    Constraint(String),
    /// A value does not fit its column.
    #[error("{0}")]
    TypeMismatch(String),
    /// A bad `$n` parameter.
    #[error("{0}")]
    InvalidParameter(String),
    /// Any other problem with the statement.
    #[error("{0}")]
    InvalidInput(String),
    /// The request itself is malformed (e.g. a bad `EXECUTE AS` wrapper).
    #[error("{0}")]
    BadRequest(String),
    /// The caller's role may not do this.
    #[error("{0}")]
    PermissionDenied(String),
    /// Credentials or token rejected.
    #[error("{0}")]
    Unauthorized(String),
    /// DataFusion failed while planning or running a query.
    #[error("{0}")]
    Query(#[from] DataFusionError),
    /// The hot store failed.
    #[error("storage failure: {0}")]
    Store(kalamdb_store::StoreError),
    /// The table's definition changed (ALTER TABLE) between planning a write and taking its
    /// lock; the write did nothing and is retried.
    #[error("{0} was altered while the statement ran; run it again")]
    SchemaChanged(String),
    /// A query needed more than a configured limit allows (memory, result size, value size).
    #[error("{0}")]
    ResourceExhausted(String),
    /// The request ran longer than `[query] timeout_secs` and was cancelled.
    #[error("Query cancelled after {0} s: it exceeded query.timeout_secs")]
    Timeout(u64),
    /// `KILL QUERY` cancelled the request.
    #[error("Query was cancelled by KILL QUERY")]
    Cancelled,
    /// A transaction's COMMIT lost to another write of the same rows (first committer wins);
    /// nothing was written and the client may run the transaction again.
    #[error("{0}")]
    TransactionConflict(String),
    /// A statement of a transaction that failed earlier: nothing runs until ROLLBACK.
    #[error("{0}")]
    TransactionAborted(String),
    /// A bug or an environment failure.
    #[error("internal error: {0}")]
    Internal(String),
}

impl From<kalamdb_store::StoreError> for KalamError {
    /// A table's partition that vanished under a statement means the table was dropped
    /// meanwhile: that is the statement's `NotFound`, not a server failure.
    fn from(e: kalamdb_store::StoreError) -> Self {
        if let kalamdb_store::StoreError::PartitionNotFound(name) = &e
            && let Some(table) = crate::partitions::table_of_partition(name)
        {
            return Self::NotFound {
                kind: "Table",
                name: table,
            };
        }
        Self::Store(e)
    }
}

impl From<kalamdb_filestore::FileStoreError> for KalamError {
    fn from(e: kalamdb_filestore::FileStoreError) -> Self {
        KalamError::Internal(format!("cold storage: {e}"))
    }
}

/// Result alias of the engine.
pub type Result<T, E = KalamError> = std::result::Result<T, E>;

impl KalamError {
    /// The stable code clients see.
    pub fn code(&self) -> ErrorCode {
        match self {
            Self::InvalidSql(_) => ErrorCode::InvalidSql,
            Self::Unsupported(_) => ErrorCode::Unsupported,
            Self::NotFound { .. }
            | Self::AlreadyExists { .. }
            | Self::Constraint(_)
            | Self::TypeMismatch(_)
            | Self::InvalidInput(_)
            | Self::SchemaChanged(_) => ErrorCode::SqlExecutionError,
            Self::InvalidParameter(_) => ErrorCode::InvalidParameter,
            Self::BadRequest(_) => ErrorCode::InvalidInput,
            Self::PermissionDenied(_) => ErrorCode::PermissionDenied,
            Self::Unauthorized(_) => ErrorCode::InvalidCredentials,
            Self::Query(e) => datafusion_code(e),
            Self::ResourceExhausted(_) => ErrorCode::ResourceExhausted,
            Self::Timeout(_) => ErrorCode::QueryTimeout,
            Self::Cancelled => ErrorCode::QueryCancelled,
            Self::TransactionConflict(_) => ErrorCode::TransactionConflict,
            Self::TransactionAborted(_) => ErrorCode::TransactionAborted,
            Self::Store(kalamdb_store::StoreError::NotLeader { .. }) => ErrorCode::NotLeader,
            Self::Store(kalamdb_store::StoreError::Unavailable(_)) => ErrorCode::ClusterUnavailable,
            Self::Store(_) | Self::Internal(_) => ErrorCode::InternalError,
        }
    }

    /// Whether the message may be shown to any caller (it describes the caller's statement, not
    /// the server's internals).
    pub fn is_public(&self) -> bool {
        match self {
            Self::Store(
                kalamdb_store::StoreError::NotLeader { .. }
                | kalamdb_store::StoreError::Unavailable(_)
                | kalamdb_store::StoreError::SpansGroups(_),
            ) => true,
            Self::Store(_) | Self::Internal(_) => false,
            Self::Query(e) => !matches!(e.find_root(), DataFusionError::Internal(_)),
            _ => true,
        }
    }

    /// Turns a DataFusion error back into ours when it wraps one of ours.
    pub fn from_datafusion(e: DataFusionError) -> Self {
        match e {
            DataFusionError::External(inner) => match inner.downcast::<KalamError>() {
                Ok(k) => *k,
                Err(other) => Self::Query(DataFusionError::External(other)),
            },
            DataFusionError::Context(ctx, inner) => match Self::from_datafusion(*inner) {
                Self::Query(q) => Self::Query(DataFusionError::Context(ctx, Box::new(q))),
                other => other,
            },
            DataFusionError::Shared(shared) => Self::Query(DataFusionError::Shared(shared)),
            other => Self::Query(other),
        }
    }

    /// Wraps this error for returning through a DataFusion API.
    pub fn into_datafusion(self) -> DataFusionError {
        DataFusionError::External(Box::new(self))
    }
}

fn datafusion_code(e: &DataFusionError) -> ErrorCode {
    match e.find_root() {
        DataFusionError::SQL(..) => ErrorCode::InvalidSql,
        DataFusionError::Internal(_) => ErrorCode::InternalError,
        DataFusionError::ResourcesExhausted(_) => ErrorCode::ResourceExhausted,
        DataFusionError::External(inner) => inner
            .downcast_ref::<KalamError>()
            .map(|k| k.code())
            .unwrap_or(ErrorCode::SqlExecutionError),
        _ => ErrorCode::SqlExecutionError,
    }
}

/// Awaits `$work` again (up to three more times) while it fails with
/// [`KalamError::SchemaChanged`]: an ALTER overtook it before it wrote anything. (A macro, not
/// a function taking an async closure, whose future would not be provably `Send`.)
#[macro_export]
macro_rules! retry_on_schema_change {
    ($work:expr) => {{
        let mut left = 3;
        loop {
            match $work.await {
                Err($crate::error::KalamError::SchemaChanged(_)) if left > 0 => left -= 1,
                other => break other,
            }
        }
    }};
}
