//! Streaming scans of application tables: [`TableScanExec`], the `ExecutionPlan` every
//! application-table read goes through.
//!
//! Planning does no I/O on rows. At `execute` the scan takes a RocksDB snapshot of the
//! caller's scope (a blocking thread walks it and decodes a chunk at a time, only the needed
//! columns), then reads the scope's manifest and streams the segments it keeps as Parquet
//! (cached footers, projected columns, row groups chosen by primary-key statistics). The
//! sources are merged in primary-key order (`merge.rs`), the newest `_seq` per key winning and
//! tombstones hiding older versions, so a scan holds a few chunks per source, never a scope.
//!
//! Filters on the primary key become key ranges ([`key_range`]) read on both tiers; a scan
//! whose ranges are single keys reads them as point lookups. Other filters prune segments by
//! their statistics. A `LIMIT` stops the sources: the hot reader stops when its channel
//! closes, segment streams are dropped. Scans of STREAM tables read the log from the TTL
//! cutoff on. `EXPLAIN` shows the scope, key ranges, projection, limit and segments kept.

pub mod key_range;
mod merge;
mod source;

use crate::cold::ColdTier;
use crate::rows::Scope;
use datafusion::common::Statistics;
use datafusion::common::stats::Precision;
use datafusion::common::tree_node::TreeNodeRecursion;
use datafusion::error::Result as DfResult;
use datafusion::execution::memory_pool::MemoryConsumer;
use datafusion::execution::{SendableRecordBatchStream, TaskContext};
use datafusion::logical_expr::Expr;
use datafusion::physical_expr::{EquivalenceProperties, LexOrdering, PhysicalSortExpr};
use datafusion::physical_plan::execution_plan::{Boundedness, EmissionType, SchedulingType};
use datafusion::physical_plan::metrics::{
    Count, ExecutionPlanMetricsSet, MetricBuilder, MetricsSet,
};
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use datafusion::physical_plan::{
    DisplayAs, DisplayFormatType, ExecutionPlan, Partitioning, PhysicalExpr, PlanProperties,
};
use futures::{StreamExt, TryStreamExt};
use kalamdb_catalog::error::{KalamError, Result};
use kalamdb_catalog::schema_registry::CachedTable;
use kalamdb_commons::TableType;
use kalamdb_store::StorageBackend;
use key_range::KeyRanges;
use source::{Layout, SegmentRun, Source};
use std::sync::Arc;

/// What a scan reads: table, scope, key ranges, columns, limit.
#[derive(Debug, Clone)]
pub struct ScanRequest {
    /// The table.
    pub table: Arc<CachedTable>,
    /// Whose rows.
    pub scope: Scope,
    /// Primary-key ranges to read.
    pub ranges: KeyRanges,
    /// Filters for pruning segments by statistics.
    pub filters: Vec<Expr>,
    /// Table-schema indices returned (`None`: all).
    pub projection: Option<Vec<usize>>,
    /// Most rows returned.
    pub limit: Option<usize>,
    /// Return tombstones too (`_deleted` true), as the newest version of their key: a live
    /// query's resume tells the client which rows went away.
    pub keep_tombstones: bool,
    /// Segments whose every version is at or before this `_seq` may be skipped: the caller
    /// (a live query's resume) drops such rows anyway, and no version they hide can be newer.
    pub after_seq: Option<i64>,
    /// Inside a transaction: its snapshot and staged versions (see [`crate::snapshots`]).
    pub view: Option<Arc<crate::snapshots::TxRead>>,
}

/// The streaming scan of one application table; see the module doc.
#[derive(Debug)]
pub struct TableScanExec {
    request: ScanRequest,
    layout: Arc<Layout>,
    backend: Arc<dyn StorageBackend>,
    cold: Arc<ColdTier>,
    /// Segments kept and present when planned (for `EXPLAIN`), and their rows.
    planned: (usize, usize, u64),
    properties: Arc<PlanProperties>,
    metrics: ExecutionPlanMetricsSet,
}

