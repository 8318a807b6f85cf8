//! [`Value`]: one stored cell, and its conversions.
//!
//! Values are converted from DataFusion [`ScalarValue`]s (literals, parameters, query results)
//! with [`coerce`], which applies the column type's rules and gives a clear error naming the
//! column; they go back to Arrow arrays with [`to_array`]. [`Value::pk_key`] is the
//! order-preserving byte encoding used for primary keys in the hot store.

use crate::error::{KalamError, Result};
use crate::types::to_arrow;
use datafusion::arrow::array::{ArrayRef, new_empty_array};
use datafusion::scalar::ScalarValue;
use kalamdb_commons::KalamDataType;
use serde::{Deserialize, Serialize};
use std::sync::Arc;

/// A stored cell. Temporal values are microseconds (TIMESTAMP, DATETIME, TIME) or days (DATE).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Value {
    /// NULL.
    Null,
    /// BOOLEAN.
    Bool(bool),
    /// SMALLINT.
    I16(i16),
    /// INT.
    I32(i32),
    /// BIGINT.
    I64(i64),
    /// FLOAT.
    F32(f32),
    /// DOUBLE.
    F64(f64),
    /// DECIMAL, unscaled.
    Decimal(i128),
    /// TEXT, JSON, FILE.
    Text(String),
    /// BYTES.
    Bytes(Vec<u8>),
    /// TIMESTAMP or DATETIME, µs since the epoch.
    Timestamp(i64),
    /// DATE, days since the epoch.
    Date(i32),
    /// TIME, µs since midnight.
    Time(i64),
    /// UUID.
    Uuid([u8; 16]),
    /// EMBEDDING.
    Embedding(Vec<f32>),
}

impl Value {
    /// Whether this is NULL.
    pub fn is_null(&self) -> bool {
        matches!(self, Value::Null)
    }

    /// An integer of any width as `i64` (cells stored before a column was widened keep their
    /// narrower type).
    pub fn as_wide_int(&self) -> Option<i64> {
        match self {
            Value::I16(x) => Some(i64::from(*x)),
            Value::I32(x) => Some(i64::from(*x)),
            Value::I64(x) => Some(*x),
            _ => None,
        }
    }

    /// A float of either width as `f64`.
    pub fn as_wide_float(&self) -> Option<f64> {
        match self {
            Value::F32(x) => Some(f64::from(*x)),
            Value::F64(x) => Some(*x),
            _ => None,
        }
    }

    /// The DataFusion scalar of this value for a column of type `t`.
    pub fn to_scalar(&self, t: &KalamDataType) -> ScalarValue {
        match (self, t) {
            (Value::Null, t) => ScalarValue::try_from(&to_arrow(t)).unwrap_or(ScalarValue::Null),
            (Value::Bool(v), _) => ScalarValue::Boolean(Some(*v)),
            (Value::I16(v), _) => ScalarValue::Int16(Some(*v)),
            (Value::I32(v), _) => ScalarValue::Int32(Some(*v)),
            (Value::I64(v), _) => ScalarValue::Int64(Some(*v)),
            (Value::F32(v), _) => ScalarValue::Float32(Some(*v)),
            (Value::F64(v), _) => ScalarValue::Float64(Some(*v)),
            (Value::Decimal(v), KalamDataType::Decimal { precision, scale }) => {
                ScalarValue::Decimal128(Some(*v), *precision, *scale)
            }
            (Value::Decimal(v), _) => ScalarValue::Decimal128(Some(*v), 38, 0),
            (Value::Text(s), _) => ScalarValue::Utf8(Some(s.clone())),
            (Value::Bytes(b), _) => ScalarValue::Binary(Some(b.clone())),
            (Value::Timestamp(v), KalamDataType::DateTime) => {
                ScalarValue::TimestampMicrosecond(Some(*v), Some("UTC".into()))
            }
            (Value::Timestamp(v), _) => ScalarValue::TimestampMicrosecond(Some(*v), None),
            (Value::Date(v), _) => ScalarValue::Date32(Some(*v)),
            (Value::Time(v), _) => ScalarValue::Time64Microsecond(Some(*v)),
            (Value::Uuid(b), _) => ScalarValue::Utf8(Some(uuid_text(b))),
            (Value::Embedding(v), _) => {
                let values: Vec<ScalarValue> =
                    v.iter().map(|f| ScalarValue::Float32(Some(*f))).collect();
                match ScalarValue::iter_to_array(values) {
                    Ok(arr) => ScalarValue::FixedSizeList(Arc::new(
                        datafusion::arrow::array::FixedSizeListArray::new(
                            Arc::new(datafusion::arrow::datatypes::Field::new(
                                "item",
                                datafusion::arrow::datatypes::DataType::Float32,
                                true,
                            )),
                            v.len() as i32,
                            arr,
                            None,
                        ),
                    )),
                    Err(_) => ScalarValue::Null,
                }
            }
        }
    }

