//! Caps on the values SQL functions may build (`[limits] max_value_bytes`).
//!
//! A few built-in functions allocate a result far larger than their arguments:
//! `repeat('ab', 1000000000)`, `lpad('a', 2000000000)`, `array_repeat(1, 1000000000)`,
//! `range(0, 1000000000)`, `replace(s, 'a', <long text>)`. Each is replaced in the session by a
//! wrapper that works out, from the argument values, how large the result would be, and fails
//! with `RESOURCE_EXHAUSTED` before calling the function when that passes the cap. Everything
//! else about the function (name, aliases, signature, types, docs) is the original's.
//!
//! Aggregates that grow (`string_agg`, `array_agg`) report their state to the query memory
//! pool, which bounds them.

use datafusion::arrow::array::{Array, ArrayRef, AsArray};
use datafusion::arrow::compute::cast;
use datafusion::arrow::datatypes::{DataType, FieldRef, Int64Type};
use datafusion::common::{DataFusionError, ScalarValue};
use datafusion::logical_expr::{
    ColumnarValue, Documentation, ReturnFieldArgs, ScalarFunctionArgs, ScalarUDF, ScalarUDFImpl,
    Signature,
};
use datafusion::prelude::SessionContext;

/// How a function's result size follows from its arguments.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Growth {
    /// `repeat(text, n)`: text length × n.
    Repeat,
    /// `lpad/rpad(text, n [, fill])`: n characters (up to 4 bytes each).
    Pad,
    /// `array_repeat(value, n)`, `array_resize(array, n …)`: n elements.
    Count,
    /// `range/generate_series([start,] stop [, step])` over integers: (stop - start) / step.
    Series,
    /// `replace(text, from, to)`: every `from` in `text` may become `to`.
    Replace,
}

/// The functions wrapped, by name.
const CAPPED: &[(&str, Growth)] = &[
    ("repeat", Growth::Repeat),
    ("lpad", Growth::Pad),
    ("rpad", Growth::Pad),
    ("array_repeat", Growth::Count),
    ("array_resize", Growth::Count),
    ("range", Growth::Series),
    ("generate_series", Growth::Series),
    ("replace", Growth::Replace),
];

/// Smallest size counted per array element.
const ELEMENT_BYTES: u128 = 8;

/// Replaces the capped functions of `session` with checked wrappers.
pub fn register(session: &SessionContext, max_bytes: usize) {
    let state = session.state();
    for &(name, growth) in CAPPED {
        if let Some(inner) = state.scalar_functions().get(name) {
            let capped = Capped {
                inner: inner.as_ref().clone(),
                growth,
                max_bytes,
            };
            session.register_udf(ScalarUDF::new_from_impl(capped));
        }
    }
}

#[derive(Debug, PartialEq, Eq, Hash)]
struct Capped {
    inner: ScalarUDF,
    growth: Growth,
    max_bytes: usize,
}

/// Smallest and largest integer of an argument (None: not an integer, or all NULL).
fn int_range(arg: &ColumnarValue) -> Option<(i64, i64)> {
    let array = match arg {
        ColumnarValue::Scalar(s) => s.to_array().ok()?,
        ColumnarValue::Array(a) => ArrayRef::clone(a),
    };
    if !array.data_type().is_integer() {
        return None;
    }
    let ints = cast(&array, &DataType::Int64).ok()?;
    let ints = ints.as_primitive::<Int64Type>();
    Some((
        datafusion::arrow::compute::min(ints)?,
        datafusion::arrow::compute::max(ints)?,
    ))
}

fn max_int(arg: &ColumnarValue) -> Option<i64> {
    int_range(arg).map(|(_, max)| max)
}

fn min_int(arg: &ColumnarValue) -> Option<i64> {
    int_range(arg).map(|(min, _)| min)
}

/// Shortest and longest text of an argument, in bytes (None: no text).
fn text_lengths(arg: &ColumnarValue) -> Option<(usize, usize)> {
    let lengths: Vec<usize> = match arg {
        ColumnarValue::Scalar(s) => match s {
            ScalarValue::Utf8(Some(v))
            | ScalarValue::LargeUtf8(Some(v))
            | ScalarValue::Utf8View(Some(v)) => vec![v.len()],
            _ => Vec::new(),
        },
        ColumnarValue::Array(a) => match a.data_type() {
            DataType::Utf8 => a
                .as_string::<i32>()
                .iter()
                .flatten()
                .map(str::len)
                .collect(),
            DataType::LargeUtf8 => a
                .as_string::<i64>()
                .iter()
                .flatten()
                .map(str::len)
                .collect(),
            DataType::Utf8View => a.as_string_view().iter().flatten().map(str::len).collect(),
            _ => Vec::new(),
        },
    };
    Some((*lengths.iter().min()?, *lengths.iter().max()?))
}

/// Longest text of an argument, in bytes (0 for anything else).
fn max_len(arg: &ColumnarValue) -> u128 {
    text_lengths(arg).map_or(0, |(_, max)| max as u128)
}

