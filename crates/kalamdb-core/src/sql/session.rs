//! What every statement handler shares: the statement's context ([`ExecCtx`]), what it
//! produces ([`Output`]), how a request fails ([`RequestError`]), and running a query under
//! the caller's identity (DataFusion planning, system-table access, plan limits, result
//! memory). Handlers (`ddl`, `dml`, `alter`, `views`, …) build on this module; the
//! executor dispatches to them.

use super::encode;
use crate::app_context::AppContext;
use crate::auth::Identity;
use crate::expr_limits::ExprLimits;
use datafusion::arrow::array::RecordBatch;
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::dataframe::DataFrame;
use datafusion::execution::SendableRecordBatchStream;
use datafusion::execution::memory_pool::{MemoryConsumer, MemoryReservation};
use datafusion::sql::parser::Statement as DfStatement;
use datafusion::sql::sqlparser::ast::{
    Expr as SqlExpr, SelectItem, SetExpr, Statement, TableWithJoins, Value as SqlValue,
};
use datafusion::sql::sqlparser::dialect::GenericDialect;
use datafusion::sql::sqlparser::parser::Parser;
use futures::StreamExt;
use kalamdb_catalog::error::{KalamError, Result};
use kalamdb_commons::ErrorCode;
use std::net::IpAddr;
use std::sync::Arc;

/// Context of one statement.
#[derive(Debug, Clone)]
pub struct ExecCtx {
    /// The caller.
    pub identity: Identity,
    /// Default namespace for unqualified names.
    pub namespace: String,
    /// Bound `$n` values.
    pub params: Vec<SqlValue>,
    /// The client's address, for the audit trail.
    pub client_ip: Option<IpAddr>,
    /// `NOW()` for the request, microseconds since the epoch: every `NOW()` default and
    /// `NOW()` in INSERT VALUES of one request reads the same instant.
    pub now: i64,
    /// The transaction the statement runs in: its reads see the transaction's snapshot and
    /// staged rows, its writes are staged.
    pub tx: Option<Arc<crate::transactions::Transaction>>,
}

/// What a statement produced.
#[derive(Debug)]
pub enum Output {
    /// A result set.
    Rows {
        /// Its schema.
        schema: SchemaRef,
        /// Its rows.
        batches: Vec<RecordBatch>,
        /// Their share of the query memory pool, held until they are encoded.
        memory: Option<MemoryReservation>,
    },
    /// Rows changed by DML.
    Dml {
        /// Which statement kind.
        kind: DmlKind,
        /// How many rows.
        count: usize,
    },
    /// A DDL or session statement's message.
    Message(String),
    /// `BEGIN`, `COMMIT` or `ROLLBACK`: its message and the transaction's id.
    Transaction {
        /// What happened.
        message: String,
        /// The transaction.
        id: String,
    },
}

/// Kinds of DML.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DmlKind {
    /// INSERT
    Insert,
    /// UPDATE
    Update,
    /// DELETE
    Delete,
}

impl DmlKind {
    pub(crate) fn message(&self, n: usize) -> String {
        match self {
            Self::Insert => format!("Inserted {n} row(s)"),
            Self::Update => format!("Updated {n} row(s)"),
            Self::Delete => format!("Deleted {n} row(s)"),
        }
    }
}

/// A failed request, ready for the envelope.
#[derive(Debug, Clone)]
pub struct RequestError {
    /// Stable code.
    pub code: ErrorCode,
    /// Message (already prefixed with the statement number when one failed).
    pub message: String,
    /// The failing statement's text.
    pub details: Option<String>,
    /// Whether the message may be shown to non-admin callers.
    pub public: bool,
    /// Cluster: another node leads the group the failing statement writes, and nothing of
    /// the request was written here: the whole request may run again on that node (its
    /// client URL).
    pub forward_to: Option<String>,
}

impl RequestError {
    pub(crate) fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
            details: None,
            public: true,
            forward_to: None,
        }
    }
}

/// Plans and runs `stmt` (a query) under the statement's identity: DML's reads.
pub(crate) async fn run_statement(
    app: &AppContext,
    ctx: &ExecCtx,
    stmt: Statement,
) -> Result<(SchemaRef, Vec<RecordBatch>)> {
    let (schema, batches, _) = query(app, ctx, stmt, None).await?;
    Ok((schema, batches))
}