/// What a running scan counts (shown by `EXPLAIN ANALYZE`).
#[derive(Debug, Clone)]
pub(crate) struct ScanMetrics {
    /// Row versions read from both tiers (before merging and tombstones).
    pub rows_read: Count,
    /// Segment files opened.
    pub segments_read: Count,
}

impl TableScanExec {
    /// Plans a scan: reads the scope's manifest (metadata only, cached) for `EXPLAIN` and row
    /// statistics, nothing else.
    pub async fn plan(
        request: ScanRequest,
        backend: Arc<dyn StorageBackend>,
        cold: Arc<ColdTier>,
    ) -> Result<Self> {
        let table = &request.table;
        let layout = Arc::new(Layout::new(
            table,
            request.projection.as_ref(),
            request.keep_tombstones,
            request.limit,
        )?);
        let planned = if table.def.table_type == TableType::Stream {
            (0, 0, 0)
        } else {
            let segs = cold.segments(table, &request.scope).await?;
            let keep = keep_segments(&request, &segs);
            let rows = segs
                .segments()
                .iter()
                .zip(&keep)
                .filter(|(_, k)| **k)
                .map(|(s, _)| s.row_count)
                .sum();
            (keep.iter().filter(|k| **k).count(), keep.len(), rows)
        };
        let properties = Arc::new(properties(table, &layout));
        Ok(Self {
            request,
            layout,
            backend,
            cold,
            planned,
            properties,
            metrics: ExecutionPlanMetricsSet::new(),
        })
    }

    fn with_limit(&self, limit: Option<usize>) -> Self {
        let mut request = self.request.clone();
        request.limit = limit;
        let mut layout = (*self.layout).clone();
        layout.chunk_rows = source::chunk_rows(limit);
        Self {
            request,
            layout: Arc::new(layout),
            backend: Arc::clone(&self.backend),
            cold: Arc::clone(&self.cold),
            planned: self.planned,
            properties: Arc::clone(&self.properties),
            metrics: ExecutionPlanMetricsSet::new(),
        }
    }
}

/// Output properties: one partition, ordered by the primary key when it is returned and its
/// key order is its SQL order.
fn properties(table: &CachedTable, layout: &Layout) -> PlanProperties {
    let schema = Arc::clone(&layout.out_schema);
    let mut eq = EquivalenceProperties::new(Arc::clone(&schema));
    if table.def.table_type != TableType::Stream
        && let Some(pk) = table.pk_index
        && key_range::orderable(&table.def.columns[pk].data_type)
        && let Some(at) = layout.projection.iter().position(|p| *p == pk)
    {
        let col: Arc<dyn PhysicalExpr> = Arc::new(
            datafusion::physical_expr::expressions::Column::new(schema.field(at).name(), at),
        );
        if let Some(ordering) = LexOrdering::new([PhysicalSortExpr::new_default(col)]) {
            eq.add_orderings([ordering]);
        }
    }
    // Cooperative: the stream waits on tokio channels and object-store reads, which yield to
    // the scheduler by themselves.
    PlanProperties::new(
        eq,
        Partitioning::UnknownPartitioning(1),
        EmissionType::Incremental,
        Boundedness::Bounded,
    )
    .with_scheduling_type(SchedulingType::Cooperative)
}

/// Which segments of `segs` a scan must read: those its filters' statistics and its key
/// ranges cannot rule out (see [`crate::pruning`]).
fn keep_segments(request: &ScanRequest, segs: &crate::cold::ScopeSegments) -> Vec<bool> {
    let by_stats = crate::pruning::segments_to_read(
        &request.table,
        segs.segments(),
        segs.key_ranges(),
        &request.filters,
    );
    by_stats
        .into_iter()
        .zip(segs.key_ranges())
        .zip(segs.segments())
        .map(|((keep, (lo, hi)), seg)| {
            keep && request.ranges.overlaps(lo, hi)
                && request.after_seq.is_none_or(|after| seg.max_seq > after)
                && request
                    .view
                    .as_ref()
                    .is_none_or(|v| seg.min_seq <= v.max_seq)
        })
        .collect()
}

