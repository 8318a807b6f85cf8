//! Which cold segments a filtered scan may skip.
//!
//! First DataFusion's `PruningPredicate` is evaluated over each segment's column statistics
//! (min/max/NULL count from the manifest): a segment none of whose rows can match is a
//! candidate. A candidate is skipped only if no older segment that is read overlaps its key
//! range: its rows may be newer versions (or tombstones) of keys held by such a segment, and
//! skipping it would bring the superseded versions back. Hot rows are always read.

use datafusion::arrow::array::{ArrayRef, UInt64Array};
use datafusion::arrow::datatypes::{DataType, TimeUnit};
use datafusion::common::pruning::PruningStatistics;
use datafusion::common::tree_node::{Transformed, TreeNode};
use datafusion::common::{Column, DFSchema, ScalarValue};
use datafusion::execution::context::ExecutionProps;
use datafusion::logical_expr::Expr;
use datafusion::logical_expr::physical_planning_context::PhysicalPlanningContext;
use datafusion::logical_expr::utils::conjunction;
use datafusion::physical_expr::create_physical_expr;
use datafusion::physical_optimizer::pruning::PruningPredicateBuilder;
use kalamdb_catalog::schema_registry::CachedTable;
use kalamdb_filestore::SegmentMeta;
use serde_json::Value as J;
use std::collections::HashSet;
use std::sync::Arc;

/// For each segment (oldest first), whether a scan with `filters` must read it;
/// `key_ranges` are the segments' primary-key ranges.
pub fn segments_to_read(
    table: &CachedTable,
    segments: &[SegmentMeta],
    key_ranges: &[(Vec<u8>, Vec<u8>)],
    filters: &[Expr],
) -> Vec<bool> {
    let may_match = if filters.is_empty() {
        None
    } else {
        may_match(table, segments, filters)
    };
    match may_match {
        Some(m) => keep_for_versions(&m, key_ranges),
        None => vec![true; segments.len()],
    }
}

/// Adds to the segments that may match every older-or-newer segment needed so that no
/// superseded version resurfaces (see the module doc).
fn keep_for_versions(may_match: &[bool], ranges: &[(Vec<u8>, Vec<u8>)]) -> Vec<bool> {
    let mut keep: Vec<bool> = Vec::with_capacity(may_match.len());
    for (i, &m) in may_match.iter().enumerate() {
        let (lo, hi) = &ranges[i];
        let shadows_a_read_one =
            (0..i).any(|j| keep[j] && ranges[j].0 <= *hi && *lo <= ranges[j].1);
        keep.push(m || shadows_a_read_one);
    }
    keep
}

/// Per segment, whether the statistics allow a row matching all of `filters`; `None` when
/// the filters cannot be evaluated against statistics.
fn may_match(table: &CachedTable, segments: &[SegmentMeta], filters: &[Expr]) -> Option<Vec<bool>> {
    let expr = conjunction(filters.iter().cloned())?
        .transform(|e| {
            Ok(match e {
                Expr::Column(c) => Transformed::yes(Expr::Column(Column::new_unqualified(c.name))),
                e => Transformed::no(e),
            })
        })
        .ok()?
        .data;
    let df_schema = DFSchema::try_from(table.schema.as_ref().clone()).ok()?;
    let physical = create_physical_expr(
        &expr,
        &df_schema,
        &ExecutionProps::new(),
        &PhysicalPlanningContext::default(),
    )
    .ok()?;
    let predicate = PruningPredicateBuilder::new()
        .with_file_schema(Arc::clone(&table.schema))
        .try_build(physical)
        .ok()?;
    predicate.prune(&SegmentStats { table, segments }).ok()
}

/// The manifest's statistics in the form DataFusion's pruning asks for.
struct SegmentStats<'a> {
    table: &'a CachedTable,
    segments: &'a [SegmentMeta],
}

