//! [`KalamDataType`]: the column types of KalamDB tables.
//!
//! The serde form is the wire form of `schema[].data_type` (`docs/protocol.md` §5): unit
//! variants as strings (`"BigInt"`), parameterised ones as objects
//! (`{"Decimal":{"precision":10,"scale":2}}`). The SQL spellings and the Arrow mapping live in
//! `kalamdb-core`.

use serde::{Deserialize, Serialize};
use std::fmt;

/// A column type.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum KalamDataType {
    /// BOOLEAN.
    Boolean,
    /// SMALLINT (16-bit).
    SmallInt,
    /// INT (32-bit).
    Int,
    /// BIGINT (64-bit); sent as a decimal string on the wire.
    BigInt,
    /// FLOAT (32-bit).
    Float,
    /// DOUBLE (64-bit).
    Double,
    /// TEXT.
    Text,
    /// TIMESTAMP without time zone, microseconds.
    Timestamp,
    /// DATE, days since the epoch.
    Date,
    /// DATETIME: timestamp in UTC, microseconds.
    DateTime,
    /// TIME of day, microseconds.
    Time,
    /// JSON text.
    Json,
    /// BYTES.
    Bytes,
    /// UUID (16 bytes).
    Uuid,
    /// FILE reference (JSON text).
    File,
    /// DECIMAL(precision, scale).
    Decimal {
        /// Total digits, 1..=38.
        precision: u8,
        /// Digits after the point, 0..=precision.
        scale: i8,
    },
    /// EMBEDDING(n): a fixed-size list of FLOAT.
    Embedding(u32),
}

impl KalamDataType {
    /// The canonical SQL spelling, as DESCRIBE shows it.
    pub fn sql_name(&self) -> String {
        match self {
            Self::Boolean => "BOOLEAN".into(),
            Self::SmallInt => "SMALLINT".into(),
            Self::Int => "INT".into(),
            Self::BigInt => "BIGINT".into(),
            Self::Float => "FLOAT".into(),
            Self::Double => "DOUBLE".into(),
            Self::Text => "TEXT".into(),
            Self::Timestamp => "TIMESTAMP".into(),
            Self::Date => "DATE".into(),
            Self::DateTime => "DATETIME".into(),
            Self::Time => "TIME".into(),
            Self::Json => "JSON".into(),
            Self::Bytes => "BYTES".into(),
            Self::Uuid => "UUID".into(),
            Self::File => "FILE".into(),
            Self::Decimal { precision, scale } => format!("DECIMAL({precision},{scale})"),
            Self::Embedding(n) => format!("EMBEDDING({n})"),
        }
    }
}

impl fmt::Display for KalamDataType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.sql_name())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wire_form() {
        assert_eq!(
            serde_json::to_string(&KalamDataType::BigInt).unwrap(),
            "\"BigInt\""
        );
        assert_eq!(
            serde_json::to_string(&KalamDataType::Decimal {
                precision: 10,
                scale: 2
            })
            .unwrap(),
            r#"{"Decimal":{"precision":10,"scale":2}}"#
        );
        assert_eq!(
            serde_json::to_string(&KalamDataType::Embedding(3)).unwrap(),
            r#"{"Embedding":3}"#
        );
    }
}