/// `SELECT <projection> [FROM <from>] [WHERE <selection>]`, assembled from parsed parts of a
/// statement (they move in as they are: nothing is printed and parsed again).
pub(crate) fn select_statement(
    projection: Vec<SelectItem>,
    from: Option<TableWithJoins>,
    selection: Option<SqlExpr>,
) -> Statement {
    // The shape of a plain SELECT, parsed once; only its parts are replaced.
    static TEMPLATE: std::sync::LazyLock<Statement> = std::sync::LazyLock::new(|| {
        Parser::parse_sql(&GenericDialect {}, "SELECT 1 FROM t")
            .ok()
            .and_then(|mut v| v.pop())
            .expect("a constant SELECT parses")
    });
    let mut stmt = TEMPLATE.clone();
    if let Statement::Query(q) = &mut stmt
        && let SetExpr::Select(select) = q.body.as_mut()
    {
        select.projection = projection;
        select.from = from.into_iter().collect();
        select.selection = selection;
    }
    stmt
}

/// Plans a query under the statement's identity and starts it: its schema and batches.
pub(crate) async fn query_stream(
    app: &AppContext,
    ctx: &ExecCtx,
    stmt: Statement,
) -> Result<(SchemaRef, SendableRecordBatchStream)> {
    let mut state = app.query_state(&ctx.identity, &ctx.namespace);
    if let Some(tx) = &ctx.tx {
        state
            .config_mut()
            .set_extension(Arc::new(crate::providers::SessionTx(Arc::clone(tx))));
    }
    let stmt = DfStatement::Statement(Box::new(stmt));
    // Refused before planning: a planning error would describe the system table (its columns)
    // to a caller who may not read it.
    if !ctx.identity.role.is_admin() {
        let tables = state
            .resolve_table_references(&stmt)
            .map_err(KalamError::from_datafusion)?;
        if tables.iter().any(|t| {
            let schema = t.schema().unwrap_or(ctx.namespace.as_str());
            schema == crate::providers::catalog::SYSTEM_SCHEMA
        }) {
            crate::access::check_system_read(&ctx.identity)?;
        }
    }
    let plan = state
        .statement_to_plan(stmt)
        .await
        .map_err(KalamError::from_datafusion)?;
    crate::expr_limits::check_plan(&plan, ExprLimits::of(&app.config().limits))?;
    let df = DataFrame::new(state, plan);
    let schema: SchemaRef = Arc::new(df.schema().as_arrow().clone());
    let stream = df
        .execute_stream()
        .await
        .map_err(KalamError::from_datafusion)?;
    Ok((schema, stream))
}

pub(crate) async fn query(
    app: &AppContext,
    ctx: &ExecCtx,
    stmt: Statement,
    max_result_bytes: Option<usize>,
) -> Result<(SchemaRef, Vec<RecordBatch>, MemoryReservation)> {
    let (schema, mut stream) = query_stream(app, ctx, stmt).await?;
    // Collected rows are charged to the query memory pool, so many large results at once
    // cannot outgrow it; a result for the client is also held to max_result_bytes.
    let pool = Arc::clone(
        &app.query_state(&ctx.identity, &ctx.namespace)
            .runtime_env()
            .memory_pool,
    );
    let reservation = MemoryConsumer::new("collected result").register(&pool);
    let (mut batches, mut bytes) = (Vec::new(), 0usize);
    while let Some(batch) = stream.next().await {
        let batch = batch.map_err(KalamError::from_datafusion)?;
        let size = match max_result_bytes {
            Some(_) => encode::result_bytes(&batch),
            None => encode::batch_bytes(&batch),
        };
        bytes = bytes.saturating_add(size);
        if let Some(max) = max_result_bytes
            && bytes > max
        {
            return Err(KalamError::ResourceExhausted(format!(
                "The result is larger than {max} bytes (limits.max_result_bytes); \
                 add a LIMIT or read it in key ranges"
            )));
        }
        reservation.try_grow(size).map_err(|e| {
            KalamError::ResourceExhausted(format!(
                "The rows read do not fit the query memory (query.memory_limit_mb): {e}"
            ))
        })?;
        batches.push(batch);
    }
    Ok((schema, batches, reservation))
}

