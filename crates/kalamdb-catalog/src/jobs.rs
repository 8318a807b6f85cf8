//! Background jobs (flush, compaction, stream eviction), recorded in `system.jobs`.
//!
//! A job is recorded `running` when it starts and `completed`, `failed` or `cancelled` when it
//! ends, with its timings, rows, bytes and message. One job per (type, target) runs at a time:
//! asking for the same job while it runs returns the running one instead of starting a second
//! (so a flush is never queued twice). `KILL JOB` asks a running job to stop at its next
//! checkpoint (between the scopes of a table); what it finished stays done. Jobs found
//! `running` when the server starts were interrupted by a stop and are marked `failed`. The
//! newest [`KEEP_JOBS`] finished jobs are kept; older ones are removed as new ones end, in
//! steps of [`TRIM_STEP`] (so ending a job does not read the whole table each time).

use crate::catalog::{Catalog, JobRecord};
use crate::error::Result;
use crate::seq::SeqGenerator;
use dashmap::DashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

/// Finished jobs kept in `system.jobs`.
pub const KEEP_JOBS: usize = 1000;

/// Finished jobs beyond [`KEEP_JOBS`] that may pile up before the oldest are removed.
pub const TRIM_STEP: usize = 100;

/// A job whose caller's future was dropped before the job ended (its request was cancelled
/// by a timeout, `KILL QUERY` or a disconnect): it is recorded `cancelled` and no longer
/// blocks the next job of its type and target. What it finished stays done, as with `KILL JOB`.
struct Abandoned<'a> {
    jobs: &'a JobManager,
    key: Option<(String, String)>,
    job: JobRecord,
}

impl Drop for Abandoned<'_> {
    fn drop(&mut self) {
        let Some(key) = self.key.take() else { return };
        self.jobs.running.remove(&key);
        self.job.status = "cancelled".into();
        self.job.finished_at = Some(chrono::Utc::now().timestamp_micros());
        self.job.message = Some("the request that ran the job was cancelled".into());
        if let Some(hook) = self.jobs.on_finish.get() {
            hook(&self.job);
        }
        if let Err(e) = self.jobs.catalog.put_job(&self.job) {
            tracing::warn!(job = %self.job.job_id, error = %e, "cannot record a job's end");
        }
    }
}

/// What a job reports when it ends.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct JobReport {
    /// Rows written or removed.
    pub rows: u64,
    /// Bytes written.
    pub bytes: u64,
    /// A line for `system.jobs.message`.
    pub message: String,
}

/// A running job's cancel flag.
#[derive(Debug, Clone, Default)]
pub struct CancelFlag(Arc<AtomicBool>);

impl CancelFlag {
    /// Whether `KILL JOB` asked this job to stop.
    pub fn is_set(&self) -> bool {
        self.0.load(Ordering::Acquire)
    }
}

/// What a caller gets back.
#[derive(Debug, Clone)]
pub enum JobOutcome {
    /// The job ran; its final record.
    Ran(Box<JobRecord>),
    /// The same job was already running; its id.
    AlreadyRunning(String),
}

/// Called with every job that ends.
type FinishHook = Box<dyn Fn(&JobRecord) + Send + Sync>;

/// The job manager.
pub struct JobManager {
    catalog: Catalog,
    seq: Arc<SeqGenerator>,
    /// Running jobs by (type, target): their id and cancel flag.
    running: DashMap<(String, String), (String, CancelFlag)>,
    /// Finished jobs recorded, as far as this process knows (counted at start).
    finished: std::sync::atomic::AtomicUsize,
    on_finish: std::sync::OnceLock<FinishHook>,
}

impl std::fmt::Debug for JobManager {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JobManager")
            .field("running", &self.running.len())
            .finish_non_exhaustive()
    }
}

impl JobManager {
    /// The manager; marks jobs left `running` by a previous process as failed.
    pub fn open(catalog: Catalog, seq: Arc<SeqGenerator>) -> Result<Self> {
        let now = chrono::Utc::now().timestamp_micros();
        let jobs = catalog.jobs()?;
        let finished = jobs.len();
        for mut job in jobs {
            if job.status == "running" || job.status == "queued" {
                job.status = "failed".into();
                job.finished_at = Some(now);
                job.message = Some("interrupted: the server stopped while it ran".into());
                catalog.put_job(&job)?;
            }
        }
        Ok(Self {
            catalog,
            seq,
            running: DashMap::new(),
            finished: finished.into(),
            on_finish: std::sync::OnceLock::new(),
        })
    }

    /// Calls `hook` with every job that ends (metrics); the first hook set stays.
    pub fn set_finish_hook(&self, hook: impl Fn(&JobRecord) + Send + Sync + 'static) {
        let _ = self.on_finish.set(Box::new(hook));
    }

