//! Merging sources sorted by primary key into the visible rows, newest `_seq` per key winning
//! and tombstones hiding the key.
//!
//! The merge works in runs, not rows: it finds the source with the smallest next key and the
//! smallest next key of all the others (the bound), then emits every row of that source below
//! the bound as one zero-copy slice, found by galloping search. Sources that do not overlap
//! (a hot tier of recent keys over older segments, segments of one run) therefore cost a few
//! key comparisons per chunk; only keys present in several sources are resolved row by row.

use super::source::{Chunk, Layout, Source, key_at, seq_at};
use datafusion::arrow::array::{AsArray, RecordBatch};
use datafusion::arrow::compute::{concat_batches, filter_record_batch};
use datafusion::execution::memory_pool::MemoryReservation;
use datafusion::physical_plan::metrics::Count;
use kalamdb_catalog::error::{KalamError, Result};
use kalamdb_catalog::schema_registry::CachedTable;
use std::sync::Arc;

/// One source with its current chunk.
struct Cursor {
    source: Source,
    chunk: Option<Chunk>,
    pos: usize,
    /// Key of the row at `pos`, once computed.
    head: Option<Vec<u8>>,
}

impl Cursor {
    fn len(&self) -> usize {
        self.chunk.as_ref().map_or(0, |c| c.batch.num_rows())
    }

    /// Makes sure a row is at `pos`; `false` when the source is exhausted.
    async fn fill(&mut self, rows_read: &Count) -> Result<bool> {
        while self.pos >= self.len() {
            match self.source.next().await? {
                Some(chunk) => {
                    rows_read.add(chunk.batch.num_rows());
                    self.chunk = Some(chunk);
                    self.pos = 0;
                    self.head = None;
                }
                None => {
                    self.chunk = None;
                    return Ok(false);
                }
            }
        }
        Ok(true)
    }

    fn chunk(&self) -> &Chunk {
        self.chunk.as_ref().expect("filled cursor")
    }

    fn key(&self, table: &CachedTable, layout: &Layout, i: usize) -> Result<Vec<u8>> {
        key_at(table, self.chunk().batch.column(layout.pk.unwrap_or(0)), i)
    }

    fn head(&mut self, table: &CachedTable, layout: &Layout) -> Result<&[u8]> {
        if self.head.is_none() {
            self.head = Some(self.key(table, layout, self.pos)?);
        }
        Ok(self.head.as_deref().unwrap_or_default())
    }

    fn advance(&mut self, n: usize) {
        self.pos += n;
        self.head = None;
    }

    /// First row at or after `pos` whose key is not below `bound` (the row at `pos` is).
    fn gallop(&self, table: &CachedTable, layout: &Layout, bound: &[u8]) -> Result<usize> {
        let len = self.len();
        let (mut lo, mut step) = (self.pos, 1);
        // Exponential probe for an upper end, then binary search below it.
        while lo + step < len && self.key(table, layout, lo + step)?.as_slice() < bound {
            lo += step;
            step *= 2;
        }
        let (mut a, mut b) = (lo + 1, (lo + step).min(len));
        while a < b {
            let mid = a + (b - a) / 2;
            if self.key(table, layout, mid)?.as_slice() < bound {
                a = mid + 1;
            } else {
                b = mid;
            }
        }
        Ok(a)
    }
}

/// The merge of a scan's sources; see the module doc.
pub(crate) struct Merge {
    table: Arc<CachedTable>,
    layout: Arc<Layout>,
    cursors: Vec<Cursor>,
    /// Rows still to return (`LIMIT`).
    remaining: Option<usize>,
    pending: Vec<RecordBatch>,
    pending_rows: usize,
    reservation: MemoryReservation,
    rows_read: Count,
    done: bool,
}

impl Merge {
    pub(crate) fn new(
        table: Arc<CachedTable>,
        layout: Arc<Layout>,
        sources: Vec<Source>,
        limit: Option<usize>,
        reservation: MemoryReservation,
        rows_read: Count,
    ) -> Self {
        Self {
            table,
            layout,
            cursors: sources
                .into_iter()
                .map(|source| Cursor {
                    source,
                    chunk: None,
                    pos: 0,
                    head: None,
                })
                .collect(),
            remaining: limit,
            pending: Vec::new(),
            pending_rows: 0,
            reservation,
            rows_read,
            done: false,
        }
    }