impl DisplayAs for TableScanExec {
    fn fmt_as(&self, _t: DisplayFormatType, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        let r = &self.request;
        let scope = match &r.scope {
            Scope::Shared => "shared".to_string(),
            Scope::User(u) => format!("user={u}"),
        };
        let columns: Vec<&str> = self
            .layout
            .out_schema
            .fields()
            .iter()
            .map(|f| f.name().as_str())
            .collect();
        write!(
            f,
            "KalamTableScan: table={}, scope={scope}, keys={}, projection=[{}]",
            r.table.def.table_id(),
            describe_ranges(&r.ranges),
            columns.join(", ")
        )?;
        if let Some(l) = r.limit {
            write!(f, ", limit={l}")?;
        }
        let (kept, total, rows) = self.planned;
        write!(f, ", segments={kept}/{total} (rows={rows})")
    }
}

/// `all`, `none`, or the number of ranges and how many are single keys.
fn describe_ranges(r: &KeyRanges) -> String {
    if r.is_all() {
        return "all".into();
    }
    let n = r.ranges().len();
    match r.points() {
        _ if n == 0 => "none".into(),
        Some(_) => format!("{n} point(s)"),
        None => format!("{n} range(s)"),
    }
}

impl ExecutionPlan for TableScanExec {
    fn name(&self) -> &'static str {
        "KalamTableScan"
    }

    fn properties(&self) -> &Arc<PlanProperties> {
        &self.properties
    }

    fn children(&self) -> Vec<&Arc<dyn ExecutionPlan>> {
        vec![]
    }

    fn apply_expressions(
        &self,
        _f: &mut dyn FnMut(&Arc<dyn PhysicalExpr>) -> DfResult<TreeNodeRecursion>,
    ) -> DfResult<TreeNodeRecursion> {
        Ok(TreeNodeRecursion::Continue)
    }

    fn with_new_children(
        self: Arc<Self>,
        _children: Vec<Arc<dyn ExecutionPlan>>,
    ) -> DfResult<Arc<dyn ExecutionPlan>> {
        Ok(self)
    }

    fn fetch(&self) -> Option<usize> {
        self.request.limit
    }

    fn with_fetch(&self, limit: Option<usize>) -> Option<Arc<dyn ExecutionPlan>> {
        let limit = match (limit, self.request.limit) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        Some(Arc::new(self.with_limit(limit)))
    }

    fn statistics_from_inputs(
        &self,
        _input_stats: &[Arc<Statistics>],
        _args: &datafusion::physical_plan::statistics::StatisticsArgs,
    ) -> DfResult<Arc<Statistics>> {
        let schema = self.schema();
        let mut stats = Statistics::new_unknown(&schema);
        let (_, total, rows) = self.planned;
        if total > 0 {
            stats.num_rows = Precision::Inexact(rows as usize);
        }
        Ok(Arc::new(stats))
    }

    fn metrics(&self) -> Option<MetricsSet> {
        Some(self.metrics.clone_inner())
    }

    fn execute(
        &self,
        partition: usize,
        context: Arc<TaskContext>,
    ) -> DfResult<SendableRecordBatchStream> {
        let reservation = MemoryConsumer::new("KalamTableScan").register(context.memory_pool());
        let metrics = ScanMetrics {
            rows_read: MetricBuilder::new(&self.metrics).counter("rows_read", partition),
            segments_read: MetricBuilder::new(&self.metrics).counter("segments_read", partition),
        };
        let open = open(
            self.request.clone(),
            Arc::clone(&self.layout),
            Arc::clone(&self.backend),
            Arc::clone(&self.cold),
            reservation,
            metrics,
        );
        let stream = futures::stream::once(open)
            .try_flatten()
            .map_err(KalamError::into_datafusion);
        Ok(Box::pin(RecordBatchStreamAdapter::new(
            Arc::clone(&self.layout.out_schema),
            stream,
        )))
    }
}

/// Batches of a scan, in key order.
pub type BatchStream =
    futures::stream::BoxStream<'static, Result<datafusion::arrow::array::RecordBatch>>;