    /// Runs `work` as job `job_type` on `target`, recording it; see the module doc.
    pub async fn run<F, Fut>(
        &self,
        job_type: &str,
        target: &str,
        trigger: &str,
        created_by: &str,
        attempts: u32,
        work: F,
    ) -> Result<JobOutcome>
    where
        F: FnOnce(CancelFlag) -> Fut,
        Fut: std::future::Future<Output = Result<JobReport>>,
    {
        let key = (job_type.to_string(), target.to_string());
        let job_id = self.seq.next_id().to_string();
        let cancel = CancelFlag::default();
        match self.running.entry(key.clone()) {
            dashmap::Entry::Occupied(e) => {
                return Ok(JobOutcome::AlreadyRunning(e.get().0.clone()));
            }
            dashmap::Entry::Vacant(e) => {
                e.insert((job_id.clone(), cancel.clone()));
            }
        }
        let now = || chrono::Utc::now().timestamp_micros();
        let mut job = JobRecord {
            job_id,
            job_type: job_type.into(),
            target: target.into(),
            status: "running".into(),
            trigger: trigger.into(),
            created_by: created_by.into(),
            created_at: now(),
            started_at: Some(now()),
            finished_at: None,
            rows: 0,
            bytes: 0,
            message: None,
            attempts,
        };
        let recorded = self.catalog.put_job(&job);
        // If the caller stops waiting (its request was cancelled), the job ends here too.
        let mut abandoned = Abandoned {
            jobs: self,
            key: Some(key.clone()),
            job: job.clone(),
        };
        let result = match recorded {
            Ok(()) => work(cancel.clone()).await,
            Err(e) => Err(e),
        };
        abandoned.key = None;
        self.running.remove(&key);
        job.finished_at = Some(now());
        match &result {
            Ok(report) => {
                job.rows = report.rows;
                job.bytes = report.bytes;
                job.message = Some(report.message.clone());
                job.status = if cancel.is_set() {
                    "cancelled"
                } else {
                    "completed"
                }
                .into();
            }
            Err(e) => {
                job.status = "failed".into();
                job.message = Some(e.to_string());
            }
        }
        if let Some(hook) = self.on_finish.get() {
            hook(&job);
        }
        if let Err(e) = self.catalog.put_job(&job).and_then(|()| self.trim()) {
            tracing::warn!(job = %job.job_id, error = %e, "cannot record a job's end");
        }
        result.map(|_| JobOutcome::Ran(Box::new(job)))
    }

    /// Removes the oldest finished jobs beyond [`KEEP_JOBS`] (ids are `_seq`s: they sort by
    /// creation as numbers of equal length).
    fn trim(&self) -> Result<()> {
        if self.finished.fetch_add(1, Ordering::Relaxed) < KEEP_JOBS + TRIM_STEP {
            return Ok(());
        }
        let finished: Vec<String> = self
            .catalog
            .jobs()?
            .into_iter()
            .filter(|j| j.finished_at.is_some())
            .map(|j| j.job_id)
            .collect();
        if finished.len() > KEEP_JOBS {
            self.catalog
                .delete_jobs(&finished[..finished.len() - KEEP_JOBS])?;
        }
        self.finished
            .store(finished.len().min(KEEP_JOBS), Ordering::Relaxed);
        Ok(())
    }

    /// Asks running job `job_id` to stop; false when no such job is running.
    pub fn kill(&self, job_id: &str) -> bool {
        let found = self
            .running
            .iter()
            .find(|e| e.value().0 == job_id)
            .map(|e| e.value().1.clone());
        match found {
            Some(flag) => {
                flag.0.store(true, Ordering::Release);
                true
            }
            None => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kalamdb_store::{RocksBackend, StoreOptions};

    #[tokio::test]
    async fn old_finished_jobs_are_trimmed_in_steps() {
        let dir = tempfile::tempdir().unwrap();
        let backend = Arc::new(RocksBackend::open(dir.path(), &StoreOptions::default()).unwrap());
        let catalog = Catalog::open(backend, 1).unwrap();
        let jobs = JobManager::open(catalog.clone(), Arc::new(SeqGenerator::new("n"))).unwrap();
        let ok = |_| async { Ok(JobReport::default()) };
        for i in 0..KEEP_JOBS + TRIM_STEP {
            let target = format!("t{i}");
            jobs.run("flush", &target, "manual", "root", 1, ok)
                .await
                .unwrap();
        }
        assert_eq!(catalog.jobs().unwrap().len(), KEEP_JOBS + TRIM_STEP);
        jobs.run("flush", "t0", "manual", "root", 1, ok)
            .await
            .unwrap();
        let left = catalog.jobs().unwrap();
        assert_eq!(left.len(), KEEP_JOBS, "trimmed back to KEEP_JOBS");
        assert_eq!(left.last().unwrap().target, "t0", "the newest job is kept");
        assert_eq!(left.first().unwrap().target, format!("t{}", TRIM_STEP + 1));
    }

    #[tokio::test]
    async fn a_job_whose_caller_went_away_is_cancelled_and_frees_its_slot() {
        let dir = tempfile::tempdir().unwrap();
        let backend = Arc::new(RocksBackend::open(dir.path(), &StoreOptions::default()).unwrap());
        let catalog = Catalog::open(backend, 1).unwrap();
        let jobs = JobManager::open(catalog.clone(), Arc::new(SeqGenerator::new("n"))).unwrap();
        let stuck = jobs.run("flush", "t", "manual", "root", 1, |_| async {
            tokio::time::sleep(std::time::Duration::from_secs(60)).await;
            Ok(JobReport::default())
        });
        let waited = tokio::time::timeout(std::time::Duration::from_millis(50), stuck).await;
        assert!(waited.is_err());
        let again = jobs
            .run("flush", "t", "manual", "root", 1, |_| async {
                Ok(JobReport::default())
            })
            .await
            .unwrap();
        assert!(matches!(again, JobOutcome::Ran(_)), "{again:?}");
        let statuses: Vec<String> = catalog
            .jobs()
            .unwrap()
            .into_iter()
            .map(|j| j.status)
            .collect();
        assert_eq!(statuses, ["cancelled", "completed"]);
    }
}
