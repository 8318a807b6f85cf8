//! Primary-key predicates as ranges of primary-key sort keys ([`kalamdb_catalog::value::Value::pk_key`]).
//!
//! `=`, `IN`, `<`, `<=`, `>`, `>=`, `BETWEEN` and AND/OR of them on the primary key become a
//! sorted list of disjoint half-open ranges `[lo, hi)` of sort keys. Both tiers are ordered by
//! that key (RocksDB keys are `scope ‖ key`, segments are sorted by it), so a scan reads each
//! range and nothing else. A filter is *exact* when the ranges say exactly what it says: the
//! literal has the column's own type and the key order is the type's SQL order (integers,
//! text, timestamps, dates); the scan then applies it and DataFusion need not.

use datafusion::logical_expr::{Between, BinaryExpr, Expr, Operator};
use kalamdb_catalog::value::{Value, coerce};
use kalamdb_commons::KalamDataType;
use kalamdb_commons::schema::ColumnDefinition;

/// Most ranges one scan reads range by range; a filter that needs more is not pushed down.
pub const MAX_RANGES: usize = 1024;

/// One half-open range of sort keys; `hi: None` is unbounded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyRange {
    /// First key inside (empty: from the start).
    pub lo: Vec<u8>,
    /// First key past the end.
    pub hi: Option<Vec<u8>>,
}

impl KeyRange {
    fn is_empty(&self) -> bool {
        self.hi.as_ref().is_some_and(|hi| *hi <= self.lo)
    }

    /// Whether the range holds exactly one key (`[k, k‖0)`).
    pub fn point(&self) -> Option<&[u8]> {
        let hi = self.hi.as_ref()?;
        (hi.len() == self.lo.len() + 1 && hi.starts_with(&self.lo) && hi.last() == Some(&0))
            .then_some(self.lo.as_slice())
    }

    /// Whether `key` is inside.
    pub fn contains(&self, key: &[u8]) -> bool {
        key >= self.lo.as_slice() && self.hi.as_ref().is_none_or(|hi| key < hi.as_slice())
    }
}

/// The smallest key after `k`.
fn successor(k: &[u8]) -> Vec<u8> {
    let mut s = k.to_vec();
    s.push(0);
    s
}

/// Sorted, disjoint key ranges; the empty list matches nothing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyRanges(Vec<KeyRange>);

impl KeyRanges {
    /// Every key.
    pub fn all() -> Self {
        Self(vec![KeyRange {
            lo: Vec::new(),
            hi: None,
        }])
    }

    fn none() -> Self {
        Self(Vec::new())
    }

    fn of(lo: Vec<u8>, hi: Option<Vec<u8>>) -> Self {
        Self::normalized(vec![KeyRange { lo, hi }])
    }

    /// Sorts, drops empty ranges, merges overlapping and touching ones.
    fn normalized(mut ranges: Vec<KeyRange>) -> Self {
        ranges.retain(|r| !r.is_empty());
        ranges.sort_by(|a, b| a.lo.cmp(&b.lo));
        let mut out: Vec<KeyRange> = Vec::with_capacity(ranges.len());
        for r in ranges {
            match out.last_mut() {
                Some(last) if last.hi.as_ref().is_none_or(|hi| *hi >= r.lo) => {
                    last.hi = match (&last.hi, r.hi) {
                        (None, _) | (_, None) => None,
                        (Some(a), Some(b)) => Some(a.clone().max(b)),
                    };
                }
                _ => out.push(r),
            }
        }
        Self(out)
    }

    /// The ranges, in key order.
    pub fn ranges(&self) -> &[KeyRange] {
        &self.0
    }

    /// Whether every key is inside.
    pub fn is_all(&self) -> bool {
        self.0.len() == 1 && self.0[0].lo.is_empty() && self.0[0].hi.is_none()
    }

    /// The keys, when every range is a single key.
    pub fn points(&self) -> Option<Vec<Vec<u8>>> {
        self.0
            .iter()
            .map(|r| r.point().map(<[u8]>::to_vec))
            .collect()
    }

    fn union(self, other: Self) -> Self {
        let mut all = self.0;
        all.extend(other.0);
        Self::normalized(all)
    }

