//! Caps on the values SQL functions may build (`[limits] max_value_bytes`).
//!
//! A few built-in functions allocate a result far larger than their arguments:
//! `repeat('ab', 1000000000)`, `lpad('a', 2000000000)`, `array_repeat(1, 1000000000)`,
//! `range(0, 1000000000)`, `replace(s, 'a', <long text>)`. Each is replaced in the session by a
//! wrapper that works out, from the argument values, how large the result would be, and fails
//! with `RESOURCE_EXHAUSTED` before calling the function when a value passes the cap, or the
//! call's values together (a batch of rows, or one value copied into every row of a batch)
//! pass [`call_budget`]. Everything else about the function (name, aliases, signature,
//! volatility, types, docs) is the original's, so constant calls still fold and filters on
//! them still reach the scan; a folded constant that a projection copies into every row is
//! checked by `checked_arithmetic`'s size-checked expressions.
//!
//! Aggregates that grow (`string_agg`, `array_agg`) report their state to the query memory
//! pool, which bounds them.

use datafusion::arrow::array::Array;
use datafusion::arrow::datatypes::{DataType, FieldRef, IntervalMonthDayNano};
use datafusion::common::{DataFusionError, ScalarValue};
use datafusion::error::Result as DfResult;
use datafusion::logical_expr::simplify::{ExprSimplifyResult, SimplifyContext};
use datafusion::logical_expr::{
    ColumnarValue, Documentation, ReturnFieldArgs, ScalarFunctionArgs, ScalarUDF, ScalarUDFImpl,
    Signature,
};
use datafusion::prelude::{Expr, SessionContext};

/// How a function's result size follows from its arguments.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Growth {
    /// `repeat(text, n)`: text length × n.
    Repeat,
    /// `lpad/rpad(text, n [, fill])`: n characters.
    Pad,
    /// `array_repeat(value, n)`: n copies of the value.
    Copies,
    /// `array_resize(array, n [, fill])`: n elements.
    Resize,
    /// `range/generate_series([start,] stop [, step])` over integers, dates or timestamps:
    /// (stop - start) / step elements.
    Series,
    /// `replace(text, from, to)`: every `from` in `text` may become `to`.
    Replace,
    /// `concat(a, b, …)`, `concat_ws(sep, a, …)`: the arguments together.
    Sum,
    /// `arrow_cast(v, 'type')`: no growth, but no cast to a large (64-bit offset) text, binary
    /// or list type either. Their arrays never overflow, so a join or unnest copying one big
    /// value into every row of a batch could ask for hundreds of GiB at once; with 32-bit
    /// offsets such a copy fails cleanly at 2 GiB.
    Cast,
}

/// The functions wrapped, by name.
const CAPPED: &[(&str, Growth)] = &[
    ("repeat", Growth::Repeat),
    ("lpad", Growth::Pad),
    ("rpad", Growth::Pad),
    ("array_repeat", Growth::Copies),
    ("array_resize", Growth::Resize),
    ("range", Growth::Series),
    ("generate_series", Growth::Series),
    ("replace", Growth::Replace),
    ("concat", Growth::Sum),
    ("concat_ws", Growth::Sum),
    ("arrow_cast", Growth::Cast),
];

/// Smallest size counted per array element.
const ELEMENT_BYTES: u128 = 8;

/// What one call (a batch of rows) may build: 16 values at the cap (1 GiB by default), so bulk
/// work over ordinary values (an UPDATE setting a 40 KB text on every row) is not refused.
pub fn call_budget(max_value_bytes: usize) -> usize {
    max_value_bytes.saturating_mul(16)
}

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

/// Row `i` of an argument (a scalar is every row's value).
fn cell(arg: &ColumnarValue, i: usize) -> Option<ScalarValue> {
    match arg {
        ColumnarValue::Scalar(s) => Some(s.clone()),
        ColumnarValue::Array(a) => ScalarValue::try_from_array(a, i).ok(),
    }
}

/// Bytes of a text cell, or the memory of any other value (0 for NULL).
fn bytes_of(v: &ScalarValue) -> u128 {
    if v.is_null() {
        return 0;
    }
    match v {
        ScalarValue::Utf8(Some(s))
        | ScalarValue::LargeUtf8(Some(s))
        | ScalarValue::Utf8View(Some(s)) => s.len() as u128,
        other => (other.size() as u128).max(ELEMENT_BYTES),
    }
}