    /// The next batch of visible rows, projected; `None` at the end.
    pub(crate) async fn next_batch(&mut self) -> Result<Option<RecordBatch>> {
        while !self.done && self.pending_rows < self.layout.chunk_rows && self.remaining != Some(0)
        {
            self.step().await?;
        }
        if self.pending.is_empty() {
            self.reservation.free();
            return Ok(None);
        }
        let parts = std::mem::take(&mut self.pending);
        self.pending_rows = 0;
        let batch = match parts.len() {
            1 => parts.into_iter().next().unwrap_or_else(|| unreachable!()),
            _ => concat_batches(&Arc::clone(&self.layout.out_schema), &parts)
                .map_err(|e| KalamError::Internal(e.to_string()))?,
        };
        Ok(Some(batch))
    }

    /// Moves one run of rows (or one contested key) to `pending`.
    async fn step(&mut self) -> Result<()> {
        let mut i = 0;
        while i < self.cursors.len() {
            if self.cursors[i].fill(&self.rows_read).await? {
                i += 1;
            } else {
                self.cursors.swap_remove(i);
            }
        }
        self.account()?;
        let (table, layout) = (Arc::clone(&self.table), Arc::clone(&self.layout));
        if self.cursors.is_empty() {
            self.done = true;
            return Ok(());
        }
        if self.cursors.len() == 1 {
            let c = &mut self.cursors[0];
            let (from, to) = (c.pos, c.len());
            let slice = c.chunk().batch.slice(from, to - from);
            c.advance(to - from);
            return self.emit(slice);
        }
        // The source with the smallest next key, and the smallest next key of the others.
        let mut heads = Vec::with_capacity(self.cursors.len());
        for c in &mut self.cursors {
            heads.push(c.head(&table, &layout)?.to_vec());
        }
        let first = (0..heads.len())
            .min_by(|&a, &b| heads[a].cmp(&heads[b]))
            .unwrap_or(0);
        let bound = (0..heads.len())
            .filter(|&j| j != first)
            .map(|j| &heads[j])
            .min()
            .cloned()
            .unwrap_or_default();
        if heads[first] < bound {
            let c = &mut self.cursors[first];
            let end = c.gallop(&table, &layout, &bound)?;
            let slice = c.chunk().batch.slice(c.pos, end - c.pos);
            c.advance(end - c.pos);
            return self.emit(slice);
        }
        // Several sources hold this key: the newest version wins, the others are skipped.
        let mut winner: Option<(usize, i64)> = None;
        for (j, h) in heads.iter().enumerate() {
            if *h == bound {
                let c = &self.cursors[j];
                let seq = seq_at(&c.chunk().batch, &layout, c.pos);
                if winner.is_none_or(|(_, s)| seq > s) {
                    winner = Some((j, seq));
                }
            }
        }
        let (w, _) = winner.unwrap_or((first, 0));
        let slice = {
            let c = &self.cursors[w];
            c.chunk().batch.slice(c.pos, 1)
        };
        for (j, h) in heads.iter().enumerate() {
            if *h == bound {
                self.cursors[j].advance(1);
            }
        }
        self.emit(slice)
    }

    /// Adds the visible rows of `slice` (work columns) to `pending`, projected.
    fn emit(&mut self, slice: RecordBatch) -> Result<()> {
        let layout = &self.layout;
        let visible = match layout.deleted {
            Some(d) if !layout.keep_tombstones && slice.column(d).as_boolean().true_count() > 0 => {
                let keep = datafusion::arrow::compute::not(slice.column(d).as_boolean())
                    .map_err(|e| KalamError::Internal(e.to_string()))?;
                filter_record_batch(&slice, &keep)
                    .map_err(|e| KalamError::Internal(e.to_string()))?
            }
            _ => slice,
        };
        let mut out = visible
            .project(&layout.output)
            .map_err(|e| KalamError::Internal(e.to_string()))?;
        if let Some(left) = &mut self.remaining {
            if out.num_rows() > *left {
                out = out.slice(0, *left);
            }
            *left -= out.num_rows();
        }
        if out.num_rows() > 0 {
            self.pending_rows += out.num_rows();
            self.pending.push(out);
        }
        Ok(())
    }

    /// Holds the memory of the chunks in hand against the query's memory pool.
    fn account(&mut self) -> Result<()> {
        let held: usize = self
            .cursors
            .iter()
            .filter_map(|c| c.chunk.as_ref())
            .map(|c| c.batch.get_array_memory_size())
            .sum::<usize>()
            + self
                .pending
                .iter()
                .map(|b| b.get_array_memory_size())
                .sum::<usize>();
        self.reservation
            .try_resize(held)
            .map_err(|e| KalamError::ResourceExhausted(e.to_string()))
    }
}
