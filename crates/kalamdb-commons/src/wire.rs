//! HTTP request and response bodies (`docs/protocol.md` §3-4), declared once for the server,
//! the bench tool and the tests.

use crate::datatype::KalamDataType;
use crate::error_code::ErrorCode;
use serde::{Deserialize, Serialize};

/// Body of `POST /v1/api/sql`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct SqlRequest {
    /// One or more statements separated by `;`.
    pub sql: String,
    /// Values for `$1 … $n` (single statement only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub params: Option<Vec<serde_json::Value>>,
    /// Default namespace for unqualified table names.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace_id: Option<String>,
    /// Runs the statements inside this open transaction (the id a lone `BEGIN` answered
    /// with); KalamDB's extension of upstream's request.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub transaction_id: Option<String>,
}

/// `status` of the SQL envelope.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ResponseStatus {
    /// Every statement ran.
    Success,
    /// A statement failed; see `error`.
    Error,
}

/// The SQL response envelope.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SqlResponse {
    /// success or error.
    pub status: ResponseStatus,
    /// One entry per reported statement.
    #[serde(default)]
    pub results: Vec<QueryResult>,
    /// Server-side time in milliseconds, three decimals.
    #[serde(default)]
    pub took: f64,
    /// Set when `status` is error.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<ErrorDetail>,
}

/// The error object of the envelope.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ErrorDetail {
    /// Stable code.
    pub code: ErrorCode,
    /// Human-readable text.
    pub message: String,
    /// Optional extra detail (the failing statement, for admins).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub details: Option<String>,
}

/// One statement's result.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct QueryResult {
    /// Column descriptions (queries only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub schema: Option<Vec<SchemaField>>,
    /// Positional rows, one value per schema column (queries only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rows: Option<Vec<Vec<serde_json::Value>>>,
    /// Rows returned or affected.
    pub row_count: usize,
    /// Text for DDL and DML.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// Effective user of the statement.
    #[serde(default)]
    pub as_user: String,
    /// The transaction a `BEGIN`, `COMMIT` or `ROLLBACK` began or ended (KalamDB's
    /// extension; absent otherwise).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub transaction_id: Option<String>,
}

/// One column of a result schema.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SchemaField {
    /// Column name.
    pub name: String,
    /// Column type.
    pub data_type: KalamDataType,
    /// Position, from 0.
    pub index: usize,
    /// Sorted flags: `nn`, `pk`, `uq`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub flags: Option<Vec<String>>,
}

/// Body of `POST /v1/api/auth/login`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LoginRequest {
    /// The user id.
    #[serde(alias = "username")]
    pub user: String,
    /// The password.
    pub password: String,
}

/// A user as the auth endpoints describe it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct UserInfo {
    /// The user id.
    pub id: String,
    /// Lowercase role.
    pub role: String,
    /// Display name.
    #[serde(default)]
    pub name: Option<String>,
    /// Email, if any.
    #[serde(default)]
    pub email: Option<String>,
    /// RFC 3339.
    pub created_at: String,
    /// RFC 3339.
    pub updated_at: String,
}

/// Reply of login and refresh.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct LoginResponse {
    /// Who logged in.
    pub user: UserInfo,
    /// Whether the role may use the admin UI (dba, system).
    pub admin_ui_access: bool,
    /// Access-token expiry, RFC 3339.
    pub expires_at: String,
    /// HS256 access token.
    pub access_token: String,
    /// HS256 refresh token.
    #[serde(default)]
    pub refresh_token: Option<String>,
    /// Refresh-token expiry, RFC 3339.
    #[serde(default)]
    pub refresh_expires_at: Option<String>,
}

/// Body of `POST /v1/api/auth/setup`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SetupRequest {
    /// The first dba user to create.
    #[serde(alias = "username")]
    pub user: String,
    /// Its password.
    pub password: String,
    /// The password to give `root`.
    pub root_password: String,
    /// Optional email of the dba user.
    #[serde(default)]
    pub email: Option<String>,
}

/// Reply of `POST /v1/api/auth/setup`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SetupResponse {
    /// The dba user created.
    pub user: UserInfo,
    /// Text.
    pub message: String,
}

/// Reply of `GET /v1/api/auth/status`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct AuthStatusResponse {
    /// True while root has no password.
    pub needs_setup: bool,
    /// Text.
    pub message: String,
}

/// Error body of the auth endpoints: `{"error": "<snake_code>", "message": "…"}`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct AuthErrorBody {
    /// snake_case code (`unauthorized`, `setup_required` …).
    pub error: String,
    /// Text.
    pub message: String,
}

/// Reply of the health endpoints.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct HealthResponse {
    /// Always `healthy` when the server answers.
    pub status: String,
    /// Server version.
    pub version: String,
    /// `v1`.
    pub api_version: String,
    /// Build date.
    pub build_date: String,
}
