//! Large query results sent while they are produced.
//!
//! A request made of one `SELECT`/`WITH` query runs on the query runtime as usual; its rows
//! are encoded batch by batch. A result that stays under [`STREAM_AFTER_BYTES`] is answered
//! exactly as before ([`Reply::Results`]). A larger one becomes a [`Reply::Stream`]: the rows
//! so far, then the rest through a small bounded channel, so a slow client slows the query
//! down instead of the server buffering the result (memory stays bounded whatever the size;
//! `limits.max_result_bytes` applies only to results that are collected). The HTTP layer
//! writes the usual envelope around it, field for field. An error after the first rows were
//! sent can no longer change the status: the connection is closed mid-body, which every
//! client reports as a failed request. Dropping the reply (the client went away) cancels the
//! query.

use super::parse::{self, Command, parse_statement};
use super::session::{ExecCtx, Output, RequestError, query_stream, request_error, statement_error};
use super::{encode, params};
use crate::app_context::AppContext;
use crate::auth::Identity;
use crate::expr_limits::ExprLimits;
use datafusion::arrow::array::RecordBatch;
use futures::StreamExt;
use kalamdb_catalog::error::{KalamError, Result};
use kalamdb_commons::ErrorCode;
use kalamdb_commons::wire::{QueryResult, SchemaField};
use serde_json::Value as Json;
use std::sync::Arc;
use tokio::sync::{mpsc, oneshot};

/// Encoded size of a result above which it is streamed rather than collected.
pub const STREAM_AFTER_BYTES: usize = 1024 * 1024;

/// Rows of a result, as they go on the wire.
pub type Rows = Vec<Vec<Json>>;

/// The answer to a request.
#[derive(Debug)]
pub enum Reply {
    /// Every statement's result, complete.
    Results(Vec<QueryResult>),
    /// One query's result, still being produced.
    Stream(ResultStream),
}

/// A query result sent as it is produced (see the module doc).
#[derive(Debug)]
pub struct ResultStream {
    /// The result's columns.
    pub schema: Vec<SchemaField>,
    /// Effective user of the statement.
    pub as_user: String,
    /// The first rows.
    pub rows: Rows,
    /// The other rows, in order, then `None` once the result is complete; an error, or the
    /// channel closing before `None`, ends the result as failed.
    pub rest: mpsc::Receiver<std::result::Result<Option<Rows>, RequestError>>,
    /// Cancels the query when dropped: keep it as long as `rest` is read.
    pub cancel: AbortOnDrop,
}

/// Aborts a task when dropped.
#[derive(Debug)]
pub struct AbortOnDrop(tokio::task::AbortHandle);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// What the query task reports first.
enum First {
    Done(Vec<QueryResult>),
    Streaming {
        schema: Vec<SchemaField>,
        rows: Rows,
    },
}

type FirstSlot =
    Arc<parking_lot::Mutex<Option<oneshot::Sender<std::result::Result<First, RequestError>>>>>;
type RowSender = mpsc::Sender<std::result::Result<Option<Rows>, RequestError>>;

/// Whether a statement's text is a query that may be streamed.
pub fn is_query(text: &str) -> bool {
    matches!(
        parse::leading_words(text, 1).first().map(String::as_str),
        Some("SELECT" | "WITH")
    )
}

/// What the streaming path needs of the executor: the context, and the usual path for a
/// statement that turns out not to be a plain query.
pub(crate) trait Executor: Clone + Send + Sync + 'static {
    /// The engine.
    fn app(&self) -> &Arc<AppContext>;
    /// Runs statements the usual way (collected results).
    fn run_statements(
        &self,
        ctx: ExecCtx,
        statements: Vec<String>,
    ) -> futures::future::BoxFuture<'_, std::result::Result<Vec<QueryResult>, RequestError>>;
    /// One statement's output as results.
    fn results_of(&self, output: Output, identity: &Identity, as_user: String) -> Vec<QueryResult>;
}

/// Runs the query `text` (registered as `shown` in `system.queries`) and answers with its
/// result, streamed when large.
pub(crate) async fn run<E: Executor>(
    exec: E,
    ctx: ExecCtx,
    text: String,
    shown: String,
    timed: bool,
) -> std::result::Result<Reply, RequestError> {
    let (first_tx, first_rx) = oneshot::channel();
    let (tx, rx) = mpsc::channel(4);
    let first: FirstSlot = Arc::new(parking_lot::Mutex::new(Some(first_tx)));
    let app = Arc::clone(exec.app());
    let who = ctx.identity.clone();
    let (user, ip) = (ctx.identity.user_id.to_string(), ctx.client_ip);
    let as_user = user.clone();
    let work = {
        let (first, tx) = (Arc::clone(&first), tx.clone());
        async move {
            let started = std::time::Instant::now();
            let who = ctx.identity.clone();
            let outcome = produce(&exec, ctx, &text, &first, &tx).await;
            let kind = match &outcome {
                Ok(Produced::Query) => "select",
                Ok(Produced::Elsewhere) => return, // counted by the general path
                Err(_) => "failed",
            };
            super::session::statement_done(exec.app(), &who, &text, started.elapsed(), kind);
            if let Err(e) = outcome {
                report(&first, &tx, statement_error(0, &text, e)).await;
            }
        }
    };
    // In the request's span: its log lines carry the request id.
    let task = tokio::spawn(tracing::Instrument::in_current_span(async move {
        let started = std::time::Instant::now();
        if let Err(e) = app.queries().run(&user, ip, &shown, timed, work).await {
            // Timed out or killed: the query never counted itself.
            super::session::statement_done(&app, &who, &shown, started.elapsed(), "failed");
            report(&first, &tx, request_error(e)).await;
        }
    }));
    let cancel = AbortOnDrop(task.abort_handle());
    match first_rx.await {
        Ok(Ok(First::Done(results))) => Ok(Reply::Results(results)),
        Ok(Ok(First::Streaming { schema, rows })) => Ok(Reply::Stream(ResultStream {
            schema,
            as_user,
            rows,
            rest: rx,
            cancel,
        })),
        Ok(Err(e)) => Err(e),
        Err(_) => Err(RequestError::new(
            ErrorCode::InternalError,
            "the query stopped without a result",
        )),
    }
}