/// Shortest text of an argument, in bytes (at least 1).
fn min_len(arg: &ColumnarValue) -> u128 {
    text_lengths(arg).map_or(1, |(min, _)| min.max(1) as u128)
}

fn non_negative(n: Option<i64>) -> u128 {
    n.unwrap_or(0).max(0) as u128
}

impl Capped {
    /// The largest result (bytes) a call with these arguments may build.
    fn estimate(&self, args: &[ColumnarValue]) -> u128 {
        let arg = |i: usize| args.get(i);
        match self.growth {
            Growth::Repeat => match (arg(0), arg(1)) {
                (Some(text), Some(n)) => max_len(text) * non_negative(max_int(n)),
                _ => 0,
            },
            Growth::Pad => {
                let fill = arg(2).map_or(1, max_len).max(1);
                arg(1).map_or(0, |n| non_negative(max_int(n)) * fill.min(4))
            }
            Growth::Count => arg(1).map_or(0, |n| non_negative(max_int(n)) * ELEMENT_BYTES),
            Growth::Series => {
                let (start, stop, step) = match args.len() {
                    1 => (Some(0), max_int(&args[0]), Some(1)),
                    2 => (min_int(&args[0]), max_int(&args[1]), Some(1)),
                    3 => (min_int(&args[0]), max_int(&args[1]), min_int(&args[2])),
                    _ => (None, None, None),
                };
                let (Some(start), Some(stop), Some(step)) = (start, stop, step) else {
                    return 0;
                };
                let span = (i128::from(stop) - i128::from(start)).unsigned_abs();
                let step = i128::from(step).unsigned_abs().max(1);
                (span / step + 1) * ELEMENT_BYTES
            }
            Growth::Replace => match (arg(0), arg(1), arg(2)) {
                (Some(text), Some(from), Some(to)) => {
                    let len = max_len(text);
                    len + len / min_len(from) * max_len(to)
                }
                _ => 0,
            },
        }
    }
}

impl ScalarUDFImpl for Capped {
    fn name(&self) -> &str {
        self.inner.name()
    }

    fn aliases(&self) -> &[String] {
        self.inner.aliases()
    }

    fn signature(&self) -> &Signature {
        self.inner.signature()
    }

    fn return_type(&self, arg_types: &[DataType]) -> datafusion::error::Result<DataType> {
        self.inner.return_type(arg_types)
    }

    fn return_field_from_args(&self, args: ReturnFieldArgs) -> datafusion::error::Result<FieldRef> {
        self.inner.return_field_from_args(args)
    }

    fn coerce_types(&self, arg_types: &[DataType]) -> datafusion::error::Result<Vec<DataType>> {
        self.inner.coerce_types(arg_types)
    }

    fn schema_name(&self, args: &[datafusion::prelude::Expr]) -> datafusion::error::Result<String> {
        self.inner.schema_name(args)
    }

    fn documentation(&self) -> Option<&Documentation> {
        self.inner.documentation()
    }

    fn invoke_with_args(
        &self,
        args: ScalarFunctionArgs,
    ) -> datafusion::error::Result<ColumnarValue> {
        let size = self.estimate(&args.args);
        if size > self.max_bytes as u128 {
            return Err(DataFusionError::ResourcesExhausted(format!(
                "{}() would build a value of about {size} bytes; the limit is {} \
                 (limits.max_value_bytes)",
                self.inner.name(),
                self.max_bytes
            )));
        }
        self.inner.invoke_with_args(args)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn run(sql: &str) -> datafusion::error::Result<usize> {
        let session = SessionContext::new();
        register(&session, 1024 * 1024);
        let batches = session.sql(sql).await?.collect().await?;
        Ok(batches.iter().map(|b| b.num_rows()).sum())
    }

    #[tokio::test]
    async fn huge_values_fail_before_they_are_built() {
        for sql in [
            "SELECT repeat('ab', 1000000000)",
            "SELECT lpad('a', 2000000000)",
            "SELECT rpad('a', 2000000000, 'xy')",
            "SELECT cardinality(array_repeat(1, 1000000000))",
            "SELECT cardinality(range(0, 1000000000))",
            "SELECT cardinality(generate_series(1, 1000000000, 1))",
            "SELECT replace(repeat('a', 1000), 'a', repeat('b', 2000))",
            "SELECT repeat(v, 1000000) FROM (VALUES ('abc'), ('d')) AS t(v)",
        ] {
            let err = run(sql).await.unwrap_err();
            assert!(
                matches!(err.find_root(), DataFusionError::ResourcesExhausted(_)),
                "{sql}: {err}"
            );
        }
    }

    #[tokio::test]
    async fn ordinary_calls_work() {
        for sql in [
            "SELECT repeat('ab', 1000)",
            "SELECT lpad('a', 10, '-')",
            "SELECT cardinality(range(0, 1000))",
            "SELECT replace('hello', 'l', 'LL')",
            "SELECT repeat(v, 3) FROM (VALUES ('abc'), (NULL)) AS t(v)",
            "SELECT list_repeat(1, 3)",
        ] {
            assert!(run(sql).await.unwrap() > 0, "{sql}");
        }
    }
}