/// An integer cell (None: NULL or not an integer).
fn int_of(v: &ScalarValue) -> Option<i128> {
    match v {
        ScalarValue::Int8(Some(x)) => Some(i128::from(*x)),
        ScalarValue::Int16(Some(x)) => Some(i128::from(*x)),
        ScalarValue::Int32(Some(x)) => Some(i128::from(*x)),
        ScalarValue::Int64(Some(x)) => Some(i128::from(*x)),
        ScalarValue::UInt8(Some(x)) => Some(i128::from(*x)),
        ScalarValue::UInt16(Some(x)) => Some(i128::from(*x)),
        ScalarValue::UInt32(Some(x)) => Some(i128::from(*x)),
        ScalarValue::UInt64(Some(x)) => Some(i128::from(*x)),
        _ => None,
    }
}

const NANOS_PER_DAY: i128 = 86_400_000_000_000;

/// A point of a series as an integer: itself, or nanoseconds for dates and timestamps.
fn point_of(v: &ScalarValue) -> Option<i128> {
    int_of(v).or_else(|| match v {
        ScalarValue::Date32(Some(d)) => Some(i128::from(*d) * NANOS_PER_DAY),
        ScalarValue::Date64(Some(ms)) => Some(i128::from(*ms) * 1_000_000),
        ScalarValue::TimestampSecond(Some(t), _) => Some(i128::from(*t) * 1_000_000_000),
        ScalarValue::TimestampMillisecond(Some(t), _) => Some(i128::from(*t) * 1_000_000),
        ScalarValue::TimestampMicrosecond(Some(t), _) => Some(i128::from(*t) * 1_000),
        ScalarValue::TimestampNanosecond(Some(t), _) => Some(i128::from(*t)),
        _ => None,
    })
}

/// A series step in the points' unit; months count as 28 days (the most steps they allow).
fn step_of(v: &ScalarValue) -> Option<i128> {
    int_of(v).or_else(|| match v {
        ScalarValue::IntervalMonthDayNano(Some(IntervalMonthDayNano {
            months,
            days,
            nanoseconds,
        })) => Some(
            (i128::from(*months) * 28 + i128::from(*days)) * NANOS_PER_DAY
                + i128::from(*nanoseconds),
        ),
        ScalarValue::IntervalDayTime(Some(dt)) => {
            Some(i128::from(dt.days) * NANOS_PER_DAY + i128::from(dt.milliseconds) * 1_000_000)
        }
        ScalarValue::IntervalYearMonth(Some(m)) => Some(i128::from(*m) * 28 * NANOS_PER_DAY),
        _ => None,
    })
}

fn count(n: Option<i128>) -> u128 {
    n.unwrap_or(0).max(0) as u128
}

impl Capped {
    /// The bytes row `i` of a call with these arguments may build.
    fn row_estimate(&self, args: &[ColumnarValue], i: usize) -> u128 {
        let at = |k: usize| args.get(k).and_then(|a| cell(a, i));
        let bytes = |k: usize| at(k).as_ref().map_or(0, bytes_of);
        let int = |k: usize| at(k).as_ref().and_then(int_of);
        match self.growth {
            Growth::Repeat => bytes(0).saturating_mul(count(int(1))),
            Growth::Pad => count(int(1)),
            Growth::Copies => bytes(0).max(ELEMENT_BYTES).saturating_mul(count(int(1))),
            Growth::Resize => bytes(2).max(ELEMENT_BYTES).saturating_mul(count(int(1))),
            Growth::Series => {
                let point = |k: usize| at(k).as_ref().and_then(point_of);
                let (start, stop, step) = match args.len() {
                    1 => (Some(0), point(0), Some(1)),
                    2 => (point(0), point(1), Some(1)),
                    _ => (point(0), point(1), at(2).as_ref().and_then(step_of)),
                };
                let (Some(start), Some(stop), Some(step)) = (start, stop, step) else {
                    return 0;
                };
                let steps = (stop - start).unsigned_abs() / step.unsigned_abs().max(1);
                steps.saturating_add(1).saturating_mul(ELEMENT_BYTES)
            }
            Growth::Replace => {
                let (text, from, to) = (bytes(0), bytes(1).max(1), bytes(2));
                text.saturating_add((text / from).saturating_mul(to))
            }
            Growth::Cast => 0,
            Growth::Sum => {
                let parts = (0..args.len()).map(bytes).fold(0u128, u128::saturating_add);
                // concat_ws puts its separator (argument 0) between each pair.
                let seps = if self.inner.name() == "concat_ws" {
                    bytes(0).saturating_mul(args.len().saturating_sub(2) as u128)
                } else {
                    0
                };
                parts.saturating_add(seps)
            }
        }
    }