    /// The primary-key value of type `t` whose [`Value::pk_key`] is `key`, for the types
    /// whose key is reversible here (integers, timestamps, dates, text); `None` otherwise.
    pub fn from_pk_key(key: &[u8], t: &KalamDataType) -> Option<Value> {
        let signed = || Some((u64::from_be_bytes(key.try_into().ok()?) ^ (1 << 63)) as i64);
        Some(match t {
            KalamDataType::SmallInt => Value::I16(i16::try_from(signed()?).ok()?),
            KalamDataType::Int => Value::I32(i32::try_from(signed()?).ok()?),
            KalamDataType::BigInt => Value::I64(signed()?),
            KalamDataType::Timestamp | KalamDataType::DateTime => Value::Timestamp(signed()?),
            KalamDataType::Date => Value::Date(i32::try_from(signed()?).ok()?),
            KalamDataType::Text => Value::Text(String::from_utf8(key.to_vec()).ok()?),
            _ => return None,
        })
    }

    /// Order-preserving key bytes of a primary-key value (NULL has no key).
    pub fn pk_key(&self) -> Option<Vec<u8>> {
        let signed = |v: i64| ((v as u64) ^ (1 << 63)).to_be_bytes().to_vec();
        Some(match self {
            Value::Null => return None,
            Value::Bool(b) => vec![*b as u8],
            Value::I16(v) => signed(i64::from(*v)),
            Value::I32(v) | Value::Date(v) => signed(i64::from(*v)),
            Value::I64(v) | Value::Timestamp(v) | Value::Time(v) => signed(*v),
            Value::F32(v) => float_key(f64::from(*v)),
            Value::F64(v) => float_key(*v),
            Value::Decimal(v) => ((*v as u128) ^ (1 << 127)).to_be_bytes().to_vec(),
            Value::Text(s) => s.as_bytes().to_vec(),
            Value::Bytes(b) => b.clone(),
            Value::Uuid(b) => b.to_vec(),
            Value::Embedding(_) => return None,
        })
    }
}

/// Whether a numeric scalar is finite (non-numbers count as finite).
fn scalar_is_finite(s: &ScalarValue) -> bool {
    match s {
        ScalarValue::Float64(Some(v)) => v.is_finite(),
        ScalarValue::Float32(Some(v)) => v.is_finite(),
        other => as_str(other)
            .and_then(|t| t.trim().parse::<f64>().ok())
            .is_none_or(f64::is_finite),
    }
}

fn float_key(v: f64) -> Vec<u8> {
    // -0.0 and 0.0 are one key (they compare equal), and every NaN is one key.
    let v = if v == 0.0 {
        0.0
    } else if v.is_nan() {
        f64::NAN
    } else {
        v
    };
    let bits = v.to_bits();
    let ordered = if bits >> 63 == 1 {
        !bits
    } else {
        bits | (1 << 63)
    };
    ordered.to_be_bytes().to_vec()
}

fn mismatch(column: &str, t: &KalamDataType, shown: &str) -> KalamError {
    KalamError::TypeMismatch(format!(
        "Type mismatch for column '{column}': cannot convert {shown} to {}",
        t.sql_name()
    ))
}

fn as_str(s: &ScalarValue) -> Option<&str> {
    match s {
        ScalarValue::Utf8(Some(v))
        | ScalarValue::LargeUtf8(Some(v))
        | ScalarValue::Utf8View(Some(v)) => Some(v),
        _ => None,
    }
}

fn shown(s: &ScalarValue) -> String {
    match as_str(s) {
        Some(v) => format!("'{}'", v.chars().take(64).collect::<String>()),
        None => format!("{s} ({})", s.data_type()),
    }
}

