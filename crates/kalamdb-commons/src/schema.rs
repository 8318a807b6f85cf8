//! Table and column definitions, table types, access levels and roles.
//!
//! A [`TableDefinition`] is what `system.schemas` stores, one per version. Columns carry a stable
//! `column_id` that never changes once allocated: stored rows are keyed by it, so renames and
//! drops (ALTER TABLE, a later issue) never reinterpret old data.

use crate::datatype::KalamDataType;
use crate::ids::{NamespaceId, StorageId, TableId, TableName};
use serde::{Deserialize, Serialize};
use std::fmt;

/// Name of the version column every application table carries.
pub const SEQ_COLUMN: &str = "_seq";
/// Name of the tombstone column of USER and SHARED tables.
pub const DELETED_COLUMN: &str = "_deleted";

/// The kind of table.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum TableType {
    /// Per-user partitioned.
    User,
    /// One global partition guarded by an access level.
    Shared,
    /// Per-user, append-only, rows expire after a TTL.
    Stream,
    /// Built into the server, read-only to SQL.
    System,
}

impl TableType {
    /// Upper-case name as shown in `system.tables`.
    pub fn as_str(&self) -> &'static str {
        match self {
            Self::User => "USER",
            Self::Shared => "SHARED",
            Self::Stream => "STREAM",
            Self::System => "SYSTEM",
        }
    }
}

impl fmt::Display for TableType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Who may read and write a SHARED table.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum AccessLevel {
    /// Anyone may read.
    Public,
    /// service and above.
    Private,
    /// service and above (kept distinct for future rules).
    Restricted,
    /// dba and system only.
    Dba,
}

impl AccessLevel {
    /// Parses `PUBLIC`, `PRIVATE`, `RESTRICTED` or `DBA`, case-insensitively.
    pub fn parse(s: &str) -> Option<Self> {
        match s.to_ascii_uppercase().as_str() {
            "PUBLIC" => Some(Self::Public),
            "PRIVATE" => Some(Self::Private),
            "RESTRICTED" => Some(Self::Restricted),
            "DBA" => Some(Self::Dba),
            _ => None,
        }
    }

    /// Upper-case name.
    pub fn as_str(&self) -> &'static str {
        match self {
            Self::Public => "PUBLIC",
            Self::Private => "PRIVATE",
            Self::Restricted => "RESTRICTED",
            Self::Dba => "DBA",
        }
    }
}

/// A user's role, lowercase on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Not logged in.
    Anonymous,
    /// An application end user.
    User,
    /// A backend service account.
    Service,
    /// A database administrator.
    Dba,
    /// The built-in superuser.
    System,
}

impl Role {
    /// Parses a role name or one of its aliases (`admin` -> dba, `developer`/`analyst` ->
    /// service, `viewer`/`readonly` -> user), case-insensitively.
    pub fn parse(s: &str) -> Option<Self> {
        match s.to_ascii_lowercase().as_str() {
            "user" | "viewer" | "readonly" => Some(Self::User),
            "service" | "developer" | "analyst" => Some(Self::Service),
            "dba" | "admin" => Some(Self::Dba),
            "system" => Some(Self::System),
            _ => None,
        }
    }