/// Runs `request` outside DataFusion (no plan, no memory pool: the stream itself holds at
/// most a few chunks); returns once the hot tier's snapshot is taken.
pub(crate) async fn read_now(
    request: ScanRequest,
    backend: Arc<dyn StorageBackend>,
    cold: Arc<ColdTier>,
) -> Result<BatchStream> {
    let layout = Arc::new(Layout::new(
        &request.table,
        request.projection.as_ref(),
        request.keep_tombstones,
        request.limit,
    )?);
    let pool: Arc<dyn datafusion::execution::memory_pool::MemoryPool> =
        Arc::new(datafusion::execution::memory_pool::UnboundedMemoryPool::default());
    let reservation = MemoryConsumer::new("KalamScopeRead").register(&pool);
    let metrics = ExecutionPlanMetricsSet::new();
    let metrics = ScanMetrics {
        rows_read: MetricBuilder::new(&metrics).counter("rows_read", 0),
        segments_read: MetricBuilder::new(&metrics).counter("segments_read", 0),
    };
    open(request, layout, backend, cold, reservation, metrics).await
}

/// Starts a scan (see the module doc) and returns its batches as a stream; returns once the
/// hot tier's snapshot is taken (the rest is read as the stream is polled).
async fn open(
    request: ScanRequest,
    layout: Arc<Layout>,
    backend: Arc<dyn StorageBackend>,
    cold: Arc<ColdTier>,
    reservation: datafusion::execution::memory_pool::MemoryReservation,
    metrics: ScanMetrics,
) -> Result<BatchStream> {
    let table = Arc::clone(&request.table);
    let stream_table = table.def.table_type == TableType::Stream;
    // Inside a transaction the merge reads the points (through its snapshot and staging).
    if !stream_table
        && request.view.is_none()
        && let Some(points) = request.ranges.points()
    {
        return point_reads(&request, &layout, &*backend, &cold, &points).await;
    }
    let hot = source::spawn_hot(
        Arc::clone(&backend),
        request.view.as_ref().map(|v| Arc::clone(&v.hot)),
        Arc::clone(&table),
        request.scope.prefix(),
        request.ranges.clone(),
        Arc::clone(&layout),
    )
    .await?;
    let mut sources = vec![hot];
    if !stream_table {
        let segs = Arc::new(cold.segments(&table, &request.scope).await?);
        let keep = keep_segments(&request, &segs);
        let ranges = Arc::new(request.ranges.clone());
        for run in source::runs(&segs, &keep) {
            sources.push(Source::Cold(Box::new(SegmentRun {
                table: Arc::clone(&table),
                cold: Arc::clone(&cold),
                scope: Arc::clone(&segs),
                segments: run,
                ranges: Arc::clone(&ranges),
                layout: Arc::clone(&layout),
                stream: None,
                segments_read: metrics.segments_read.clone(),
                max_seq: request.view.as_ref().map(|v| v.max_seq),
            })));
        }
    }
    let merge = merge::Merge::new(
        table,
        layout,
        sources,
        request.limit,
        reservation,
        metrics.rows_read,
    );
    Ok(futures::stream::try_unfold(merge, |mut m| async move {
        Ok(m.next_batch().await?.map(|b| (b, m)))
    })
    .boxed())
}

/// A scan whose key ranges are single keys: one lookup per key in each tier.
async fn point_reads(
    request: &ScanRequest,
    layout: &Layout,
    backend: &dyn StorageBackend,
    cold: &ColdTier,
    points: &[Vec<u8>],
) -> Result<BatchStream> {
    let versions = cold
        .current_versions(backend, &request.table, &request.scope, points, None)
        .await?;
    let mut rows: Vec<_> = versions
        .into_iter()
        .flatten()
        .filter(|r| request.keep_tombstones || !r.deleted)
        .collect();
    if let Some(l) = request.limit {
        rows.truncate(l);
    }
    let (_, batches) = crate::rows::build_batches(&request.table, &rows, Some(&layout.projection))?;
    Ok(futures::stream::iter(batches.into_iter().map(Ok)).boxed())
}
