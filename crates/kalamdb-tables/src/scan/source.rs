//! The sources a scan merges: the hot tier read on a snapshot by a blocking thread, and runs of
//! cold segments read as Parquet streams. Each yields [`Chunk`]s in primary-key order, holding
//! only rows inside the scan's key ranges and only the columns the scan needs.

use super::key_range::KeyRanges;
use crate::cold::{ColdTier, ScopeSegments, conform_columns};
use crate::rows::{StoredRow, log_key, row_key};
use datafusion::arrow::array::{Array, ArrayRef, AsArray, BooleanArray, Int64Array, RecordBatch};
use datafusion::arrow::compute::concat_batches;
use datafusion::arrow::datatypes::{
    DataType, Date32Type, Int16Type, Int32Type, Int64Type, SchemaRef, TimeUnit,
    TimestampMicrosecondType,
};
use datafusion::parquet::file::statistics::Statistics;
use datafusion::scalar::ScalarValue;
use futures::StreamExt;
use kalamdb_catalog::error::{KalamError, Result};
use kalamdb_catalog::schema_registry::CachedTable;
use kalamdb_catalog::value::{Value, coerce};
use kalamdb_commons::schema::{DELETED_COLUMN, SEQ_COLUMN};
use kalamdb_commons::{KalamDataType, TableType};
use kalamdb_filestore::{COLUMN_ID_KEY, SegmentMeta, SegmentStream};
use kalamdb_store::{StorageBackend, StorageSnapshot};
use std::collections::VecDeque;
use std::sync::Arc;

/// Rows per chunk a source produces (and per batch a scan emits).
pub(crate) const CHUNK_ROWS: usize = crate::rows::BATCH_ROWS;

/// Fewest rows per chunk of a scan with a limit.
const MIN_LIMITED_CHUNK_ROWS: usize = 64;

/// Rows per chunk for a scan returning at most `limit` rows: a `LIMIT 10` decodes a few dozen
/// rows per source before it can answer, not a whole chunk (later chunks of a scan that needs
/// more, because of tombstones or newer versions elsewhere, come at the same size).
pub(crate) fn chunk_rows(limit: Option<usize>) -> usize {
    limit.map_or(CHUNK_ROWS, |l| l.clamp(MIN_LIMITED_CHUNK_ROWS, CHUNK_ROWS))
}

/// Which columns of the table a scan reads and returns.
#[derive(Debug, Clone)]
pub(crate) struct Layout {
    /// Table-schema indices read from both tiers, ascending.
    pub work: Vec<usize>,
    /// Positions in `work` of the primary key, `_seq` and `_deleted` (when merged).
    pub pk: Option<usize>,
    pub seq: Option<usize>,
    pub deleted: Option<usize>,
    /// Positions in `work` of the projected columns, in projection order.
    pub output: Vec<usize>,
    /// Table-schema indices of the projected columns.
    pub projection: Vec<usize>,
    /// Schema of what the scan returns.
    pub out_schema: SchemaRef,
    /// Tombstones are returned, not dropped.
    pub keep_tombstones: bool,
    /// Rows per chunk ([`chunk_rows`]).
    pub chunk_rows: usize,
}

impl Layout {
    /// The layout of a scan of `table` returning `projection` (all columns when `None`).
    pub(crate) fn new(
        table: &CachedTable,
        projection: Option<&Vec<usize>>,
        keep_tombstones: bool,
        limit: Option<usize>,
    ) -> Result<Self> {
        let schema = &table.schema;
        let projection: Vec<usize> = match projection {
            Some(p) => p.clone(),
            None => (0..schema.fields().len()).collect(),
        };
        let mut work = projection.clone();
        let merged = table.def.table_type != TableType::Stream;
        let system = |name: &str| schema.index_of(name).ok();
        if merged {
            work.extend(table.pk_index);
            work.extend(system(SEQ_COLUMN));
            work.extend(system(DELETED_COLUMN));
        }
        work.sort_unstable();
        work.dedup();
        let at = |i: Option<usize>| i.and_then(|i| work.iter().position(|w| *w == i));
        let (pk, seq, deleted) = if merged {
            (
                at(table.pk_index),
                at(system(SEQ_COLUMN)),
                at(system(DELETED_COLUMN)),
            )
        } else {
            (None, None, None)
        };
        let output = projection
            .iter()
            .map(|p| work.iter().position(|w| w == p).unwrap_or(0))
            .collect();
        let out_schema = Arc::new(
            schema
                .project(&projection)
                .map_err(|e| KalamError::Internal(e.to_string()))?,
        );
        Ok(Self {
            work,
            pk,
            seq,
            deleted,
            output,
            projection,
            out_schema,
            keep_tombstones,
            chunk_rows: chunk_rows(limit),
        })
    }
}

