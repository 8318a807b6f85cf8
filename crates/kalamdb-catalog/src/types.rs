//! SQL type spellings and the Arrow mapping of [`KalamDataType`].
//!
//! SQL spellings are matched on sqlparser's rendering of the type, which keeps this module
//! independent of sqlparser's enum churn. Arrow fields carry the Kalam type and flags as field
//! metadata, so result schemas can report `Json` or `File` (both Utf8 in Arrow) faithfully.

use crate::error::{KalamError, Result};
use datafusion::arrow::datatypes::{DataType, Field, Schema, TimeUnit};
use kalamdb_commons::schema::{DELETED_COLUMN, SEQ_COLUMN};
use kalamdb_commons::{KalamDataType, TableDefinition};
use std::collections::HashMap;

/// Field-metadata key holding the serialized [`KalamDataType`].
pub const META_TYPE: &str = "kalam_data_type";
/// Field-metadata key holding the comma-separated flags (`nn`, `pk`, `uq`).
pub const META_FLAGS: &str = "kalam_flags";

/// A parsed column type, plus whether it was a SERIAL spelling (implies `SNOWFLAKE_ID()`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ParsedType {
    /// The type.
    pub data_type: KalamDataType,
    /// `SERIAL`, `BIGSERIAL` or `SMALLSERIAL`.
    pub serial: bool,
}

/// Parses a SQL type as rendered by sqlparser (`VARCHAR(20)`, `DOUBLE PRECISION`, `DECIMAL(10,2)` …).
pub fn parse_sql_type(rendered: &str) -> Result<ParsedType> {
    let upper = rendered.trim().to_ascii_uppercase();
    let (base, args) = match upper.find('(') {
        Some(i) => (
            upper[..i].trim(),
            Some(upper[i + 1..].trim_end_matches(')').trim()),
        ),
        None => (upper.as_str(), None),
    };
    let plain = |t| {
        Ok(ParsedType {
            data_type: t,
            serial: false,
        })
    };
    match base {
        "BOOLEAN" | "BOOL" => plain(KalamDataType::Boolean),
        "SMALLINT" | "INT2" => plain(KalamDataType::SmallInt),
        "INT" | "INTEGER" | "INT4" | "MEDIUMINT" => plain(KalamDataType::Int),
        "BIGINT" | "INT8" | "INT64" => plain(KalamDataType::BigInt),
        "FLOAT" | "REAL" | "FLOAT4" => plain(KalamDataType::Float),
        "DOUBLE" | "FLOAT8" | "DOUBLE PRECISION" => plain(KalamDataType::Double),
        "TEXT" | "VARCHAR" | "CHAR" | "STRING" | "NVARCHAR" | "CLOB" | "CHARACTER VARYING"
        | "CHARACTER" | "CHAR VARYING" => plain(KalamDataType::Text),
        "BYTES" | "BINARY" | "VARBINARY" | "BLOB" | "BYTEA" => plain(KalamDataType::Bytes),
        "JSON" | "JSONB" => plain(KalamDataType::Json),
        "TIMESTAMP" | "TIMESTAMP WITHOUT TIME ZONE" => plain(KalamDataType::Timestamp),
        "DATETIME" | "TIMESTAMPTZ" | "TIMESTAMP WITH TIME ZONE" => plain(KalamDataType::DateTime),
        "DATE" => plain(KalamDataType::Date),
        "TIME" | "TIME WITHOUT TIME ZONE" => plain(KalamDataType::Time),
        "UUID" => plain(KalamDataType::Uuid),
        "FILE" => plain(KalamDataType::File),
        // Serial columns take SNOWFLAKE_ID() values, which need 64 bits.
        "SERIAL" | "BIGSERIAL" | "SMALLSERIAL" => Ok(ParsedType {
            data_type: KalamDataType::BigInt,
            serial: true,
        }),
        "DECIMAL" | "NUMERIC" | "DEC" => {
            let (precision, scale) = match args {
                None | Some("") => (38, 10),
                Some(a) => {
                    let mut parts = a.split(',').map(|p| p.trim().parse::<i64>());
                    let p = parts.next().and_then(|r| r.ok());
                    let s = parts.next().map(|r| r.ok()).unwrap_or(Some(0));
                    match (p, s) {
                        (Some(p), Some(s)) => (p, s),
                        _ => {
                            return Err(KalamError::InvalidSql(format!("invalid type {rendered}")));
                        }
                    }
                }
            };
            if !(1..=38).contains(&precision) || scale < 0 || scale > precision {
                return Err(KalamError::InvalidSql(format!(
                    "invalid {rendered}: precision must be 1..=38 and scale 0..=precision"
                )));
            }
            plain(KalamDataType::Decimal {
                precision: precision as u8,
                scale: scale as i8,
            })
        }
        "EMBEDDING" => {
            let n = args
                .and_then(|a| a.parse::<u32>().ok())
                .filter(|n| (1..=8192).contains(n));
            match n {
                Some(n) => plain(KalamDataType::Embedding(n)),
                None => Err(KalamError::InvalidSql(format!(
                    "invalid {rendered}: EMBEDDING needs a dimension in 1..=8192"
                ))),
            }
        }
        _ => Err(KalamError::InvalidSql(format!(
            "unsupported column type {rendered}; supported: BOOLEAN, SMALLINT, INT, BIGINT, FLOAT, \
             DOUBLE, DECIMAL(p,s), TEXT, BYTES, JSON, TIMESTAMP, DATETIME, DATE, TIME, UUID"
        ))),
    }
}