    /// Lowercase name.
    pub fn as_str(&self) -> &'static str {
        match self {
            Self::Anonymous => "anonymous",
            Self::User => "user",
            Self::Service => "service",
            Self::Dba => "dba",
            Self::System => "system",
        }
    }

    /// dba or system.
    pub fn is_admin(&self) -> bool {
        matches!(self, Self::Dba | Self::System)
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A column default, evaluated at insert time when the column is omitted.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", content = "value", rename_all = "snake_case")]
pub enum ColumnDefault {
    /// A literal, kept as its SQL text (`42`, `'x'`, `TRUE`, `NULL`).
    Literal(String),
    /// `SNOWFLAKE_ID()`.
    SnowflakeId,
    /// `UUID_V7()`.
    UuidV7,
    /// `ULID()`.
    Ulid,
    /// `NOW()` / `CURRENT_TIMESTAMP`.
    Now,
    /// `CURRENT_USER()`.
    CurrentUser,
}

impl ColumnDefault {
    /// The SQL text of the default, as DESCRIBE shows it.
    pub fn sql(&self) -> String {
        match self {
            Self::Literal(s) => s.clone(),
            Self::SnowflakeId => "SNOWFLAKE_ID()".into(),
            Self::UuidV7 => "UUID_V7()".into(),
            Self::Ulid => "ULID()".into(),
            Self::Now => "NOW()".into(),
            Self::CurrentUser => "CURRENT_USER()".into(),
        }
    }
}

/// One column of a table.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ColumnDefinition {
    /// Stable id, never reused within a table.
    pub column_id: u32,
    /// Column name as declared.
    pub name: String,
    /// Position in `SELECT *`, starting at 1.
    pub ordinal: u32,
    /// Column type.
    pub data_type: KalamDataType,
    /// Whether NULL is allowed.
    pub nullable: bool,
    /// Whether this is the primary-key column.
    pub primary_key: bool,
    /// Default applied when an INSERT omits the column.
    pub default: Option<ColumnDefault>,
    /// For a column added by `ALTER TABLE`: the `_seq` of the change. Rows older than it
    /// never had the column and read [`ColumnDefinition::missing_value`] (or NULL).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub added_at_seq: Option<i64>,
    /// For a column added by `ALTER TABLE` with a literal DEFAULT: that literal's SQL text,
    /// which rows older than the change read from then on, whatever the DEFAULT becomes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub missing_value: Option<String>,
}

/// A table definition, one per schema version.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TableDefinition {
    /// Namespace.
    pub namespace: NamespaceId,
    /// Table name.
    pub name: TableName,
    /// Kind of table.
    pub table_type: TableType,
    /// User columns in ordinal order (system columns are implied by the table type).
    pub columns: Vec<ColumnDefinition>,
    /// Schema version, starting at 1.
    pub version: u32,
    /// Next column id to allocate.
    pub next_column_id: u32,
    /// Access level (SHARED tables only).
    pub access_level: Option<AccessLevel>,
    /// Row TTL (STREAM tables only).
    pub ttl_seconds: Option<u64>,
    /// Flush policy text (`rows:N,interval:S`), if set.
    pub flush_policy: Option<String>,
    /// Storage holding the table's cold files.
    pub storage_id: StorageId,
    /// Creation time, microseconds since the epoch.
    pub created_at: i64,
    /// Time of this version, microseconds since the epoch.
    pub updated_at: i64,
    /// Free-form comment.
    pub comment: Option<String>,
}

impl TableDefinition {
    /// Version 1 of a table with `columns`, on the `local` storage, with no access level, TTL,
    /// flush policy or comment, created at time 0 (callers set what they need).
    pub fn new(id: TableId, table_type: TableType, columns: Vec<ColumnDefinition>) -> Self {
        Self {
            namespace: id.namespace,
            name: id.table,
            table_type,
            next_column_id: columns.iter().map(|c| c.column_id).max().unwrap_or(0) + 1,
            columns,
            version: 1,
            access_level: None,
            ttl_seconds: None,
            flush_policy: None,
            storage_id: StorageId::new("local"),
            created_at: 0,
            updated_at: 0,
            comment: None,
        }
    }

    /// The table's id.
    pub fn table_id(&self) -> TableId {
        TableId::new(self.namespace.clone(), self.name.clone())
    }

    /// The primary-key column, if the table has one.
    pub fn primary_key(&self) -> Option<&ColumnDefinition> {
        self.columns.iter().find(|c| c.primary_key)
    }

    /// Finds a user column by name, case-insensitively.
    pub fn column(&self, name: &str) -> Option<&ColumnDefinition> {
        self.columns
            .iter()
            .find(|c| c.name.eq_ignore_ascii_case(name))
    }

    /// Whether rows carry the `_deleted` column (USER and SHARED tables).
    pub fn has_deleted_column(&self) -> bool {
        matches!(self.table_type, TableType::User | TableType::Shared)
    }

    /// Whether rows carry the `_seq` column (every application table).
    pub fn has_seq_column(&self) -> bool {
        self.table_type != TableType::System
    }
}