/// Rows of one source in key order, as the scan's work columns.
#[derive(Debug)]
pub(crate) struct Chunk {
    pub batch: RecordBatch,
}

/// The primary-key sort key of row `i` of `pk` (a column of `table`'s primary key).
pub(crate) fn key_at(table: &CachedTable, pk: &ArrayRef, i: usize) -> Result<Vec<u8>> {
    let signed = |v: i64| ((v as u64) ^ (1 << 63)).to_be_bytes().to_vec();
    let col = table
        .pk_index
        .map(|p| &table.def.columns[p])
        .ok_or_else(|| KalamError::Internal("merged scan of a table without a key".into()))?;
    Ok(match (pk.data_type(), &col.data_type) {
        (DataType::Int64, _) => signed(pk.as_primitive::<Int64Type>().value(i)),
        (DataType::Int32, _) => signed(i64::from(pk.as_primitive::<Int32Type>().value(i))),
        (DataType::Int16, _) => signed(i64::from(pk.as_primitive::<Int16Type>().value(i))),
        (DataType::Date32, _) => signed(i64::from(pk.as_primitive::<Date32Type>().value(i))),
        (DataType::Timestamp(TimeUnit::Microsecond, _), _) => {
            signed(pk.as_primitive::<TimestampMicrosecondType>().value(i))
        }
        (DataType::Utf8, KalamDataType::Text) => pk.as_string::<i32>().value(i).as_bytes().to_vec(),
        _ => {
            let scalar = ScalarValue::try_from_array(pk, i)
                .map_err(|e| KalamError::Internal(e.to_string()))?;
            coerce(scalar, &col.data_type, &col.name)?
                .pk_key()
                .ok_or_else(|| KalamError::Internal("a stored row without a key".into()))?
        }
    })
}

/// A stream of chunks from the hot tier or from cold segments.
#[derive(Debug)]
pub(crate) enum Source {
    Hot(tokio::sync::mpsc::Receiver<Result<Chunk>>),
    Cold(Box<SegmentRun>),
}

impl Source {
    pub(crate) async fn next(&mut self) -> Result<Option<Chunk>> {
        match self {
            Source::Hot(rx) => rx.recv().await.transpose(),
            Source::Cold(run) => run.next().await,
        }
    }
}

/// Starts reading the hot rows of a scope on a blocking thread; returns once the thread holds
/// its snapshot (a flush commits its manifest before it removes hot rows, so a reader that
/// takes the snapshot first and the manifest second misses nothing).
pub(crate) async fn spawn_hot(
    backend: Arc<dyn StorageBackend>,
    view: Option<Arc<dyn StorageSnapshot + Send + Sync>>,
    table: Arc<CachedTable>,
    prefix: Vec<u8>,
    ranges: KeyRanges,
    layout: Arc<Layout>,
) -> Result<Source> {
    let (tx, rx) = tokio::sync::mpsc::channel(2);
    let (ready_tx, ready_rx) = tokio::sync::oneshot::channel();
    tokio::task::spawn_blocking(move || {
        // A transaction's view is a snapshot already.
        let owned;
        let snapshot: &dyn kalamdb_store::StorageRead = match &view {
            Some(v) => &**v,
            None => {
                owned = backend.snapshot();
                &*owned
            }
        };
        let _ = ready_tx.send(());
        let producer = HotProducer {
            header_only: header_only(&table, &layout),
            table: &table,
            layout: &layout,
            tx: &tx,
            rows: Vec::new(),
            headers: Headers::default(),
        };
        if let Err(e) = producer.run(snapshot, &prefix, &ranges) {
            let _ = tx.blocking_send(Err(e));
        }
    });
    ready_rx
        .await
        .map_err(|_| KalamError::Internal("hot-tier reader did not start".into()))?;
    Ok(Source::Hot(rx))
}

/// When a scan needs only the key, `_seq` and `_deleted` (a `count(*)`, say) and the key's
/// value can be read back from its sort key: the key column's id and type. Rows are then
/// read without decoding their cells.
fn header_only<'t>(table: &'t CachedTable, layout: &Layout) -> Option<(u32, &'t KalamDataType)> {
    let pk = table.pk_index?;
    let col = &table.def.columns[pk];
    let system = |i: usize| i >= table.def.columns.len();
    let narrow = layout.work.iter().all(|&i| i == pk || system(i));
    (table.def.table_type != TableType::Stream
        && narrow
        && super::key_range::orderable(&col.data_type))
    .then_some((col.column_id, &col.data_type))
}