/// The Arrow type of a column type.
pub fn to_arrow(t: &KalamDataType) -> DataType {
    match t {
        KalamDataType::Boolean => DataType::Boolean,
        KalamDataType::SmallInt => DataType::Int16,
        KalamDataType::Int => DataType::Int32,
        KalamDataType::BigInt => DataType::Int64,
        KalamDataType::Float => DataType::Float32,
        KalamDataType::Double => DataType::Float64,
        KalamDataType::Text | KalamDataType::Json | KalamDataType::File => DataType::Utf8,
        KalamDataType::Timestamp => DataType::Timestamp(TimeUnit::Microsecond, None),
        KalamDataType::DateTime => DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into())),
        KalamDataType::Date => DataType::Date32,
        KalamDataType::Time => DataType::Time64(TimeUnit::Microsecond),
        KalamDataType::Bytes => DataType::Binary,
        // Canonical text (lowercase, hyphenated), so SQL compares, casts and joins UUIDs with
        // string literals and parameters; text order is byte order. Rows store the 16 bytes.
        KalamDataType::Uuid => DataType::Utf8,
        KalamDataType::Decimal { precision, scale } => DataType::Decimal128(*precision, *scale),
        KalamDataType::Embedding(n) => DataType::FixedSizeList(
            std::sync::Arc::new(Field::new("item", DataType::Float32, true)),
            *n as i32,
        ),
    }
}

/// The column type reported for a computed Arrow column (`docs/protocol.md` §5).
pub fn from_arrow(t: &DataType) -> KalamDataType {
    match t {
        DataType::Boolean => KalamDataType::Boolean,
        DataType::Int16 => KalamDataType::SmallInt,
        DataType::Int32 => KalamDataType::Int,
        DataType::Int64 | DataType::UInt64 => KalamDataType::BigInt,
        DataType::Float32 => KalamDataType::Float,
        DataType::Float64 => KalamDataType::Double,
        DataType::Timestamp(_, None) => KalamDataType::Timestamp,
        DataType::Timestamp(_, Some(_)) => KalamDataType::DateTime,
        DataType::Date32 | DataType::Date64 => KalamDataType::Date,
        DataType::Time32(_) | DataType::Time64(_) => KalamDataType::Time,
        DataType::Binary | DataType::LargeBinary | DataType::BinaryView => KalamDataType::Bytes,
        DataType::FixedSizeBinary(16) => KalamDataType::Uuid,
        DataType::Decimal128(p, s) => KalamDataType::Decimal {
            precision: *p,
            scale: *s,
        },
        DataType::FixedSizeList(f, n) if f.data_type() == &DataType::Float32 => {
            KalamDataType::Embedding(*n as u32)
        }
        _ => KalamDataType::Text,
    }
}

