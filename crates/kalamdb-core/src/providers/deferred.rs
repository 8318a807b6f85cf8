//! [`deferred_exec`]: a leaf plan whose rows are read when the plan runs, not when it is
//! planned, for providers whose contents are cheap to describe but may be large to read
//! (system tables): `EXPLAIN` and planning read nothing, and a plan that is never run (a
//! query refused by a later check, a cancelled request) reads nothing either.

use datafusion::arrow::array::RecordBatch;
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::error::Result as DfResult;
use datafusion::physical_plan::ExecutionPlan;
use datafusion::physical_plan::memory::{LazyBatchGenerator, LazyMemoryExec};
use kalamdb_catalog::error::Result;
use parking_lot::RwLock;
use std::sync::Arc;

/// Reads a provider's batches (all columns).
pub type ReadBatches = Arc<dyn Fn() -> Result<Vec<RecordBatch>> + Send + Sync>;

/// A plan returning `read()`'s batches projected by `projection` (of `schema`'s columns),
/// calling `read` on the first poll of each execution.
pub fn deferred_exec(
    schema: &SchemaRef,
    projection: Option<&Vec<usize>>,
    read: ReadBatches,
) -> DfResult<Arc<dyn ExecutionPlan>> {
    let projected = match projection {
        Some(p) => Arc::new(schema.project(p)?),
        None => Arc::clone(schema),
    };
    let generator = Deferred {
        read,
        projection: projection.cloned(),
        batches: None,
    };
    Ok(Arc::new(LazyMemoryExec::try_new(
        projected,
        vec![Arc::new(RwLock::new(generator))],
    )?))
}

/// The generator behind [`deferred_exec`].
struct Deferred {
    read: ReadBatches,
    projection: Option<Vec<usize>>,
    /// Batches still to return (in reverse order), once read.
    batches: Option<Vec<RecordBatch>>,
}

impl std::fmt::Debug for Deferred {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Deferred")
            .field("projection", &self.projection)
            .finish_non_exhaustive()
    }
}

impl std::fmt::Display for Deferred {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("read at execution")
    }
}

impl LazyBatchGenerator for Deferred {
    fn as_any(&self) -> &dyn std::any::Any {
        self
    }

    fn generate_next_batch(&mut self) -> DfResult<Option<RecordBatch>> {
        if self.batches.is_none() {
            let mut read =
                (self.read)().map_err(kalamdb_catalog::error::KalamError::into_datafusion)?;
            read.reverse();
            self.batches = Some(read);
        }
        let Some(batch) = self.batches.as_mut().and_then(Vec::pop) else {
            return Ok(None);
        };
        Ok(Some(match &self.projection {
            Some(p) => batch.project(p)?,
            None => batch,
        }))
    }

    fn reset_state(&self) -> Arc<RwLock<dyn LazyBatchGenerator>> {
        Arc::new(RwLock::new(Deferred {
            read: Arc::clone(&self.read),
            projection: self.projection.clone(),
            batches: None,
        }))
    }
}