/// The blocking side of [`spawn_hot`].
struct HotProducer<'a> {
    table: &'a CachedTable,
    layout: &'a Layout,
    tx: &'a tokio::sync::mpsc::Sender<Result<Chunk>>,
    /// The chunk being filled, when rows are decoded whole.
    rows: Vec<StoredRow>,
    /// The chunk being filled, column by column, when only headers are read.
    headers: Headers,
    /// See [`header_only`].
    header_only: Option<(u32, &'a KalamDataType)>,
}

/// Rows read header-only ([`header_only`]), kept as columns: no row or cell list per row.
#[derive(Default)]
struct Headers {
    keys: Vec<Value>,
    seqs: Vec<i64>,
    deleted: Vec<bool>,
}

impl HotProducer<'_> {
    fn run(
        mut self,
        read: &dyn kalamdb_store::StorageRead,
        prefix: &[u8],
        ranges: &KeyRanges,
    ) -> Result<()> {
        let def = &self.table.def;
        if def.table_type == TableType::Stream {
            // The log from the TTL cutoff on: older rows are invisible at once.
            let start = log_key(prefix, crate::rows::stream_cutoff_seq(def));
            let partition = &self.table.partitions.log;
            let mut open = Ok(true);
            read.scan_each(partition, prefix, Some(&start), &mut |k, v| {
                open = self.push(&k[prefix.len()..], v);
                Ok(matches!(open, Ok(true)))
            })?;
            if open? {
                self.send()?;
            }
            return Ok(());
        }
        let partition = &self.table.partitions.rows;
        for range in ranges.ranges() {
            let start = row_key(prefix, &range.lo);
            let end = range.hi.as_ref().map(|hi| row_key(prefix, hi));
            let mut open = Ok(true);
            read.scan_each(partition, prefix, Some(&start), &mut |k, v| {
                if end.as_ref().is_some_and(|end| k >= end.as_slice()) {
                    return Ok(false);
                }
                open = self.push(&k[prefix.len()..], v);
                Ok(matches!(open, Ok(true)))
            })?;
            if !open? {
                return Ok(());
            }
        }
        self.send()?;
        Ok(())
    }

    /// Adds one stored row (`key`: its primary key's sort key); `false` once the scan stopped
    /// listening.
    fn push(&mut self, key: &[u8], value: &[u8]) -> Result<bool> {
        let filled = match self.header_only {
            Some((_, t)) => {
                let (seq, deleted) = StoredRow::decode_header(value)?;
                let pk = Value::from_pk_key(key, t)
                    .ok_or_else(|| KalamError::Internal("unreadable key in hot store".into()))?;
                let h = &mut self.headers;
                h.keys.push(pk);
                h.seqs.push(seq);
                h.deleted.push(deleted);
                h.keys.len()
            }
            None => {
                let mut row = StoredRow::decode(value)?;
                self.table.backfill(row.seq, &mut row.cells);
                self.rows.push(row);
                self.rows.len()
            }
        };
        if filled >= self.layout.chunk_rows {
            return self.send();
        }
        Ok(true)
    }

    /// The header-only chunk as a batch of the layout's columns (key, `_seq`, `_deleted`).
    fn header_batch(&mut self) -> Result<RecordBatch> {
        let mut h = std::mem::take(&mut self.headers);
        let rows = h.seqs.len();
        let schema = &self.table.schema;
        let mut fields = Vec::with_capacity(self.layout.work.len());
        let mut arrays: Vec<ArrayRef> = Vec::with_capacity(self.layout.work.len());
        for &i in &self.layout.work {
            let field = schema.field(i);
            arrays.push(match field.name().as_str() {
                SEQ_COLUMN => Arc::new(Int64Array::from(std::mem::take(&mut h.seqs))),
                DELETED_COLUMN => Arc::new(BooleanArray::from(std::mem::take(&mut h.deleted))),
                _ => {
                    let t = self.header_only.map(|(_, t)| t).ok_or_else(|| {
                        KalamError::Internal("header batch without a key type".into())
                    })?;
                    kalamdb_catalog::value::to_array(h.keys.iter(), t)?
                }
            });
            fields.push(field.clone());
        }
        let schema = Arc::new(datafusion::arrow::datatypes::Schema::new_with_metadata(
            fields,
            schema.metadata().clone(),
        ));
        let options =
            datafusion::arrow::array::RecordBatchOptions::new().with_row_count(Some(rows));
        RecordBatch::try_new_with_options(schema, arrays, &options)
            .map_err(|e| KalamError::Internal(e.to_string()))
    }

    fn send(&mut self) -> Result<bool> {
        if self.header_only.is_some() {
            if self.headers.seqs.is_empty() {
                return Ok(true);
            }
            let batch = self.header_batch()?;
            return Ok(self.tx.blocking_send(Ok(Chunk { batch })).is_ok());
        }
        if self.rows.is_empty() {
            return Ok(true);
        }
        let (_, batches) =
            crate::rows::build_batches(self.table, &self.rows, Some(&self.layout.work))?;
        self.rows.clear();
        let batch = match batches.as_slice() {
            [one] => one.clone(),
            _ => concat_batches(&batches[0].schema(), &batches)
                .map_err(|e| KalamError::Internal(e.to_string()))?,
        };
        Ok(self.tx.blocking_send(Ok(Chunk { batch })).is_ok())
    }
}

