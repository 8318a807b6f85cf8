//! Typed identifiers and the identifier rules.
//!
//! Namespace, table and column names: ASCII letters, digits and `_`, at most 64 characters, not
//! starting with a digit or `_` (the underscore prefix is reserved for system columns), not a
//! reserved word. Names are case-sensitive as stored but compared case-insensitively for columns.
//! User ids follow the client SDK rule `[A-Za-z0-9_-]{1,128}`; node ids `[A-Za-z0-9-]{1,64}`.

use serde::{Deserialize, Serialize};
use std::fmt;

/// Why an identifier was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IdError {
    /// Empty name.
    #[error("{kind} name must not be empty")]
    Empty {
        /// What was being named ("namespace", "table", "column" …).
        kind: &'static str,
    },
    /// Too long.
    #[error("{kind} name '{name}' is longer than {max} characters")]
    TooLong {
        /// What was being named.
        kind: &'static str,
        /// The offending name.
        name: String,
        /// The limit.
        max: usize,
    },
    /// A character outside the allowed set, or a bad first character.
    #[error("{kind} name '{name}' is invalid: {rule}")]
    BadCharacters {
        /// What was being named.
        kind: &'static str,
        /// The offending name.
        name: String,
        /// The rule that was broken.
        rule: &'static str,
    },
    /// A reserved name.
    #[error("{kind} name '{name}' is reserved")]
    Reserved {
        /// What was being named.
        kind: &'static str,
        /// The offending name.
        name: String,
    },
}

/// Namespace names reserved for the server itself.
pub const RESERVED_NAMESPACES: &[&str] = &[
    "system",
    "sys",
    "root",
    "kalamdb",
    "kalam",
    "main",
    "default",
    "sql",
    "admin",
    "internal",
    "information_schema",
    "pg_catalog",
    "datafusion",
];

/// Column names reserved for system columns (any leading `_` is refused as well).
pub const RESERVED_COLUMNS: &[&str] = &[
    "_seq",
    "_deleted",
    "_id",
    "_row_id",
    "_rowid",
    "_key",
    "_updated",
    "_created",
    "_timestamp",
    "_version",
    "_hash",
];

/// SQL keywords refused as user identifiers: words PostgreSQL reserves (they would need
/// quoting everywhere) and the operators that would make expressions ambiguous. Non-reserved
/// keywords (`key`, `value`, `user`, `type`, `timestamp`, `index`, …) are ordinary names, as in
/// PostgreSQL and upstream KalamDB.
const RESERVED_WORDS: &[&str] = &[
    "select", "from", "where", "create", "table", "into", "and", "or", "not", "null", "true",
    "false", "primary", "order", "group", "by", "having", "limit", "offset", "join", "on", "as",
    "union", "with", "default", "case", "when", "then", "else", "end", "distinct", "all", "in",
    "is", "like", "between", "exists",
];

/// Folds an unquoted SQL identifier to lower case (quoted ones keep their case).
pub fn fold(value: &str, quoted: bool) -> String {
    if quoted {
        value.to_string()
    } else {
        value.to_ascii_lowercase()
    }
}

/// Checks a namespace, table or column name against the identifier rules.
pub fn validate_identifier(kind: &'static str, name: &str) -> Result<(), IdError> {
    if name.is_empty() {
        return Err(IdError::Empty { kind });
    }
    if name.len() > 64 {
        return Err(IdError::TooLong {
            kind,
            name: name.to_string(),
            max: 64,
        });
    }
    let bad = |rule| IdError::BadCharacters {
        kind,
        name: name.to_string(),
        rule,
    };
    if !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
        return Err(bad("only ASCII letters, digits and '_' are allowed"));
    }
    let first = name.as_bytes()[0];
    if first.is_ascii_digit() {
        return Err(bad("it must not start with a digit"));
    }
    if first == b'_' {
        return Err(bad(
            "names starting with '_' are reserved for system columns",
        ));
    }
    if RESERVED_WORDS.contains(&name.to_ascii_lowercase().as_str()) {
        return Err(IdError::Reserved {
            kind,
            name: name.to_string(),
        });
    }
    Ok(())
}

macro_rules! string_id {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
        #[serde(transparent)]
        pub struct $name(String);

        impl $name {
            /// Wraps a value that is already known to be valid (loaded from the catalog, or
            /// checked by the caller).
            pub fn new(value: impl Into<String>) -> Self {
                Self(value.into())
            }

            /// The id as a string slice.
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl From<&str> for $name {
            fn from(value: &str) -> Self {
                Self(value.to_string())
            }
        }

        impl AsRef<str> for $name {
            fn as_ref(&self) -> &str {
                &self.0
            }
        }
    };
}

