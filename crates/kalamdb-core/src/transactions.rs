//! Explicit transactions: `BEGIN` … `COMMIT` / `ROLLBACK` (`docs/protocol.md` §4.2.1).
//!
//! A [`Transaction`] holds a snapshot of both tiers taken at `BEGIN` and the versions its
//! statements staged, per table scope (`kalamdb_tables::txn`); reads inside it see the
//! snapshot with its own writes over it, and COMMIT writes everything as one atomic batch,
//! refused when another write of a staged row committed after `BEGIN` (first committer wins).
//!
//! The [`TransactionManager`] keeps every open transaction (`system.transactions`): those of
//! one request, removed when the request ends, and those a request opened for later requests
//! to continue (`transaction_id` in the request body), which roll back after
//! `[transactions] idle_timeout_secs` without a statement or `max_duration_secs` in all.
//! Only the user who began one may use it, one request at a time.

use crate::auth::Identity;
use crate::config::TransactionsConfig;
use dashmap::DashMap;
use kalamdb_catalog::error::{KalamError, Result};
use kalamdb_catalog::schema_registry::CachedTable;
use kalamdb_catalog::seq::SeqGenerator;
use kalamdb_commons::{TableId, UserId};
use kalamdb_tables::TableStore;
use kalamdb_tables::rows::{Scope, StoredRow};
use kalamdb_tables::snapshots::{TxRead, TxSnapshot};
use kalamdb_tables::txn::ScopeStage;
use kalamdb_tables::writer::Cells;
use parking_lot::Mutex;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Where a transaction lives.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Origin {
    /// Inside one request: rolled back if the request ends with it open.
    Request,
    /// Continued by later requests through its id.
    Session,
}

impl Origin {
    fn as_str(self) -> &'static str {
        match self {
            Origin::Request => "request",
            Origin::Session => "session",
        }
    }
}

/// One open transaction; see the module doc.
#[derive(Debug)]
pub struct Transaction {
    id: String,
    owner: UserId,
    origin: Origin,
    started_at_micros: i64,
    started: Instant,
    snapshot: TxSnapshot,
    state: Mutex<TxState>,
    /// Held by the request using the transaction.
    in_use: Arc<tokio::sync::Mutex<()>>,
}

#[derive(Debug)]
struct TxState {
    /// Why it cannot go on (a failed statement, `KILL TRANSACTION`, a timeout).
    aborted: Option<String>,
    stages: Vec<ScopeStage>,
    statements: u64,
    last_used: Instant,
}

/// One row of `system.transactions`.
#[derive(Debug, Clone)]
pub struct TransactionInfo {
    /// Its id.
    pub id: String,
    /// Who began it.
    pub owner: String,
    /// `request` or `session`.
    pub origin: &'static str,
    /// `active` or `aborted`.
    pub state: &'static str,
    /// When it began, µs since the epoch.
    pub started_at: i64,
    /// Milliseconds since it began, and since its last statement.
    pub age_ms: i64,
    /// See `age_ms`.
    pub idle_ms: i64,
    /// Statements run inside it.
    pub statements: i64,
    /// Rows staged (distinct keys) and their bytes.
    pub staged_rows: i64,
    /// See `staged_rows`.
    pub staged_bytes: i64,
    /// Tables written, `namespace.table`, comma-separated.
    pub tables: String,
    /// The `_seq` bound of its snapshot.
    pub snapshot_seq: i64,
}

impl Transaction {
    /// Its id.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// Where it lives.
    pub fn origin(&self) -> Origin {
        self.origin
    }

    /// Fails when the transaction can no longer run statements.
    pub fn check_active(&self) -> Result<()> {
        match &self.state.lock().aborted {
            Some(why) => Err(KalamError::TransactionAborted(format!(
                "Transaction {} is aborted ({why}); only ROLLBACK is accepted",
                self.id
            ))),
            None => Ok(()),
        }
    }

    /// Marks the transaction aborted: later statements fail until ROLLBACK.
    pub fn abort(&self, why: impl Into<String>) {
        let mut s = self.state.lock();
        if s.aborted.is_none() {
            s.aborted = Some(why.into());
        }
    }

    /// Counts one statement run inside it.
    pub(crate) fn touch(&self) {
        let mut s = self.state.lock();
        s.statements += 1;
        s.last_used = Instant::now();
    }