/// Segments of one scope whose key ranges do not overlap, read one after the other in key
/// order as Parquet streams.
#[derive(Debug)]
pub(crate) struct SegmentRun {
    pub table: Arc<CachedTable>,
    pub cold: Arc<ColdTier>,
    pub scope: Arc<ScopeSegments>,
    pub segments: VecDeque<SegmentMeta>,
    pub ranges: Arc<KeyRanges>,
    pub layout: Arc<Layout>,
    pub stream: Option<SegmentStream>,
    pub segments_read: datafusion::physical_plan::metrics::Count,
    /// Versions after this `_seq` are left out (a transaction's snapshot).
    pub max_seq: Option<i64>,
}

impl SegmentRun {
    async fn next(&mut self) -> Result<Option<Chunk>> {
        loop {
            if let Some(stream) = &mut self.stream {
                match stream.next().await {
                    Some(batch) => {
                        let batch = batch.map_err(|e| KalamError::Internal(e.to_string()))?;
                        let batch = conform_columns(&self.table, &[batch], &self.layout.work)?;
                        let batch = self.trim(batch)?;
                        let batch = self.up_to_max_seq(batch)?;
                        if batch.num_rows() > 0 {
                            return Ok(Some(Chunk { batch }));
                        }
                        continue;
                    }
                    None => self.stream = None,
                }
            }
            let Some(seg) = self.segments.pop_front() else {
                return Ok(None);
            };
            self.stream = open_segment(
                &self.cold,
                &self.scope,
                &self.table,
                &self.layout,
                &self.ranges,
                &seg,
            )
            .await?;
            if self.stream.is_some() {
                self.segments_read.add(1);
            }
        }
    }

    /// The rows of a batch up to `max_seq` (all without one).
    fn up_to_max_seq(&self, batch: RecordBatch) -> Result<RecordBatch> {
        let (Some(max), Some(at)) = (self.max_seq, self.layout.seq) else {
            return Ok(batch);
        };
        let seqs = batch.column(at).as_primitive::<Int64Type>();
        if seqs.values().iter().all(|s| *s <= max) {
            return Ok(batch);
        }
        let keep = BooleanArray::from_unary(seqs, |s| s <= max);
        datafusion::arrow::compute::filter_record_batch(&batch, &keep)
            .map_err(|e| KalamError::Internal(e.to_string()))
    }

    /// The rows of a sorted batch inside the scan's key ranges.
    fn trim(&self, batch: RecordBatch) -> Result<RecordBatch> {
        if self.ranges.is_all() || batch.num_rows() == 0 {
            return Ok(batch);
        }
        let pk = Arc::clone(batch.column(self.layout.pk.unwrap_or(0)));
        let n = batch.num_rows();
        // The batch is sorted: two binary searches per range, a few keys computed each.
        let first_at_or_after = |bound: &[u8]| -> Result<usize> {
            let (mut lo, mut hi) = (0, n);
            while lo < hi {
                let mid = lo + (hi - lo) / 2;
                if key_at(&self.table, &pk, mid)?.as_slice() < bound {
                    lo = mid + 1;
                } else {
                    hi = mid;
                }
            }
            Ok(lo)
        };
        let mut parts = Vec::new();
        for r in self.ranges.ranges() {
            let from = first_at_or_after(&r.lo)?;
            let to = match &r.hi {
                Some(hi) => first_at_or_after(hi)?,
                None => n,
            };
            if to > from {
                parts.push(batch.slice(from, to - from));
            }
        }
        match parts.len() {
            1 => Ok(parts.pop().unwrap_or(batch)),
            _ => concat_batches(&batch.schema(), &parts)
                .map_err(|e| KalamError::Internal(e.to_string())),
        }
    }
}