    /// The keys inside both.
    pub fn intersect(&self, other: &Self) -> Self {
        let mut out = Vec::new();
        for a in &self.0 {
            for b in &other.0 {
                let lo = a.lo.clone().max(b.lo.clone());
                let hi = match (&a.hi, &b.hi) {
                    (None, h) | (h, None) => h.clone(),
                    (Some(x), Some(y)) => Some(x.clone().min(y.clone())),
                };
                out.push(KeyRange { lo, hi });
            }
        }
        Self::normalized(out)
    }

    /// Whether any key in `min..=max` is inside.
    pub fn overlaps(&self, min: &[u8], max: &[u8]) -> bool {
        self.0
            .iter()
            .any(|r| r.lo.as_slice() <= max && r.hi.as_ref().is_none_or(|hi| hi.as_slice() > min))
    }

    /// Whether `key` is inside.
    pub fn contains(&self, key: &[u8]) -> bool {
        let at = self.0.partition_point(|r| r.lo.as_slice() <= key);
        at > 0 && self.0[at - 1].contains(key)
    }
}

/// What the scan makes of one filter: its key ranges (`None`: it says nothing about the key)
/// and whether they are exactly the filter.
#[derive(Debug, Clone)]
pub struct Pushdown {
    /// Keys the filter allows.
    pub ranges: Option<KeyRanges>,
    /// Whether the ranges are exactly the filter.
    pub exact: bool,
}

/// Whether ranges over `t`'s sort keys can be exact: the key order is the SQL order.
pub(crate) fn orderable(t: &KalamDataType) -> bool {
    matches!(
        t,
        KalamDataType::SmallInt
            | KalamDataType::Int
            | KalamDataType::BigInt
            | KalamDataType::Text
            | KalamDataType::Timestamp
            | KalamDataType::Date
    )
}

/// Key ranges of `filter` over primary key `pk` (whose Arrow type is `pk_arrow`).
pub fn pushdown_of(
    filter: &Expr,
    pk: &ColumnDefinition,
    pk_arrow: &datafusion::arrow::datatypes::DataType,
) -> Pushdown {
    if !orderable(&pk.data_type) {
        return Pushdown {
            ranges: None,
            exact: false,
        };
    }
    let ctx = KeyOf { pk, pk_arrow };
    match ctx.ranges(filter) {
        Some((r, exact)) if r.0.len() <= MAX_RANGES => Pushdown {
            ranges: Some(r),
            exact,
        },
        _ => Pushdown {
            ranges: None,
            exact: false,
        },
    }
}

/// Turns expressions on one primary key into ranges.
struct KeyOf<'a> {
    pk: &'a ColumnDefinition,
    pk_arrow: &'a datafusion::arrow::datatypes::DataType,
}

/// A literal's sort key: `Some(None)` for NULL (no key matches it), `None` when the
/// literal's type is not the column's own.
type LiteralKey = Option<Option<Vec<u8>>>;