/// A query's rows for the client: held to `max_result_bytes`, with their pool reservation.
pub(crate) async fn client_rows(
    app: &AppContext,
    ctx: &ExecCtx,
    stmt: Statement,
) -> Result<Output> {
    let max = app.config().limits.max_result_bytes;
    let (schema, batches, memory) = query(app, ctx, stmt, Some(max)).await?;
    Ok(Output::Rows {
        schema,
        batches,
        memory: Some(memory),
    })
}

/// A request-level error (timeout, cancellation) as the client sees it.
pub(crate) fn request_error(e: KalamError) -> RequestError {
    RequestError {
        code: e.code(),
        message: e.to_string(),
        details: None,
        public: e.is_public(),
        forward_to: None,
    }
}

/// The request error of statement `index` (0-based). A first statement refused because
/// another node leads its group may be forwarded there (nothing ran before it).
pub(crate) fn statement_error(index: usize, text: &str, e: KalamError) -> RequestError {
    let forward_to = match &e {
        KalamError::Store(kalamdb_store::StoreError::NotLeader { leader }) if index == 0 => {
            leader.clone()
        }
        _ => None,
    };
    RequestError {
        code: e.code(),
        message: format!("Statement {} failed: {e}", index + 1),
        details: Some(text.to_string()),
        public: e.is_public(),
        forward_to,
    }
}

/// Whether running `earlier` (the statements of a request before the one that failed)
/// wrote nothing: reads, and statements of a transaction that never committed, only.
pub(crate) fn wrote_nothing(earlier: &[String]) -> bool {
    use super::parse::TxControl;
    let mut in_transaction = false;
    for text in earlier {
        match super::parse::transaction_control(text) {
            Ok(Some(TxControl::Begin)) => in_transaction = true,
            Ok(Some(TxControl::Rollback)) => in_transaction = false,
            Ok(Some(_)) => return false,
            _ if in_transaction => {}
            _ => {
                let first = super::parse::leading_words(text, 1);
                if !matches!(
                    first.first().map(String::as_str),
                    Some("SELECT" | "WITH" | "SHOW" | "DESCRIBE" | "DESC" | "EXPLAIN")
                ) {
                    return false;
                }
            }
        }
    }
    true
}

/// A request's SQL as `system.queries` and logs show it: user-management statements (which
/// may carry a password) only by their action and user, as in the audit log.
pub(crate) fn shown_sql(sql: &str) -> std::borrow::Cow<'_, str> {
    let upper = sql.to_ascii_uppercase();
    if !upper.contains("USER") {
        return std::borrow::Cow::Borrowed(sql);
    }
    let statements = super::split::split_statements(sql).unwrap_or_default();
    let shown: Vec<String> = statements
        .iter()
        .map(|text| {
            let inner = match super::parse::execute_as(text) {
                Ok(Some((_, inner))) => inner,
                _ => text.clone(),
            };
            match super::parse::audited_action(&inner) {
                Some((action, object)) if action.ends_with("_USER") => {
                    format!("{action} {object} …")
                }
                _ => text.clone(),
            }
        })
        .collect();
    std::borrow::Cow::Owned(shown.join("; "))
}

/// Counts a finished statement of `kind` in the metrics and logs it (target
/// `kalamdb::slow_query`) when it took at least `[logging] slow_query_ms`.
pub(crate) fn statement_done(
    app: &AppContext,
    who: &Identity,
    text: &str,
    took: std::time::Duration,
    kind: &'static str,
) {
    app.metrics().statement(kind);
    let slow_ms = app.config().logging.slow_query_ms;
    if slow_ms > 0 && took.as_millis() >= u128::from(slow_ms) {
        // As system.queries shows it: user-management statements without their passwords.
        let statement: String = shown_sql(text).chars().take(2000).collect();
        tracing::warn!(
            target: "kalamdb::slow_query",
            user = %who.user_id,
            duration_ms = took.as_millis() as u64,
            kind,
            %statement,
            "slow query"
        );
    }
}
