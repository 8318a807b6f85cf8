//! Arrow results to the wire form of `docs/protocol.md` §5: a `schema` of fields with Kalam
//! types and flags, and positional rows of JSON cells. BIGINT is a decimal string, timestamps
//! and times are microseconds, dates are days, DECIMAL a string with exactly `scale` digits,
//! UUID the hyphenated form, BYTES an array of byte numbers. Non-finite floats, which JSON
//! numbers cannot carry, are the strings `"NaN"`, `"Infinity"` and `"-Infinity"` (as
//! PostgreSQL spells them), over HTTP and WebSocket alike.

use datafusion::arrow::array::{
    Array, ArrayRef, AsArray, BooleanArray, Float32Array, Float64Array, Int16Array, Int32Array,
    Int64Array, RecordBatch, StringArray,
};
use datafusion::arrow::datatypes::{DataType, Schema, TimeUnit};
use datafusion::scalar::ScalarValue;
use kalamdb_catalog::types::field_kalam_type;
use kalamdb_catalog::value::{Value, to_array};
use kalamdb_commons::KalamDataType;
use kalamdb_commons::wire::SchemaField;
use serde_json::Value as Json;

/// The wire schema of an Arrow schema.
pub fn schema_fields(schema: &Schema) -> Vec<SchemaField> {
    schema
        .fields()
        .iter()
        .enumerate()
        .map(|(index, f)| {
            let (data_type, flags) = field_kalam_type(f);
            SchemaField {
                name: f.name().clone(),
                data_type,
                index,
                flags,
            }
        })
        .collect()
}

/// Columns whose values only admins see (`docs/protocol.md` §4.3).
const SENSITIVE_COLUMNS: [&str; 2] = ["credentials", "password_hash"];

/// Replaces the non-NULL values of columns named `credentials` or `password_hash` with
/// `"***"`: what non-admin callers get.
pub fn mask_sensitive(schema: &Schema, rows: &mut [Vec<Json>]) {
    let masked: Vec<usize> = schema
        .fields()
        .iter()
        .enumerate()
        .filter(|(_, f)| {
            SENSITIVE_COLUMNS
                .iter()
                .any(|s| f.name().eq_ignore_ascii_case(s))
        })
        .map(|(i, _)| i)
        .collect();
    if masked.is_empty() {
        return;
    }
    for row in rows {
        for &i in &masked {
            if let Some(cell) = row.get_mut(i).filter(|c| !c.is_null()) {
                *cell = Json::String("***".into());
            }
        }
    }
}

/// Positional JSON rows of a set of batches.
pub fn rows(batches: &[RecordBatch]) -> Vec<Vec<Json>> {
    let total: usize = batches.iter().map(|b| b.num_rows()).sum();
    let mut out: Vec<Vec<Json>> = Vec::with_capacity(total);
    for batch in batches {
        let base = out.len();
        out.extend((0..batch.num_rows()).map(|_| Vec::with_capacity(batch.num_columns())));
        for column in batch.columns() {
            for (i, cell) in encode_column(column).into_iter().enumerate() {
                out[base + i].push(cell);
            }
        }
    }
    out
}

fn float(v: f64) -> Json {
    match serde_json::Number::from_f64(v) {
        Some(n) => Json::Number(n),
        None if v.is_nan() => Json::String("NaN".into()),
        None if v > 0.0 => Json::String("Infinity".into()),
        None => Json::String("-Infinity".into()),
    }
}

/// Bytes of Arrow data a batch holds: of the slice it covers, not the buffers it shares.
pub fn batch_bytes(batch: &RecordBatch) -> usize {
    batch
        .columns()
        .iter()
        .map(|c| {
            c.to_data()
                .get_slice_memory_size()
                .unwrap_or_else(|_| c.get_array_memory_size())
        })
        .sum()
}

/// Estimated bytes a batch takes once encoded as JSON rows in memory: its Arrow data plus a
/// cell and a row header per value.
pub fn result_bytes(batch: &RecordBatch) -> usize {
    const CELL: usize = 48;
    const ROW: usize = 24;
    batch_bytes(batch) + batch.num_rows() * (ROW + CELL * batch.num_columns())
}

/// Formats an unscaled decimal with exactly `scale` fractional digits.
pub fn decimal_string(v: i128, scale: i8) -> String {
    if scale <= 0 {
        return (v * 10i128.pow((-scale) as u32)).to_string();
    }
    let digits = v.unsigned_abs().to_string();
    let scale = scale as usize;
    let padded = format!("{digits:0>width$}", width = scale + 1);
    let (int, frac) = padded.split_at(padded.len() - scale);
    format!("{}{int}.{frac}", if v < 0 { "-" } else { "" })
}

macro_rules! map_prim {
    ($array:expr, $ty:ty, $f:expr) => {{
        let a = $array.as_any().downcast_ref::<$ty>().expect("type checked");
        (0..a.len())
            .map(|i| {
                if a.is_null(i) {
                    Json::Null
                } else {
                    $f(a.value(i))
                }
            })
            .collect()
    }};
}

/// Encodes one stored cell of a column of type `t`, exactly as a result column holding it
/// would be encoded (live-query rows use this).
pub fn value_json(v: &Value, t: &KalamDataType) -> Json {
    match v {
        Value::Null => Json::Null,
        Value::Bool(b) => Json::Bool(*b),
        Value::I16(x) => Json::from(*x),
        Value::I32(x) => Json::from(*x),
        Value::I64(x) => Json::String(x.to_string()),
        Value::F32(x) => float(f64::from(*x)),
        Value::F64(x) => float(*x),
        Value::Text(s) => Json::String(s.clone()),
        Value::Timestamp(x) | Value::Time(x) => Json::from(*x),
        Value::Date(d) => Json::from(*d),
        other => match to_array(std::iter::once(other), t) {
            Ok(array) => encode_cell(&array, 0),
            Err(_) => Json::Null,
        },
    }
}