impl KeyOf<'_> {
    fn is_pk(&self, e: &Expr) -> bool {
        matches!(e, Expr::Column(c) if c.name.eq_ignore_ascii_case(&self.pk.name))
    }

    fn key(&self, e: &Expr) -> LiteralKey {
        let Expr::Literal(v, _) = e else {
            return None;
        };
        if v.is_null() {
            return Some(None);
        }
        if v.data_type() != *self.pk_arrow {
            return None;
        }
        let value: Value = coerce(v.clone(), &self.pk.data_type, &self.pk.name).ok()?;
        Some(value.pk_key())
    }

    /// `(ranges, exact)` of a predicate, `None` when it names no key range.
    fn ranges(&self, e: &Expr) -> Option<(KeyRanges, bool)> {
        match e {
            Expr::BinaryExpr(BinaryExpr { left, op, right }) => match op {
                Operator::And => match (self.ranges(left), self.ranges(right)) {
                    (Some((a, ea)), Some((b, eb))) => Some((a.intersect(&b), ea && eb)),
                    (Some((a, _)), None) | (None, Some((a, _))) => Some((a, false)),
                    (None, None) => None,
                },
                Operator::Or => {
                    let (a, ea) = self.ranges(left)?;
                    let (b, eb) = self.ranges(right)?;
                    Some((a.union(b), ea && eb))
                }
                _ => {
                    let (op, lit) = if self.is_pk(left) {
                        (*op, right)
                    } else if self.is_pk(right) {
                        (op.swap()?, left)
                    } else {
                        return None;
                    };
                    let Some(k) = self.key(lit)? else {
                        return Some((KeyRanges::none(), true));
                    };
                    let r = match op {
                        Operator::Eq => KeyRanges::of(k.clone(), Some(successor(&k))),
                        Operator::Lt => KeyRanges::of(Vec::new(), Some(k)),
                        Operator::LtEq => KeyRanges::of(Vec::new(), Some(successor(&k))),
                        Operator::Gt => KeyRanges::of(successor(&k), None),
                        Operator::GtEq => KeyRanges::of(k, None),
                        _ => return None,
                    };
                    Some((r, true))
                }
            },
            Expr::InList(list) if !list.negated && self.is_pk(&list.expr) => {
                let mut ranges = Vec::with_capacity(list.list.len());
                for item in &list.list {
                    if let Some(k) = self.key(item)? {
                        ranges.push(KeyRange {
                            hi: Some(successor(&k)),
                            lo: k,
                        });
                    }
                }
                Some((KeyRanges::normalized(ranges), true))
            }
            Expr::Between(Between {
                expr,
                negated: false,
                low,
                high,
            }) if self.is_pk(expr) => match (self.key(low)?, self.key(high)?) {
                (Some(lo), Some(hi)) => Some((KeyRanges::of(lo, Some(successor(&hi))), true)),
                _ => Some((KeyRanges::none(), true)),
            },
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::arrow::datatypes::DataType;
    use datafusion::logical_expr::{col, lit};
    use datafusion::scalar::ScalarValue;

    fn pk() -> ColumnDefinition {
        ColumnDefinition {
            column_id: 1,
            name: "id".into(),
            ordinal: 1,
            data_type: KalamDataType::BigInt,
            nullable: false,
            primary_key: true,
            default: None,
            added_at_seq: None,
            missing_value: None,
        }
    }

    fn key(v: i64) -> Vec<u8> {
        Value::I64(v).pk_key().unwrap()
    }

    fn push(e: Expr) -> Pushdown {
        pushdown_of(&e, &pk(), &DataType::Int64)
    }

    #[test]
    fn comparisons_become_ranges() {
        let p = push(col("id").eq(lit(5i64)));
        assert!(p.exact);
        assert_eq!(p.ranges.unwrap().points(), Some(vec![key(5)]));

        let p = push(col("id").between(lit(3i64), lit(7i64)));
        let r = p.ranges.unwrap();
        assert!(r.contains(&key(3)) && r.contains(&key(7)));
        assert!(!r.contains(&key(2)) && !r.contains(&key(8)));

        let p = push(col("id").gt(lit(10i64)).or(col("id").lt(lit(0i64))));
        let r = p.ranges.unwrap();
        assert_eq!(r.ranges().len(), 2);
        assert!(r.contains(&key(-1)) && r.contains(&key(11)) && !r.contains(&key(10)));

        let p = push(lit(4i64).lt_eq(col("id")).and(col("id").lt(lit(4i64))));
        assert_eq!(p.ranges.unwrap().ranges().len(), 0, "empty intersection");

        let p = push(col("id").in_list(vec![lit(9i64), lit(1i64), lit(9i64)], false));
        assert_eq!(p.ranges.unwrap().points(), Some(vec![key(1), key(9)]));
    }

    #[test]
    fn what_is_not_pushed() {
        // Another column, or a literal of another type, names no range.
        assert!(push(col("name").eq(lit("x"))).ranges.is_none());
        assert!(push(col("id").eq(lit(5i32))).ranges.is_none());
        assert!(push(col("id").not_eq(lit(5i64))).ranges.is_none());
        // AND with something else keeps the range but is inexact.
        let p = push(col("id").gt(lit(1i64)).and(col("name").eq(lit("x"))));
        assert!(p.ranges.is_some() && !p.exact);
        // OR with something else says nothing about the key.
        assert!(
            push(col("id").gt(lit(1i64)).or(col("name").eq(lit("x"))))
                .ranges
                .is_none()
        );
        // NULL matches nothing.
        let p = push(col("id").eq(lit(ScalarValue::Int64(None))));
        assert!(p.exact && p.ranges.unwrap().ranges().is_empty());
    }
}