    /// How reads of `scope` of `table` see the data inside this transaction.
    pub fn read(&self, tables: &TableStore, table: &TableId, scope: &Scope) -> Arc<TxRead> {
        let s = self.state.lock();
        let stage = s
            .stages
            .iter()
            .find(|st| st.table().def.table_id() == *table && st.scope() == scope);
        tables.tx_read(&self.snapshot, stage)
    }

    /// Stages a version of key `pk`; fails when the staged rows would outgrow `max_bytes`.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn stage(
        &self,
        tables: &TableStore,
        table: &Arc<CachedTable>,
        scope: &Scope,
        pk: &[u8],
        deleted: bool,
        cells: Cells,
        old: Option<StoredRow>,
        max_bytes: usize,
    ) -> Result<()> {
        let mut s = self.state.lock();
        let id = table.def.table_id();
        let at = match s
            .stages
            .iter()
            .position(|st| st.table().def.table_id() == id && st.scope() == scope)
        {
            Some(at) => at,
            None => {
                s.stages
                    .push(ScopeStage::new(Arc::clone(table), scope.clone()));
                s.stages.len() - 1
            }
        };
        if s.stages[at].table().def.version != table.def.version {
            return Err(KalamError::TransactionConflict(format!(
                "{id} was altered while the transaction ran"
            )));
        }
        tables.stage(&mut s.stages[at], pk, deleted, cells, old);
        let bytes: usize = s.stages.iter().map(ScopeStage::bytes).sum();
        if bytes > max_bytes {
            return Err(KalamError::ResourceExhausted(format!(
                "Transaction {} stages more than {} MiB (transactions.max_buffer_mb)",
                self.id,
                max_bytes / (1024 * 1024)
            )));
        }
        Ok(())
    }

    fn info(&self) -> TransactionInfo {
        let s = self.state.lock();
        let now = Instant::now();
        let mut tables: Vec<String> = s
            .stages
            .iter()
            .map(|st| st.table().def.table_id().to_string())
            .collect();
        tables.sort();
        tables.dedup();
        TransactionInfo {
            id: self.id.clone(),
            owner: self.owner.to_string(),
            origin: self.origin.as_str(),
            state: if s.aborted.is_some() {
                "aborted"
            } else {
                "active"
            },
            started_at: self.started_at_micros,
            age_ms: now.duration_since(self.started).as_millis() as i64,
            idle_ms: now.duration_since(s.last_used).as_millis() as i64,
            statements: s.statements as i64,
            staged_rows: s.stages.iter().map(|st| st.len() as i64).sum(),
            staged_bytes: s.stages.iter().map(|st| st.bytes() as i64).sum(),
            tables: tables.join(","),
            snapshot_seq: self.snapshot.seq(),
        }
    }
}

/// The open transactions by id.
type OpenMap = Arc<DashMap<String, Arc<Transaction>>>;

/// A request's hold on a transaction: only one request uses it at a time. Dropping the hold
/// of a transaction that lives in one request (the request ended or was cancelled) ends it.
#[derive(Debug)]
pub struct InUse {
    /// The transaction.
    pub tx: Arc<Transaction>,
    open: OpenMap,
    _held: tokio::sync::OwnedMutexGuard<()>,
}

impl Drop for InUse {
    fn drop(&mut self) {
        if self.tx.origin == Origin::Request {
            self.open.remove(&self.tx.id);
        }
    }
}

/// The open transactions; see the module doc.
#[derive(Debug)]
pub struct TransactionManager {
    open: OpenMap,
    config: TransactionsConfig,
    seq: Arc<SeqGenerator>,
    tables: Arc<TableStore>,
}

impl TransactionManager {
    /// A manager over `tables` (ids from `seq`).
    pub fn new(
        config: TransactionsConfig,
        seq: Arc<SeqGenerator>,
        tables: Arc<TableStore>,
    ) -> Self {
        Self {
            open: OpenMap::default(),
            config,
            seq,
            tables,
        }
    }

    /// Largest staged bytes of one transaction.
    pub fn max_bytes(&self) -> usize {
        usize::try_from(self.config.max_buffer_mb.saturating_mul(1024 * 1024)).unwrap_or(usize::MAX)
    }