/// Encodes one column.
pub fn encode_column(array: &ArrayRef) -> Vec<Json> {
    match array.data_type() {
        DataType::Boolean => map_prim!(array, BooleanArray, Json::Bool),
        DataType::Int16 => map_prim!(array, Int16Array, |v: i16| Json::from(v)),
        DataType::Int32 => map_prim!(array, Int32Array, |v: i32| Json::from(v)),
        DataType::Int64 => map_prim!(array, Int64Array, |v: i64| Json::String(v.to_string())),
        DataType::Float32 => map_prim!(array, Float32Array, |v: f32| float(f64::from(v))),
        DataType::Float64 => map_prim!(array, Float64Array, float),
        DataType::Utf8 => map_prim!(array, StringArray, |v: &str| Json::String(v.to_string())),
        _ => (0..array.len()).map(|i| encode_cell(array, i)).collect(),
    }
}

fn micros(v: i64, unit: &TimeUnit) -> Json {
    Json::from(match unit {
        TimeUnit::Second => v.saturating_mul(1_000_000),
        TimeUnit::Millisecond => v.saturating_mul(1_000),
        TimeUnit::Microsecond => v,
        TimeUnit::Nanosecond => v / 1_000,
    })
}

/// Encodes one cell of any type (slow path).
fn encode_cell(array: &ArrayRef, i: usize) -> Json {
    if array.is_null(i) {
        return Json::Null;
    }
    match array.data_type() {
        DataType::FixedSizeBinary(16) => {
            let a = array.as_fixed_size_binary();
            match uuid::Uuid::from_slice(a.value(i)) {
                Ok(u) => Json::String(u.hyphenated().to_string()),
                Err(_) => Json::Null,
            }
        }
        DataType::List(_) | DataType::LargeList(_) | DataType::FixedSizeList(..) => {
            let inner = match ScalarValue::try_from_array(array, i) {
                Ok(ScalarValue::List(l)) => Some(l.value(0)),
                Ok(ScalarValue::LargeList(l)) => Some(l.value(0)),
                Ok(ScalarValue::FixedSizeList(l)) => Some(l.value(0)),
                _ => None,
            };
            inner
                .map(|a| Json::Array(encode_column(&a)))
                .unwrap_or(Json::Null)
        }
        _ => match ScalarValue::try_from_array(array, i) {
            Ok(s) => scalar_json(&s),
            Err(_) => Json::Null,
        },
    }
}

fn scalar_json(s: &ScalarValue) -> Json {
    match s {
        ScalarValue::Int8(Some(v)) => Json::from(*v),
        ScalarValue::UInt8(Some(v)) => Json::from(*v),
        ScalarValue::UInt16(Some(v)) => Json::from(*v),
        ScalarValue::UInt32(Some(v)) => Json::from(*v),
        ScalarValue::UInt64(Some(v)) => Json::String(v.to_string()),
        ScalarValue::Float16(Some(v)) => float(f64::from(*v)),
        ScalarValue::Utf8View(Some(v)) | ScalarValue::LargeUtf8(Some(v)) => Json::String(v.clone()),
        ScalarValue::Decimal128(Some(v), _, scale) => Json::String(decimal_string(*v, *scale)),
        ScalarValue::TimestampSecond(Some(v), _) => micros(*v, &TimeUnit::Second),
        ScalarValue::TimestampMillisecond(Some(v), _) => micros(*v, &TimeUnit::Millisecond),
        ScalarValue::TimestampMicrosecond(Some(v), _) => micros(*v, &TimeUnit::Microsecond),
        ScalarValue::TimestampNanosecond(Some(v), _) => micros(*v, &TimeUnit::Nanosecond),
        ScalarValue::Date32(Some(v)) => Json::from(*v),
        ScalarValue::Date64(Some(v)) => Json::from(v.div_euclid(86_400_000)),
        ScalarValue::Time32Second(Some(v)) => micros(i64::from(*v), &TimeUnit::Second),
        ScalarValue::Time32Millisecond(Some(v)) => micros(i64::from(*v), &TimeUnit::Millisecond),
        ScalarValue::Time64Microsecond(Some(v)) => micros(*v, &TimeUnit::Microsecond),
        ScalarValue::Time64Nanosecond(Some(v)) => micros(*v, &TimeUnit::Nanosecond),
        ScalarValue::Binary(Some(b))
        | ScalarValue::LargeBinary(Some(b))
        | ScalarValue::BinaryView(Some(b)) => {
            Json::Array(b.iter().map(|x| Json::from(*x)).collect())
        }
        ScalarValue::FixedSizeBinary(_, Some(b)) => {
            Json::Array(b.iter().map(|x| Json::from(*x)).collect())
        }
        // A union (`json_get`'s result) is the value it holds.
        ScalarValue::Union(Some((_, inner)), _, _) => match inner.to_array() {
            Ok(a) => encode_cell(&a, 0),
            Err(_) => Json::Null,
        },
        other if other.is_null() => Json::Null,
        other => Json::String(other.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decimals_keep_sign_and_scale() {
        assert_eq!(decimal_string(20075, 2), "200.75");
        assert_eq!(decimal_string(-5, 2), "-0.05");
        assert_eq!(decimal_string(7, 0), "7");
        assert_eq!(decimal_string(-123456, 3), "-123.456");
    }
}