/// Converts a scalar into a cell of column `column` of type `t`, or explains why it cannot.
pub fn coerce(scalar: ScalarValue, t: &KalamDataType, column: &str) -> Result<Value> {
    if scalar.is_null() {
        return Ok(Value::Null);
    }
    match t {
        KalamDataType::Text | KalamDataType::File => {
            return Ok(Value::Text(match as_str(&scalar) {
                Some(s) => s.to_string(),
                None => scalar.to_string(),
            }));
        }
        KalamDataType::Json => {
            let text = as_str(&scalar)
                .map(str::to_string)
                .unwrap_or_else(|| scalar.to_string());
            serde_json::from_str::<serde_json::Value>(&text).map_err(|e| {
                KalamError::TypeMismatch(format!("Invalid JSON for column '{column}': {e}"))
            })?;
            return Ok(Value::Text(text));
        }
        KalamDataType::Uuid => {
            if let Some(s) = as_str(&scalar) {
                let u = uuid::Uuid::parse_str(s.trim())
                    .map_err(|_| mismatch(column, t, &shown(&scalar)))?;
                return Ok(Value::Uuid(*u.as_bytes()));
            }
            if let ScalarValue::FixedSizeBinary(16, Some(b)) = &scalar {
                let mut out = [0u8; 16];
                out.copy_from_slice(b);
                return Ok(Value::Uuid(out));
            }
            return Err(mismatch(column, t, &shown(&scalar)));
        }
        KalamDataType::Bytes => {
            if let Some(s) = as_str(&scalar) {
                return Ok(Value::Bytes(s.as_bytes().to_vec()));
            }
        }
        KalamDataType::Embedding(n) => {
            let text = as_str(&scalar).ok_or_else(|| mismatch(column, t, &shown(&scalar)))?;
            let v: Vec<f32> =
                serde_json::from_str(text).map_err(|_| mismatch(column, t, &shown(&scalar)))?;
            if v.len() != *n as usize {
                return Err(mismatch(
                    column,
                    t,
                    &format!("a vector of {} values", v.len()),
                ));
            }
            return Ok(Value::Embedding(v));
        }
        _ => {}
    }
    let target = to_arrow(t);
    let is_float = matches!(scalar, ScalarValue::Float32(_) | ScalarValue::Float64(_));
    if is_float
        && matches!(
            t,
            KalamDataType::SmallInt | KalamDataType::Int | KalamDataType::BigInt
        )
    {
        return Err(mismatch(column, t, &shown(&scalar)));
    }
    let cast = if scalar.data_type() == target {
        scalar.clone()
    } else {
        scalar
            .cast_to(&target)
            .map_err(|_| mismatch(column, t, &shown(&scalar)))?
    };
    let out = match cast {
        ScalarValue::Boolean(Some(v)) => Value::Bool(v),
        ScalarValue::Int16(Some(v)) => Value::I16(v),
        ScalarValue::Int32(Some(v)) => Value::I32(v),
        ScalarValue::Int64(Some(v)) => Value::I64(v),
        // A finite value too large for REAL becomes infinite in the cast: refused instead.
        ScalarValue::Float32(Some(v)) if v.is_infinite() && scalar_is_finite(&scalar) => {
            return Err(mismatch(column, t, &shown(&scalar)));
        }
        ScalarValue::Float32(Some(v)) => Value::F32(v),
        ScalarValue::Float64(Some(v)) => Value::F64(v),
        ScalarValue::Decimal128(Some(v), _, _) => Value::Decimal(v),
        ScalarValue::Binary(Some(v)) => Value::Bytes(v),
        ScalarValue::TimestampMicrosecond(Some(v), _) => Value::Timestamp(v),
        ScalarValue::Date32(Some(v)) => Value::Date(v),
        ScalarValue::Time64Microsecond(Some(v)) => Value::Time(v),
        _ => return Err(mismatch(column, t, &shown(&scalar))),
    };
    Ok(out)
}

/// A UUID's canonical text: lowercase, hyphenated.
pub fn uuid_text(bytes: &[u8; 16]) -> String {
    uuid::Uuid::from_bytes(*bytes).hyphenated().to_string()
}

/// Builds an Arrow array of type `t` from cells. Common types go straight into a typed array
/// (narrower integers and floats widen); anything else goes through DataFusion scalars.
pub fn to_array<'a>(
    values: impl Iterator<Item = &'a Value>,
    t: &KalamDataType,
) -> Result<ArrayRef> {
    let cells: Vec<&Value> = values.collect();
    if let Some(array) = typed_array(&cells, t) {
        return Ok(array);
    }
    let scalars: Vec<ScalarValue> = cells.iter().map(|v| v.to_scalar(t)).collect();
    if scalars.is_empty() {
        return Ok(new_empty_array(&to_arrow(t)));
    }
    ScalarValue::iter_to_array(scalars).map_err(KalamError::Query)
}