/// Sends an error to whoever waits: the request before its first rows, the stream after.
async fn report(first: &FirstSlot, tx: &RowSender, e: RequestError) {
    let waiting = first.lock().take();
    match waiting {
        Some(f) => {
            let _ = f.send(Err(e));
        }
        None => {
            let _ = tx.send(Err(e)).await;
        }
    }
}

/// What [`produce`] ran.
enum Produced {
    /// The query.
    Query,
    /// Not a plain query: the general path ran (and counted) it.
    Elsewhere,
}

/// Plans and runs the query, reporting its result (see the module doc).
async fn produce<E: Executor>(
    exec: &E,
    ctx: ExecCtx,
    text: &str,
    first: &FirstSlot,
    tx: &RowSender,
) -> Result<Produced> {
    let app = exec.app();
    let command = parse_statement(text)?;
    command.check_limits(ExprLimits::of(&app.config().limits))?;
    let stmt = match command {
        Command::Sql(stmt)
            if matches!(*stmt, datafusion::sql::sqlparser::ast::Statement::Query(_)) =>
        {
            stmt
        }
        _ => {
            // Not a plain query after all: the usual path.
            let done = exec
                .run_statements(ctx, vec![text.to_string()])
                .await
                .map(First::Done);
            if let Some(f) = first.lock().take() {
                let _ = f.send(done);
            }
            return Ok(Produced::Elsewhere);
        }
    };
    let mut stmt = stmt;
    params::bind(&mut stmt, &ctx.params, &ctx.identity)?;
    let as_user = ctx.identity.user_id.to_string();
    if let Some(out) = super::point_lookup::try_point_lookup(app, &ctx, &stmt).await? {
        if let Output::Rows { batches, .. } = &out {
            let rows: usize = batches.iter().map(|b| b.num_rows()).sum();
            app.metrics().rows_read.inc_by(rows as u64);
        }
        let done = exec.results_of(out, &ctx.identity, as_user);
        if let Some(f) = first.lock().take() {
            let _ = f.send(Ok(First::Done(done)));
        }
        return Ok(Produced::Query);
    }
    let (schema, mut stream) = query_stream(app, &ctx, *stmt).await?;
    let rows_read = &app.metrics().rows_read;
    let admin = ctx.identity.role.is_admin();
    let encode_rows = |batch: &RecordBatch| {
        let mut rows = encode::rows(std::slice::from_ref(batch));
        if !admin {
            encode::mask_sensitive(&schema, &mut rows);
        }
        rows
    };
    let (mut head, mut bytes) = (Vec::new(), 0usize);
    while bytes <= STREAM_AFTER_BYTES
        && let Some(batch) = stream.next().await
    {
        let batch = batch.map_err(KalamError::from_datafusion)?;
        rows_read.inc_by(batch.num_rows() as u64);
        bytes = bytes.saturating_add(encode::result_bytes(&batch));
        head.extend(encode_rows(&batch));
    }
    let fields = encode::schema_fields(&schema);
    let Some(f) = first.lock().take() else {
        return Ok(Produced::Query);
    };
    if bytes <= STREAM_AFTER_BYTES {
        let result = QueryResult {
            schema: Some(fields),
            row_count: head.len(),
            rows: Some(head),
            message: None,
            as_user,
            transaction_id: None,
        };
        let _ = f.send(Ok(First::Done(vec![result])));
        return Ok(Produced::Query);
    }
    if f.send(Ok(First::Streaming {
        schema: fields,
        rows: head,
    }))
    .is_err()
    {
        return Ok(Produced::Query);
    }
    while let Some(batch) = stream.next().await {
        let batch = batch.map_err(KalamError::from_datafusion)?;
        rows_read.inc_by(batch.num_rows() as u64);
        if tx.send(Ok(Some(encode_rows(&batch)))).await.is_err() {
            return Ok(Produced::Query); // the client went away
        }
    }
    let _ = tx.send(Ok(None)).await;
    Ok(Produced::Query)
}