/// Reads the Kalam type and flags off an Arrow field (metadata first, else inferred).
pub fn field_kalam_type(field: &Field) -> (KalamDataType, Option<Vec<String>>) {
    let meta = field.metadata();
    // DataFusion carries a column's metadata through expressions such as CAST: the declared
    // type (and its flags) only describe the field while the Arrow type is still the column's.
    let declared = meta
        .get(META_TYPE)
        .and_then(|s| serde_json::from_str::<KalamDataType>(s).ok())
        .filter(|t| &to_arrow(t) == field.data_type());
    let Some(data_type) = declared else {
        return (from_arrow(field.data_type()), None);
    };
    let flags: Option<Vec<String>> = meta
        .get(META_FLAGS)
        .map(|s| {
            s.split(',')
                .filter(|f| match *f {
                    "" => false,
                    "nn" => !field.is_nullable(),
                    _ => true,
                })
                .map(str::to_string)
                .collect::<Vec<_>>()
        })
        .filter(|f| !f.is_empty());
    (data_type, flags)
}

fn kalam_field(name: &str, t: &KalamDataType, nullable: bool, pk: bool) -> Field {
    let mut flags = Vec::new();
    if pk {
        flags.push("pk");
    }
    if !nullable {
        flags.push("nn");
    }
    if pk {
        flags.push("uq");
    }
    let meta = HashMap::from([
        (
            META_TYPE.to_string(),
            serde_json::to_string(t).expect("type serializes"),
        ),
        (META_FLAGS.to_string(), flags.join(",")),
    ]);
    Field::new(name, to_arrow(t), nullable).with_metadata(meta)
}

/// The Arrow schema of a table: user columns, then `_seq` and (USER/SHARED) `_deleted`.
pub fn table_schema(def: &TableDefinition) -> Schema {
    let mut fields: Vec<Field> = def
        .columns
        .iter()
        .map(|c| kalam_field(&c.name, &c.data_type, c.nullable, c.primary_key))
        .collect();
    if def.has_seq_column() {
        fields.push(kalam_field(
            SEQ_COLUMN,
            &KalamDataType::BigInt,
            false,
            false,
        ));
    }
    if def.has_deleted_column() {
        fields.push(kalam_field(
            DELETED_COLUMN,
            &KalamDataType::Boolean,
            false,
            false,
        ));
    }
    Schema::new(fields)
}

/// A field of a system table, with Kalam metadata.
pub fn system_field(name: &str, t: KalamDataType, nullable: bool) -> Field {
    kalam_field(name, &t, nullable, false)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spellings() {
        let t = |s| parse_sql_type(s).unwrap().data_type;
        assert_eq!(t("varchar(20)"), KalamDataType::Text);
        assert_eq!(t("DOUBLE PRECISION"), KalamDataType::Double);
        assert_eq!(t("INT8"), KalamDataType::BigInt);
        assert_eq!(
            t("DECIMAL(10,2)"),
            KalamDataType::Decimal {
                precision: 10,
                scale: 2
            }
        );
        assert_eq!(
            t("DECIMAL"),
            KalamDataType::Decimal {
                precision: 38,
                scale: 10
            }
        );
        assert!(parse_sql_type("BIGSERIAL").unwrap().serial);
        assert!(parse_sql_type("DECIMAL(50,2)").is_err());
        assert!(parse_sql_type("GEOMETRY").is_err());
    }
}