impl SegmentStats<'_> {
    /// The manifest key of a column's statistics: its stable id.
    fn key(&self, column: &Column) -> Option<String> {
        self.table
            .def
            .columns
            .iter()
            .find(|c| c.name == column.name)
            .map(|c| c.column_id.to_string())
    }

    fn bound(
        &self,
        column: &Column,
        pick: fn(&kalamdb_filestore::ColumnStats) -> Option<&J>,
    ) -> Option<ArrayRef> {
        let field = self.table.schema.field_with_name(&column.name).ok()?;
        let t = field.data_type();
        let key = self.key(column)?;
        let values = self
            .segments
            .iter()
            .map(|s| {
                let v = s.columns.get(&key).and_then(pick);
                v.and_then(|v| scalar(v, t))
                    .map_or_else(|| ScalarValue::try_from(t), Ok)
            })
            .collect::<Result<Vec<_>, _>>()
            .ok()?;
        ScalarValue::iter_to_array(values).ok()
    }
}

/// A statistic as a scalar of type `t`; `None` when it does not fit.
fn scalar(v: &J, t: &DataType) -> Option<ScalarValue> {
    Some(match t {
        DataType::Int16 => ScalarValue::Int16(Some(i16::try_from(v.as_i64()?).ok()?)),
        DataType::Int32 => ScalarValue::Int32(Some(i32::try_from(v.as_i64()?).ok()?)),
        DataType::Int64 => ScalarValue::Int64(Some(v.as_i64()?)),
        DataType::Date32 => ScalarValue::Date32(Some(i32::try_from(v.as_i64()?).ok()?)),
        DataType::Time64(TimeUnit::Microsecond) => {
            ScalarValue::Time64Microsecond(Some(v.as_i64()?))
        }
        DataType::Timestamp(TimeUnit::Microsecond, tz) => {
            ScalarValue::TimestampMicrosecond(Some(v.as_i64()?), tz.clone())
        }
        DataType::Float32 => ScalarValue::Float32(Some(v.as_f64()? as f32)),
        DataType::Float64 => ScalarValue::Float64(Some(v.as_f64()?)),
        DataType::Utf8 => ScalarValue::Utf8(Some(v.as_str()?.to_string())),
        DataType::Boolean => ScalarValue::Boolean(Some(v.as_bool()?)),
        _ => return None,
    })
}

impl PruningStatistics for SegmentStats<'_> {
    fn min_values(&self, column: &Column) -> Option<ArrayRef> {
        self.bound(column, |s| s.min.as_ref())
    }

    fn max_values(&self, column: &Column) -> Option<ArrayRef> {
        self.bound(column, |s| s.max.as_ref())
    }

    fn num_containers(&self) -> usize {
        self.segments.len()
    }

    fn null_counts(&self, column: &Column) -> Option<ArrayRef> {
        let key = self.key(column)?;
        let counts: UInt64Array = self
            .segments
            .iter()
            .map(|s| s.columns.get(&key).map(|c| c.nulls))
            .collect();
        Some(Arc::new(counts))
    }

    fn row_counts(&self) -> Option<ArrayRef> {
        let counts: UInt64Array = self.segments.iter().map(|s| Some(s.row_count)).collect();
        Some(Arc::new(counts))
    }

    #[allow(clippy::mutable_key_type)] // the trait's signature
    fn contained(
        &self,
        _column: &Column,
        _values: &HashSet<ScalarValue>,
    ) -> Option<datafusion::arrow::array::BooleanArray> {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::keep_for_versions;

    fn r(lo: u8, hi: u8) -> (Vec<u8>, Vec<u8>) {
        (vec![lo], vec![hi])
    }

    #[test]
    fn a_skipped_segment_never_uncovers_older_versions() {
        // Oldest first. Segment 1 cannot match but overlaps segment 0, which is read: its
        // rows may be newer versions of segment 0's keys, so it is read too.
        let ranges = [r(0, 10), r(5, 8), r(20, 30), r(25, 26)];
        assert_eq!(
            keep_for_versions(&[true, false, false, false], &ranges),
            [true, true, false, false]
        );
        // Forced reads propagate: 2 overlaps 1, which is read because it overlaps 0.
        let ranges = [r(0, 4), r(3, 9), r(8, 12)];
        assert_eq!(
            keep_for_versions(&[true, false, false], &ranges),
            [true, true, true]
        );
        // A newer matching segment does not force older non-matching ones.
        assert_eq!(
            keep_for_versions(&[false, true], &[r(0, 9), r(0, 9)]),
            [false, true]
        );
    }
}
