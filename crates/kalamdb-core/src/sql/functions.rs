//! KalamDB's id functions as SQL functions usable in any expression (SELECT, WHERE, UPDATE
//! SET, INSERT … SELECT), producing what the column DEFAULTs of the same names produce:
//! `SNOWFLAKE_ID()` (BIGINT, from the server's `_seq` generator, like `DEFAULT SNOWFLAKE_ID()`),
//! `UUID_V7()` and `ULID()` (text). Each is volatile: every row gets its own value.
//! (`NOW()` is DataFusion's; `CURRENT_USER()` and `CURRENT_ROLE()` become the caller's values
//! when a statement is bound, `sql::params`.) The JSON functions come from
//! `datafusion-functions-json` ([`register_json`]).

use datafusion::arrow::array::{ArrayRef, Int64Array, StringArray};
use datafusion::arrow::datatypes::DataType;
use datafusion::error::Result as DfResult;
use datafusion::logical_expr::{
    ColumnarValue, ScalarFunctionArgs, ScalarUDF, ScalarUDFImpl, Signature, Volatility,
};
use datafusion::prelude::SessionContext;
use kalamdb_catalog::seq::SeqGenerator;
use std::sync::Arc;

/// Which id a function makes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Kind {
    Snowflake,
    UuidV7,
    Ulid,
}

/// One id function.
#[derive(Debug)]
struct IdFunction {
    kind: Kind,
    signature: Signature,
    seq: Arc<SeqGenerator>,
}

impl PartialEq for IdFunction {
    fn eq(&self, other: &Self) -> bool {
        self.kind == other.kind
    }
}

impl Eq for IdFunction {}

impl std::hash::Hash for IdFunction {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.kind.hash(state);
    }
}

impl ScalarUDFImpl for IdFunction {
    fn name(&self) -> &str {
        match self.kind {
            Kind::Snowflake => "snowflake_id",
            Kind::UuidV7 => "uuid_v7",
            Kind::Ulid => "ulid",
        }
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, _: &[DataType]) -> DfResult<DataType> {
        Ok(match self.kind {
            Kind::Snowflake => DataType::Int64,
            Kind::UuidV7 | Kind::Ulid => DataType::Utf8,
        })
    }

    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> DfResult<ColumnarValue> {
        let n = args.number_rows;
        let array: ArrayRef = match self.kind {
            Kind::Snowflake => Arc::new(Int64Array::from_iter_values(
                (0..n).map(|_| self.seq.next_id()),
            )),
            Kind::UuidV7 => Arc::new(StringArray::from_iter_values(
                (0..n).map(|_| uuid::Uuid::now_v7().to_string()),
            )),
            Kind::Ulid => Arc::new(StringArray::from_iter_values(
                (0..n).map(|_| ulid::Ulid::new().to_string()),
            )),
        };
        Ok(ColumnarValue::Array(array))
    }
}

/// Registers the JSON functions (`json_get`, `json_get_str` …, `json_contains`,
/// `json_length`, `json_as_text`) and the `->` / `->>` operators on `state`, from the
/// `datafusion-functions-json` crate. They read `JSON` and text columns.
pub fn register_json(state: &mut datafusion::execution::SessionState) -> DfResult<()> {
    datafusion_functions_json::register_all(state)
}

/// Registers the id functions on `session`; `seq` is the generator DEFAULTs use.
pub fn register(session: &SessionContext, seq: &Arc<SeqGenerator>) {
    for kind in [Kind::Snowflake, Kind::UuidV7, Kind::Ulid] {
        session.register_udf(ScalarUDF::new_from_impl(IdFunction {
            kind,
            signature: Signature::nullary(Volatility::Volatile),
            seq: Arc::clone(seq),
        }));
    }
}