/// `cells` as one array of type `t`, or `None` when a type or cell needs the general path.
fn typed_array(cells: &[&Value], t: &KalamDataType) -> Option<ArrayRef> {
    use datafusion::arrow::array::*;
    /// `pick` of every non-NULL cell, or `None` when one does not fit.
    fn each<'v, T>(
        cells: &[&'v Value],
        pick: impl Fn(&'v Value) -> Option<T>,
    ) -> Option<Vec<Option<T>>> {
        cells
            .iter()
            .map(|v| match v {
                Value::Null => Some(None),
                v => pick(v).map(Some),
            })
            .collect()
    }
    let int = Value::as_wide_int;
    let float = Value::as_wide_float;
    Some(match t {
        KalamDataType::Boolean => Arc::new(BooleanArray::from(each(cells, |v| match v {
            Value::Bool(b) => Some(*b),
            _ => None,
        })?)),
        KalamDataType::SmallInt => Arc::new(Int16Array::from(each(cells, |v| match v {
            Value::I16(x) => Some(*x),
            _ => None,
        })?)),
        KalamDataType::Int => Arc::new(Int32Array::from(each(cells, |v| match v {
            Value::I16(x) => Some(i32::from(*x)),
            Value::I32(x) => Some(*x),
            _ => None,
        })?)),
        KalamDataType::BigInt => Arc::new(Int64Array::from(each(cells, int)?)),
        KalamDataType::Float => Arc::new(Float32Array::from(each(cells, |v| match v {
            Value::F32(x) => Some(*x),
            _ => None,
        })?)),
        KalamDataType::Double => Arc::new(Float64Array::from(each(cells, float)?)),
        KalamDataType::Text | KalamDataType::Json | KalamDataType::File => {
            Arc::new(StringArray::from(each(cells, |v| match v {
                Value::Text(s) => Some(s.as_str()),
                _ => None,
            })?))
        }
        KalamDataType::Bytes => Arc::new(BinaryArray::from(each(cells, |v| match v {
            Value::Bytes(b) => Some(b.as_slice()),
            _ => None,
        })?)),
        KalamDataType::Timestamp | KalamDataType::DateTime => {
            let micros = each(cells, |v| match v {
                Value::Timestamp(x) => Some(*x),
                _ => None,
            })?;
            let tz = matches!(t, KalamDataType::DateTime).then_some("UTC");
            Arc::new(TimestampMicrosecondArray::from(micros).with_timezone_opt(tz))
        }
        KalamDataType::Date => Arc::new(Date32Array::from(each(cells, |v| match v {
            Value::Date(x) => Some(*x),
            _ => None,
        })?)),
        KalamDataType::Time => Arc::new(Time64MicrosecondArray::from(each(cells, |v| match v {
            Value::Time(x) => Some(*x),
            _ => None,
        })?)),
        KalamDataType::Decimal { precision, scale } => Arc::new(
            Decimal128Array::from(each(cells, |v| match v {
                Value::Decimal(x) => Some(*x),
                _ => None,
            })?)
            .with_precision_and_scale(*precision, *scale)
            .ok()?,
        ),
        KalamDataType::Uuid => Arc::new(StringArray::from(each(cells, |v| match v {
            Value::Uuid(b) => Some(uuid_text(b)),
            _ => None,
        })?)),
        KalamDataType::Embedding(_) => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn typed_arrays_equal_the_scalar_path() {
        let cases: Vec<(KalamDataType, Vec<Value>)> = vec![
            (KalamDataType::Boolean, vec![Value::Bool(true), Value::Null]),
            (KalamDataType::SmallInt, vec![Value::I16(-3), Value::Null]),
            (KalamDataType::Int, vec![Value::I32(7), Value::Null]),
            (
                KalamDataType::BigInt,
                vec![Value::I64(1 << 40), Value::Null],
            ),
            (KalamDataType::Float, vec![Value::F32(1.5), Value::Null]),
            (KalamDataType::Double, vec![Value::F64(-2.25), Value::Null]),
            (
                KalamDataType::Text,
                vec![Value::Text("a".into()), Value::Null],
            ),
            (
                KalamDataType::Json,
                vec![Value::Text("{}".into()), Value::Null],
            ),
            (
                KalamDataType::Bytes,
                vec![Value::Bytes(vec![1, 2]), Value::Null],
            ),
            (
                KalamDataType::Timestamp,
                vec![Value::Timestamp(5), Value::Null],
            ),
            (
                KalamDataType::DateTime,
                vec![Value::Timestamp(5), Value::Null],
            ),
            (KalamDataType::Date, vec![Value::Date(19000), Value::Null]),
            (KalamDataType::Time, vec![Value::Time(60), Value::Null]),
            (
                KalamDataType::Decimal {
                    precision: 10,
                    scale: 2,
                },
                vec![Value::Decimal(12345), Value::Null],
            ),
        ];
        for (t, cells) in cases {
            let refs: Vec<&Value> = cells.iter().collect();
            let typed = typed_array(&refs, &t).expect("a typed path");
            let scalars: Vec<ScalarValue> = cells.iter().map(|v| v.to_scalar(&t)).collect();
            let general = ScalarValue::iter_to_array(scalars).unwrap();
            assert_eq!(typed.as_ref(), general.as_ref(), "{t:?}");
            assert_eq!(typed.data_type(), &to_arrow(&t), "{t:?}");
        }
        // Narrower integers widen; a cell of another kind falls back to the general path.
        let widened = to_array(
            [Value::I32(3), Value::I64(4)].iter(),
            &KalamDataType::BigInt,
        );
        assert_eq!(widened.unwrap().len(), 2);
        assert!(typed_array(&[&Value::Text("x".into())], &KalamDataType::Int).is_none());
    }

    #[test]
    fn coercions() {
        let t = KalamDataType::Int;
        assert_eq!(
            coerce(ScalarValue::Int64(Some(5)), &t, "c").unwrap(),
            Value::I32(5)
        );
        assert_eq!(
            coerce(ScalarValue::Utf8(Some("7".into())), &t, "c").unwrap(),
            Value::I32(7)
        );
        let err = coerce(ScalarValue::Utf8(Some("abc".into())), &t, "c")
            .unwrap_err()
            .to_string();
        assert!(err.contains("column 'c'"), "{err}");
        assert!(coerce(ScalarValue::Int64(Some(1 << 40)), &t, "c").is_err());
        assert!(
            coerce(
                ScalarValue::Utf8(Some("{x".into())),
                &KalamDataType::Json,
                "j"
            )
            .is_err()
        );
        let d = KalamDataType::Decimal {
            precision: 10,
            scale: 2,
        };
        assert_eq!(
            coerce(ScalarValue::Utf8(Some("200.75".into())), &d, "d").unwrap(),
            Value::Decimal(20075)
        );
        let u = coerce(
            ScalarValue::Utf8(Some("67e55044-10b1-426f-9247-bb680e5fe0c8".into())),
            &KalamDataType::Uuid,
            "u",
        )
        .unwrap();
        assert!(matches!(u, Value::Uuid(_)));
        let ts = coerce(
            ScalarValue::Utf8(Some("2024-01-01T00:00:00Z".into())),
            &KalamDataType::Timestamp,
            "t",
        )
        .unwrap();
        assert_eq!(ts, Value::Timestamp(1_704_067_200_000_000));
    }

    #[test]
    fn pk_keys_preserve_order() {
        let ints = [-5i64, -1, 0, 1, 300];
        let keys: Vec<_> = ints
            .iter()
            .map(|v| Value::I64(*v).pk_key().unwrap())
            .collect();
        assert!(keys.windows(2).all(|w| w[0] < w[1]));
        let floats = [-2.5f64, -0.1, 0.0, 0.1, 9.0];
        let keys: Vec<_> = floats
            .iter()
            .map(|v| Value::F64(*v).pk_key().unwrap())
            .collect();
        assert!(keys.windows(2).all(|w| w[0] < w[1]));
        assert!(Value::Null.pk_key().is_none());
        for (v, t) in [
            (Value::I64(-5), KalamDataType::BigInt),
            (Value::I32(7), KalamDataType::Int),
            (Value::I16(-3), KalamDataType::SmallInt),
            (
                Value::Timestamp(1_700_000_000_000_000),
                KalamDataType::Timestamp,
            ),
            (Value::Date(19_000), KalamDataType::Date),
            (Value::Text("héllo".into()), KalamDataType::Text),
        ] {
            assert_eq!(Value::from_pk_key(&v.pk_key().unwrap(), &t), Some(v));
        }
        assert_eq!(Value::from_pk_key(&[1, 2], &KalamDataType::BigInt), None);
    }
}