string_id!(
    /// A namespace (DataFusion schema) name.
    NamespaceId
);
string_id!(
    /// A table name inside a namespace.
    TableName
);
string_id!(
    /// A user id; the user name is the id.
    UserId
);
string_id!(
    /// A storage id from `system.storages`.
    StorageId
);
string_id!(
    /// This server's node id, from `[server] node_id`.
    NodeId
);

impl NamespaceId {
    /// Validates a user-chosen namespace name (identifier rules plus reserved namespaces).
    pub fn parse(name: &str) -> Result<Self, IdError> {
        validate_identifier("namespace", name)?;
        if RESERVED_NAMESPACES.contains(&name.to_ascii_lowercase().as_str()) {
            return Err(IdError::Reserved {
                kind: "namespace",
                name: name.to_string(),
            });
        }
        Ok(Self(name.to_string()))
    }
}

impl TableName {
    /// Validates a user-chosen table name.
    pub fn parse(name: &str) -> Result<Self, IdError> {
        validate_identifier("table", name)?;
        Ok(Self(name.to_string()))
    }
}

impl UserId {
    /// Validates a user id: 1 to 128 characters of `[A-Za-z0-9_-]`.
    pub fn parse(name: &str) -> Result<Self, IdError> {
        if name.is_empty() {
            return Err(IdError::Empty { kind: "user" });
        }
        if name.len() > 128 {
            return Err(IdError::TooLong {
                kind: "user",
                name: name.to_string(),
                max: 128,
            });
        }
        if !name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
        {
            return Err(IdError::BadCharacters {
                kind: "user",
                name: name.to_string(),
                rule: "only ASCII letters, digits, '_' and '-' are allowed",
            });
        }
        Ok(Self(name.to_string()))
    }
}

impl NodeId {
    /// Validates a node id: 1 to 64 characters of letters, digits and hyphens.
    pub fn parse(name: &str) -> Result<Self, IdError> {
        if name.is_empty() {
            return Err(IdError::Empty { kind: "node" });
        }
        if name.len() > 64 {
            return Err(IdError::TooLong {
                kind: "node",
                name: name.to_string(),
                max: 64,
            });
        }
        if !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '-') {
            return Err(IdError::BadCharacters {
                kind: "node",
                name: name.to_string(),
                rule: "only ASCII letters, digits and '-' are allowed",
            });
        }
        Ok(Self(name.to_string()))
    }
}

/// A table's full name: namespace plus table. Displays as `ns.table`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct TableId {
    /// The namespace.
    pub namespace: NamespaceId,
    /// The table inside it.
    pub table: TableName,
}

impl TableId {
    /// Builds a table id from its two parts.
    pub fn new(namespace: NamespaceId, table: TableName) -> Self {
        Self { namespace, table }
    }
}

impl fmt::Display for TableId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}", self.namespace, self.table)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identifier_rules() {
        assert!(validate_identifier("table", "todos_2").is_ok());
        assert!(matches!(
            validate_identifier("table", ""),
            Err(IdError::Empty { .. })
        ));
        assert!(matches!(
            validate_identifier("table", "1abc"),
            Err(IdError::BadCharacters { .. })
        ));
        assert!(matches!(
            validate_identifier("table", "_x"),
            Err(IdError::BadCharacters { .. })
        ));
        assert!(matches!(
            validate_identifier("table", "a-b"),
            Err(IdError::BadCharacters { .. })
        ));
        assert!(matches!(
            validate_identifier("table", "select"),
            Err(IdError::Reserved { .. })
        ));
        assert!(matches!(
            validate_identifier("table", &"a".repeat(65)),
            Err(IdError::TooLong { .. })
        ));
        assert!(matches!(
            NamespaceId::parse("system"),
            Err(IdError::Reserved { .. })
        ));
        assert!(NamespaceId::parse("app").is_ok());
    }

    #[test]
    fn node_and_user_ids() {
        assert!(NodeId::parse("node-prod-01").is_ok());
        assert!(NodeId::parse("1").is_ok());
        assert!(NodeId::parse("node_1").is_err());
        assert!(NodeId::parse(&"n".repeat(65)).is_err());
        assert!(UserId::parse("alice_1-x").is_ok());
        assert!(UserId::parse("a b").is_err());
    }
}