/// A stream over the row groups of `seg` that can hold keys of the scan, reading only
/// the scan's columns; `None` when no row group can.
async fn open_segment(
    cold: &ColdTier,
    scope: &ScopeSegments,
    table: &CachedTable,
    layout: &Layout,
    ranges: &KeyRanges,
    seg: &SegmentMeta,
) -> Result<Option<SegmentStream>> {
    let metadata = cold.footer(scope, seg).await?;
    let file_schema = Arc::clone(metadata.schema());
    let ids = file_schema
        .fields()
        .iter()
        .any(|f| f.metadata().contains_key(COLUMN_ID_KEY));
    let find = |i: usize| -> Option<usize> {
        match table.def.columns.get(i) {
            Some(col) if ids => file_schema
                .fields()
                .iter()
                .position(|f| f.metadata().get(COLUMN_ID_KEY) == Some(&col.column_id.to_string())),
            _ => file_schema.index_of(table.schema.field(i).name()).ok(),
        }
    };
    let columns: Vec<usize> = layout.work.iter().filter_map(|&i| find(i)).collect();
    let pk_leaf = table.pk_index.and_then(&find).and_then(|root| {
        let name = file_schema.field(root).name();
        let descr = metadata.metadata().file_metadata().schema_descr();
        (0..descr.num_columns()).find(|&j| descr.column(j).path().parts()[0] == *name)
    });
    let row_groups: Vec<usize> = metadata
        .metadata()
        .row_groups()
        .iter()
        .enumerate()
        .filter(|(_, rg)| {
            let stats = pk_leaf.and_then(|j| rg.column(j).statistics());
            match stats.and_then(|s| stat_keys(s, table)) {
                Some((min, max)) => ranges.overlaps(&min, &max),
                None => true,
            }
        })
        .map(|(i, _)| i)
        .collect();
    if row_groups.is_empty() {
        return Ok(None);
    }
    Ok(Some(scope.files.segment_stream(
        &scope.dir,
        seg,
        metadata,
        row_groups,
        columns,
        layout.chunk_rows,
    )?))
}

/// The sort keys of a row group's primary-key min and max, when its statistics give them in
/// the key's order.
fn stat_keys(stats: &Statistics, table: &CachedTable) -> Option<(Vec<u8>, Vec<u8>)> {
    let signed = |v: i64| ((v as u64) ^ (1 << 63)).to_be_bytes().to_vec();
    let pk = &table.def.columns[table.pk_index?];
    match (stats, &pk.data_type) {
        (
            Statistics::Int32(s),
            KalamDataType::Int | KalamDataType::SmallInt | KalamDataType::Date,
        ) => Some((
            signed(i64::from(*s.min_opt()?)),
            signed(i64::from(*s.max_opt()?)),
        )),
        (Statistics::Int64(s), KalamDataType::BigInt | KalamDataType::Timestamp) => {
            Some((signed(*s.min_opt()?), signed(*s.max_opt()?)))
        }
        (Statistics::ByteArray(s), KalamDataType::Text) => {
            Some((s.min_opt()?.data().to_vec(), s.max_opt()?.data().to_vec()))
        }
        _ => None,
    }
}

/// Splits segments into runs of non-overlapping key ranges, each run in key order (greedy:
/// each segment joins the first run it does not overlap).
pub(crate) fn runs(scope: &ScopeSegments, keep: &[bool]) -> Vec<VecDeque<SegmentMeta>> {
    let mut order: Vec<usize> = (0..scope.segments().len()).filter(|&i| keep[i]).collect();
    order.sort_by(|&a, &b| scope.key_ranges()[a].0.cmp(&scope.key_ranges()[b].0));
    let mut runs: Vec<(Vec<u8>, VecDeque<SegmentMeta>)> = Vec::new();
    for i in order {
        let (lo, hi) = &scope.key_ranges()[i];
        match runs.iter_mut().find(|(last_max, _)| last_max < lo) {
            Some((last_max, run)) => {
                *last_max = hi.clone();
                run.push_back(scope.segments()[i].clone());
            }
            None => runs.push((hi.clone(), VecDeque::from([scope.segments()[i].clone()]))),
        }
    }
    runs.into_iter().map(|(_, r)| r).collect()
}

/// `_seq` of row `i` (0 when the layout has none).
pub(crate) fn seq_at(batch: &RecordBatch, layout: &Layout, i: usize) -> i64 {
    layout
        .seq
        .map(|s| batch.column(s).as_primitive::<Int64Type>().value(i))
        .unwrap_or(0)
}