    /// Begins a transaction of `owner`; the caller holds it for its request.
    pub async fn begin(&self, owner: &Identity, origin: Origin) -> InUse {
        let snapshot = self.tables.begin_snapshot().await;
        let in_use = Arc::new(tokio::sync::Mutex::new(()));
        // A new lock: taken at once.
        let held = Arc::clone(&in_use).lock_owned().await;
        let tx = Arc::new(Transaction {
            id: self.seq.next_id().to_string(),
            owner: owner.user_id.clone(),
            origin,
            started_at_micros: chrono::Utc::now().timestamp_micros(),
            started: Instant::now(),
            snapshot,
            state: Mutex::new(TxState {
                aborted: None,
                stages: Vec::new(),
                statements: 0,
                last_used: Instant::now(),
            }),
            in_use,
        });
        self.open.insert(tx.id.clone(), Arc::clone(&tx));
        InUse {
            tx,
            open: Arc::clone(&self.open),
            _held: held,
        }
    }

    /// Takes transaction `id` for a request of `caller`: unknown, expired and other users'
    /// transactions are all "not found"; one used by another request right now is refused.
    pub fn resume(&self, id: &str, caller: &Identity) -> Result<InUse> {
        let not_found = || KalamError::NotFound {
            kind: "Transaction",
            name: format!("{id} (it may have ended or expired)"),
        };
        let tx = self
            .open
            .get(id)
            .map(|t| Arc::clone(t.value()))
            .ok_or_else(not_found)?;
        if tx.owner != caller.user_id || tx.origin != Origin::Session {
            return Err(not_found());
        }
        let held = Arc::clone(&tx.in_use).try_lock_owned().map_err(|_| {
            KalamError::InvalidInput(format!(
                "Transaction {id} is in use by another request; send its statements one \
                 request at a time"
            ))
        })?;
        Ok(InUse {
            tx,
            open: Arc::clone(&self.open),
            _held: held,
        })
    }

    /// Commits `tx` (it ends either way): the rows written. An aborted transaction is rolled
    /// back and reported as [`KalamError::TransactionAborted`].
    pub async fn commit(&self, held: InUse) -> Result<usize> {
        self.open.remove(&held.tx.id);
        let (stages, aborted) = {
            let mut s = held.tx.state.lock();
            (std::mem::take(&mut s.stages), s.aborted.clone())
        };
        if let Some(why) = aborted {
            return Err(KalamError::TransactionAborted(format!(
                "Transaction {} was aborted ({why}) and has been rolled back",
                held.tx.id
            )));
        }
        self.tables
            .commit_transaction(held.tx.snapshot.seq(), stages)
            .await
    }

    /// Rolls `tx` back: its staged rows are dropped. Returns the rows it had staged.
    pub fn rollback(&self, held: InUse) -> usize {
        self.open.remove(&held.tx.id);
        let mut s = held.tx.state.lock();
        let rows = s.stages.iter().map(ScopeStage::len).sum();
        s.stages.clear();
        rows
    }

    /// Ends transaction `id` (`KILL TRANSACTION`): a request using it now sees it aborted.
    pub fn kill(&self, id: &str) -> bool {
        match self.open.remove(id) {
            Some((_, tx)) => {
                tx.abort("killed by KILL TRANSACTION");
                true
            }
            None => false,
        }
    }

    /// Rolls back continued transactions idle or open for too long; returns how many.
    pub fn expire(&self) -> usize {
        let idle = Duration::from_secs(self.config.idle_timeout_secs);
        let max = Duration::from_secs(self.config.max_duration_secs);
        let now = Instant::now();
        let expired: Vec<Arc<Transaction>> = self
            .open
            .iter()
            .filter(|t| {
                let tx = t.value();
                let last = tx.state.lock().last_used;
                let idle_out = tx.origin == Origin::Session
                    && now.duration_since(last) > idle
                    && tx.in_use.try_lock().is_ok();
                idle_out || now.duration_since(tx.started) > max
            })
            .map(|t| Arc::clone(t.value()))
            .collect();
        for tx in &expired {
            self.open.remove(&tx.id);
            tx.abort("timed out");
            tracing::info!(transaction = %tx.id, owner = %tx.owner, "transaction rolled back: timed out");
        }
        expired.len()
    }

    /// The open transactions (`system.transactions`).
    pub fn list(&self) -> Vec<TransactionInfo> {
        let mut all: Vec<TransactionInfo> = self.open.iter().map(|t| t.value().info()).collect();
        all.sort_by(|a, b| a.id.cmp(&b.id));
        all
    }
}