    /// Refuses a call whose largest value or whole output would pass the caps.
    fn check(&self, args: &[ColumnarValue], rows: usize) -> datafusion::error::Result<()> {
        let all_scalar = args.iter().all(|a| matches!(a, ColumnarValue::Scalar(_)));
        let (mut largest, mut total) = (0u128, 0u128);
        if all_scalar {
            // One value, copied into each of the batch's rows.
            largest = self.row_estimate(args, 0);
            total = largest.saturating_mul(rows.max(1) as u128);
        } else {
            for i in 0..rows {
                let size = self.row_estimate(args, i);
                largest = largest.max(size);
                total = total.saturating_add(size);
            }
        }
        let max = self.max_bytes as u128;
        if largest > max {
            return Err(self.too_large(format!("a value of about {largest} bytes")));
        }
        if total > call_budget(self.max_bytes) as u128 {
            return Err(self.too_large(format!("{total} bytes of values for {rows} rows")));
        }
        Ok(())
    }

    fn too_large(&self, what: String) -> DataFusionError {
        DataFusionError::ResourcesExhausted(format!(
            "{}() would build {what}; the limit is {} bytes per value \
             (limits.max_value_bytes)",
            self.inner.name(),
            self.max_bytes
        ))
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

    fn simplify(&self, args: Vec<Expr>, info: &SimplifyContext) -> DfResult<ExprSimplifyResult> {
        if self.growth != Growth::Cast {
            return Ok(ExprSimplifyResult::Original(args));
        }
        if let Some(Expr::Literal(ScalarValue::Utf8(Some(t)), _)) = args.get(1)
            && t.to_ascii_lowercase().contains("large")
        {
            return Err(DataFusionError::Plan(format!(
                "arrow_cast to {t} is not supported: use the 32-bit offset types"
            )));
        }
        self.inner.simplify(args, info)
    }

    fn invoke_with_args(
        &self,
        args: ScalarFunctionArgs,
    ) -> datafusion::error::Result<ColumnarValue> {
        self.check(&args.args, args.number_rows)?;
        let out = self.inner.invoke_with_args(args)?;
        // A backstop for what the estimate cannot see (multi-byte padding, nested values).
        let built = match &out {
            ColumnarValue::Array(a) => a.to_data().get_slice_memory_size().unwrap_or(0) as u128,
            ColumnarValue::Scalar(s) => s.size() as u128,
        };
        if built > call_budget(self.max_bytes) as u128 {
            return Err(self.too_large(format!("{built} bytes")));
        }
        Ok(out)
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
            // Each value under the cap, the batch far over it.
            "SELECT repeat('x', 600000 + value % 2) FROM generate_series(1, 1000)",
            // Large elements, few of them.
            "SELECT cardinality(array_repeat(repeat('a', 500000), 1000))",
            "SELECT cardinality(range(TIMESTAMP '1970-01-01', TIMESTAMP '2100-01-01', INTERVAL '1 millisecond'))",
            "SELECT cardinality(range(DATE '1970-01-01', DATE '9999-01-01', INTERVAL '1 day'))",
            "SELECT concat(repeat('a', 700000), repeat('b', 700000))",
        ] {
            let err = run(sql).await.expect_err(sql);
            assert!(
                matches!(err.find_root(), DataFusionError::ResourcesExhausted(_)),
                "{sql}: {err}"
            );
        }
    }

    #[tokio::test]
    async fn casts_to_large_types_are_refused() {
        let err = run("SELECT arrow_cast(repeat('x', 10), 'LargeUtf8')")
            .await
            .unwrap_err();
        assert!(err.to_string().contains("not supported"), "{err}");
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
            "SELECT cardinality(range(DATE '2020-01-01', DATE '2020-12-31', INTERVAL '1 day'))",
            "SELECT concat('a', 'b'), concat_ws('-', 'a', 'b'), 'a' || 'b'",
            "SELECT repeat('x', 10 + 0 * value) FROM generate_series(1, 10000)",
            "SELECT arrow_cast(1, 'Int32'), arrow_cast('a', 'Utf8')",
        ] {
            assert!(run(sql).await.unwrap() > 0, "{sql}");
        }
    }
}
