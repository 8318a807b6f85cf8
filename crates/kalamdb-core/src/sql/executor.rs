//! [`SqlExecutor`]: runs one `/v1/api/sql` request.
//!
//! Request -> limits and parameters checked -> text split into statements -> each statement
//! parsed ([`super::parse`]), bound to its parameters, run by its handler (own statements,
//! DML) or planned by DataFusion (queries) under the caller's identity -> results encoded.
//! The first failing statement ends the request; effects of earlier statements remain. With
//! several statements, DML results are summarised after the other results (`Inserted N
//! row(s)` …), as upstream clients expect.

use super::parse::{self, Command, TxControl, parse_statement};
pub use super::session::{DmlKind, ExecCtx, Output, RequestError};
use super::session::{client_rows, request_error, statement_error};
use super::stream::Reply;
use super::{ddl, dml, encode, params, split};
use crate::app_context::AppContext;
use crate::auth::Identity;
use crate::expr_limits::ExprLimits;
use crate::transactions::{InUse, Origin};
use datafusion::sql::sqlparser::ast::{ObjectType, Statement};
use kalamdb_catalog::audit::AuditEvent;
use kalamdb_catalog::error::{KalamError, Result};
use kalamdb_commons::ErrorCode;
use kalamdb_commons::wire::QueryResult;
use std::net::IpAddr;
use std::sync::Arc;

/// Runs SQL requests.
#[derive(Debug, Clone)]
pub struct SqlExecutor {
    app: Arc<AppContext>,
    /// Where live queries are served (`SUBSCRIBE TO` over HTTP answers with it).
    live_url: Arc<str>,
}

/// Largest single statement that may take a fast path on the caller's own thread (a
/// literal INSERT or a primary-key lookup); anything else runs on the query runtime.
const INLINE_MAX_BYTES: usize = 4096;

/// Results of a request's statements, assembled as the wire wants them.
struct Results {
    single: bool,
    list: Vec<QueryResult>,
    totals: [usize; 3],
}

impl Results {
    fn new(single: bool) -> Self {
        Self {
            single,
            list: Vec::new(),
            totals: [0; 3],
        }
    }

    fn push(&mut self, output: Output, identity: &Identity, as_user: String) {
        match output {
            Output::Rows {
                schema,
                batches,
                memory,
            } => {
                let mut rows = encode::rows(&batches);
                drop(batches);
                drop(memory);
                // EXECUTE AS runs with the user role.
                let admin = identity.role.is_admin() && as_user == identity.user_id.as_str();
                if !admin {
                    encode::mask_sensitive(&schema, &mut rows);
                }
                self.list.push(QueryResult {
                    schema: Some(encode::schema_fields(&schema)),
                    row_count: rows.len(),
                    rows: Some(rows),
                    message: None,
                    as_user,
                    transaction_id: None,
                });
            }
            Output::Dml { kind, count } if self.single => self.list.push(QueryResult {
                schema: None,
                rows: None,
                row_count: count,
                message: Some(kind.message(count)),
                as_user,
                transaction_id: None,
            }),
            Output::Dml { kind, count } => self.totals[kind as usize] += count,
            Output::Transaction { message, id } => self.list.push(QueryResult {
                schema: None,
                rows: None,
                row_count: 0,
                message: Some(message),
                as_user,
                transaction_id: Some(id),
            }),
            Output::Message(m) => self.list.push(QueryResult {
                schema: None,
                rows: None,
                row_count: 0,
                message: Some(m),
                as_user,
                transaction_id: None,
            }),
        }
    }

    fn finish(mut self, identity: &Identity) -> Vec<QueryResult> {
        let as_user = identity.user_id.to_string();
        for (kind, n) in [DmlKind::Insert, DmlKind::Update, DmlKind::Delete]
            .into_iter()
            .zip(self.totals)
        {
            if n > 0 {
                self.list.push(QueryResult {
                    schema: None,
                    rows: None,
                    row_count: n,
                    message: Some(kind.message(n)),
                    as_user: as_user.clone(),
                    transaction_id: None,
                });
            }
        }
        self.list
    }
}

/// A request's statements, or `BATCH_PARSE_ERROR`.
fn split_request(sql: &str) -> std::result::Result<Vec<String>, RequestError> {
    split::split_statements(sql).map_err(|e| {
        RequestError::new(
            ErrorCode::BatchParseError,
            format!("Failed to parse SQL batch: {e}"),
        )
    })
}

impl SqlExecutor {
    /// An executor over `app`; `live_url` is the WebSocket URL of live queries, which only
    /// the transport knows (`SUBSCRIBE TO` over HTTP answers with it).
    pub fn new(app: Arc<AppContext>, live_url: impl Into<Arc<str>>) -> Self {
        Self {
            app,
            live_url: live_url.into(),
        }
    }

    /// The shared context.
    pub fn app(&self) -> &Arc<AppContext> {
        &self.app
    }

    /// Runs a request and returns its results.
    pub async fn execute(
        &self,
        identity: &Identity,
        client_ip: Option<IpAddr>,
        sql: &str,
        params: Option<Vec<serde_json::Value>>,
        namespace: Option<String>,
    ) -> std::result::Result<Vec<QueryResult>, RequestError> {
        match self
            .execute_reply(identity, client_ip, sql, params, namespace, None, false)
            .await?
        {
            Reply::Results(results) => Ok(results),
            Reply::Stream(_) => Err(RequestError::new(
                ErrorCode::InternalError,
                "a streamed reply where none was asked for",
            )),
        }
    }

    /// Runs a multipart request (`docs/protocol.md` §4.1): one INSERT or UPDATE whose
    /// `FILE("…")` calls name `uploads`. The files are stored first (see
    /// [`super::files`]) and deleted again if the statement fails.
    pub async fn execute_with_files(
        &self,
        identity: &Identity,
        client_ip: Option<IpAddr>,
        sql: &str,
        params: Option<Vec<serde_json::Value>>,
        namespace: Option<String>,
        uploads: Vec<super::files::Upload>,
    ) -> std::result::Result<Vec<QueryResult>, RequestError> {
        let statements = split_request(sql)?;
        let [statement] = statements.as_slice() else {
            return Err(RequestError::new(
                ErrorCode::InvalidInput,
                "a request with files holds exactly one statement",
            ));
        };
        let ctx = ExecCtx {
            identity: identity.clone(),
            namespace: namespace
                .clone()
                .filter(|n| !n.is_empty())
                .unwrap_or_else(|| "default".into()),
            params: Vec::new(),
            client_ip,
            now: chrono::Utc::now().timestamp_micros(),
            tx: None,
        };
        let (sql, stored) = super::files::store_uploads(&self.app, &ctx, statement, uploads)
            .await
            .map_err(|e| statement_error(0, statement, e))?;
        let result = self
            .execute(identity, client_ip, &sql, params, namespace)
            .await;
        if result.is_err() {
            stored.discard(&self.app).await;
        }
        result
    }

    /// Runs a request; with `may_stream`, a single query whose result outgrows
    /// [`super::stream::STREAM_AFTER_BYTES`] is answered as a [`Reply::Stream`] (see
    /// [`super::stream`]). With `transaction_id`, the statements run inside that open
    /// transaction (see [`crate::transactions`]).
    #[allow(clippy::too_many_arguments)]
    pub async fn execute_reply(
        &self,
        identity: &Identity,
        client_ip: Option<IpAddr>,
        sql: &str,
        params: Option<Vec<serde_json::Value>>,
        namespace: Option<String>,
        transaction_id: Option<String>,
        may_stream: bool,
    ) -> std::result::Result<Reply, RequestError> {
        let limits = &self.app.config().limits;
        if sql.len() > limits.max_sql_bytes {
            return Err(RequestError::new(
                ErrorCode::InvalidSql,
                format!(
                    "SQL text is {} bytes; the limit is {}",
                    sql.len(),
                    limits.max_sql_bytes
                ),
            ));
        }
        if namespace
            .as_ref()
            .is_some_and(|n| n.len() > limits.max_name_bytes)
        {
            return Err(RequestError::new(
                ErrorCode::InvalidInput,
                format!(
                    "namespace_id is longer than {} bytes (limits.max_name_bytes)",
                    limits.max_name_bytes
                ),
            ));
        }
        let statements = split_request(sql)?;
        if statements.is_empty() {
            return Err(RequestError::new(
                ErrorCode::EmptySql,
                "No SQL statement given",
            ));
        }
        super::files::refuse_file_calls(sql)
            .map_err(|e| RequestError::new(e.code(), e.to_string()))?;
        let params = params.unwrap_or_default();
        if !params.is_empty() && statements.len() > 1 {
            return Err(RequestError::new(
                ErrorCode::ParamsWithBatch,
                "Parameters are only allowed with a single statement",
            ));
        }
        let bound = params::prepare(&params, limits.max_params, limits.max_param_bytes)
            .map_err(|e| RequestError::new(e.code(), e.to_string()))?;
        let held = match transaction_id.filter(|t| !t.is_empty()) {
            Some(id) => Some(
                self.app
                    .transactions()
                    .resume(&id, identity)
                    .map_err(|e| RequestError::new(e.code(), e.to_string()))?,
            ),
            None => None,
        };
        let ctx = ExecCtx {
            identity: identity.clone(),
            namespace: namespace
                .filter(|n| !n.is_empty())
                .unwrap_or_else(|| "default".into()),
            params: bound,
            client_ip,
            now: chrono::Utc::now().timestamp_micros(),
            tx: None,
        };
        if held.is_none() && statements.len() == 1 && statements[0].len() <= INLINE_MAX_BYTES {
            let started = std::time::Instant::now();
            let fast = self.try_fast(&ctx, &statements[0]).await;
            if let Some(done) = fast.as_ref().map(Option::as_ref).transpose() {
                self.observe(&ctx, &statements[0], started.elapsed(), done);
            }
            match fast {
                Ok(Some(output)) => {
                    let as_user = identity.user_id.to_string();
                    return Ok(Reply::Results(self.results_of(output, identity, as_user)));
                }
                Ok(None) => {}
                Err(e) => return Err(statement_error(0, &statements[0], e)),
            }
        }
        // Flushes, compactions and other administrative statements may take as long as their
        // data needs (KILL JOB stops them); queries and DML are held to the timeout.
        let timed = !statements.iter().all(|s| parse::is_own_statement_text(s));
        let shown = super::session::shown_sql(sql).into_owned();
        if held.is_none()
            && may_stream
            && statements.len() == 1
            && super::stream::is_query(&statements[0])
        {
            let text = statements.into_iter().next().unwrap_or_default();
            // Boxed: the streaming path's state stays out of every request's future.
            return Box::pin(super::stream::run(self.clone(), ctx, text, shown, timed)).await;
        }
        let this = self.clone();
        let work = async move { this.run_statements(ctx, statements, held).await };
        let user = identity.user_id.as_str();
        let queries = self.app.queries();
        let started = std::time::Instant::now();
        match queries.run(user, client_ip, &shown, timed, work).await {
            Ok(done) => done.map(Reply::Results),
            Err(e) => {
                // Timed out or killed: its statements never counted themselves.
                let took = started.elapsed();
                super::session::statement_done(&self.app, identity, &shown, took, "failed");
                Err(request_error(e))
            }
        }
    }

    /// The fast paths, run on the caller's thread: a literal `INSERT … VALUES` and a
    /// primary-key lookup. `None`: the statement takes the general path.
    async fn try_fast(&self, ctx: &ExecCtx, text: &str) -> Result<Option<Output>> {
        let app = &*self.app;
        if let Some(ins) = super::insert_values::parse(text, &ctx.params) {
            return match dml::insert_rows(app, ctx, &ins.table, &ins.columns, ins.rows).await {
                // An ALTER overtook it (nothing was written): the general path retries.
                Err(KalamError::SchemaChanged(_)) => Ok(None),
                other => Ok(Some(Output::Dml {
                    kind: DmlKind::Insert,
                    count: other?,
                })),
            };
        }
        let first = parse::leading_words(text, 1);
        if first.first().is_none_or(|w| w != "SELECT") {
            return Ok(None);
        }
        let command = parse_statement(text)?;
        command.check_limits(ExprLimits::of(&app.config().limits))?;
        let Command::Sql(mut stmt) = command else {
            return Ok(None);
        };
        params::bind(&mut stmt, &ctx.params, &ctx.identity)?;
        super::point_lookup::try_point_lookup(app, ctx, &stmt).await
    }

    /// The reply to a request of one statement that produced `output`.
    pub(crate) fn results_of(
        &self,
        output: Output,
        identity: &Identity,
        as_user: String,
    ) -> Vec<QueryResult> {
        let mut results = Results::new(true);
        results.push(output, identity, as_user);
        results.finish(identity)
    }

    /// Runs a request's statements one after the other (on the query runtime), inside
    /// `held` (a continued transaction) when given. A transaction a statement of the request
    /// begins is its own unless the request is that lone `BEGIN` (then later requests
    /// continue it by id); one still open at the end is rolled back and the request fails.
    /// A failing statement aborts the transaction it ran in.
    pub(crate) async fn run_statements(
        &self,
        mut ctx: ExecCtx,
        statements: Vec<String>,
        mut held: Option<InUse>,
    ) -> std::result::Result<Vec<QueryResult>, RequestError> {
        let identity = ctx.identity.clone();
        let lone_begin = statements.len() == 1
            && matches!(
                parse::transaction_control(&statements[0]),
                Ok(Some(TxControl::Begin))
            );
        let mut results = Results::new(statements.len() == 1);
        for (i, text) in statements.iter().enumerate() {
            let started = std::time::Instant::now();
            let step = match parse::transaction_control(text) {
                Ok(Some(control)) => self.control(&ctx, control, &mut held, lone_begin).await,
                Ok(None) => {
                    ctx.tx = held.as_ref().map(|h| Arc::clone(&h.tx));
                    let ran = match &ctx.tx {
                        Some(tx) => tx.check_active().map(|()| tx.touch()),
                        None => Ok(()),
                    };
                    match ran {
                        Ok(()) => self.run_statement(&mut ctx, text).await,
                        Err(e) => Err(e),
                    }
                }
                Err(e) => Err(e),
            };
            self.observe(&ctx, text, started.elapsed(), step.as_ref().map(|(o, _)| o));
            match step {
                Ok((output, as_user)) => results.push(output, &identity, as_user),
                Err(e) => {
                    // A request inside a transaction held across requests cannot move.
                    let movable = held
                        .as_ref()
                        .is_none_or(|h| h.tx.origin() == Origin::Request);
                    let leader = match &e {
                        KalamError::Store(kalamdb_store::StoreError::NotLeader { leader }) => {
                            leader.clone()
                        }
                        _ => None,
                    };
                    if let Some(h) = held.take() {
                        self.fail_transaction(h, &e);
                    }
                    let mut failed = statement_error(i, text, e);
                    failed.forward_to = leader
                        .filter(|_| movable && super::session::wrote_nothing(&statements[..i]));
                    return Err(failed);
                }
            }
        }
        if let Some(h) = held
            && h.tx.origin() == Origin::Request
        {
            let id = h.tx.id().to_string();
            self.app.transactions().rollback(h);
            self.audit_transaction(&ctx, "ROLLBACK_TRANSACTION", &id, "request ended");
            return Err(RequestError::new(
                ErrorCode::SqlExecutionError,
                format!(
                    "Transaction {id} was still open when the request ended and has been rolled \
                     back: end it with COMMIT or ROLLBACK"
                ),
            ));
        }
        Ok(results.finish(&identity))
    }

    /// Counts a finished statement in the metrics and logs it when it was slow.
    pub(crate) fn observe(
        &self,
        ctx: &ExecCtx,
        text: &str,
        took: std::time::Duration,
        output: std::result::Result<&Output, &KalamError>,
    ) {
        let metrics = self.app.metrics();
        let kind = match output {
            Ok(Output::Rows { batches, .. }) => {
                let rows: usize = batches.iter().map(|b| b.num_rows()).sum();
                metrics.rows_read.inc_by(rows as u64);
                "select"
            }
            Ok(Output::Dml { kind, count }) => {
                metrics.rows_written.inc_by(*count as u64);
                match kind {
                    DmlKind::Insert => "insert",
                    DmlKind::Update => "update",
                    DmlKind::Delete => "delete",
                }
            }
            Ok(Output::Message(_)) => "ddl",
            Ok(Output::Transaction { .. }) => "transaction",
            Err(_) => "failed",
        };
        super::session::statement_done(&self.app, &ctx.identity, text, took, kind);
    }

    /// A statement inside `h` failed with `e`: a transaction of this request alone is rolled
    /// back (the request ends); one continued across requests stays, aborted, until ROLLBACK.
    fn fail_transaction(&self, h: InUse, e: &KalamError) {
        match h.tx.origin() {
            Origin::Request => {
                self.app.transactions().rollback(h);
            }
            Origin::Session => h.tx.abort(e.to_string()),
        }
    }

    /// `BEGIN`, `COMMIT` or `ROLLBACK`.
    async fn control(
        &self,
        ctx: &ExecCtx,
        control: TxControl,
        held: &mut Option<InUse>,
        lone_begin: bool,
    ) -> Result<(Output, String)> {
        let as_user = ctx.identity.user_id.to_string();
        let none_open = |what: &str| {
            KalamError::InvalidInput(format!(
                "{what} without an open transaction (BEGIN one first, or send its \
                 transaction_id)"
            ))
        };
        let manager = self.app.transactions();
        let (message, id) = match control {
            TxControl::Begin => {
                if let Some(h) = held {
                    return Err(KalamError::InvalidInput(format!(
                        "Transaction {} is already open; COMMIT or ROLLBACK it before BEGIN",
                        h.tx.id()
                    )));
                }
                let origin = if lone_begin {
                    Origin::Session
                } else {
                    Origin::Request
                };
                let h = manager.begin(&ctx.identity, origin).await;
                let id = h.tx.id().to_string();
                *held = Some(h);
                (format!("Transaction {id} started"), id)
            }
            TxControl::Commit => {
                let h = held.take().ok_or_else(|| none_open("COMMIT"))?;
                let id = h.tx.id().to_string();
                let committed = manager.commit(h).await;
                let status = match &committed {
                    Ok(n) => format!("{n} row(s)"),
                    Err(e) => format!("failed: {e}"),
                };
                self.audit_transaction(ctx, "COMMIT_TRANSACTION", &id, &status);
                let rows = committed?;
                (
                    format!("Transaction {id} committed: {rows} row(s) written"),
                    id,
                )
            }
            TxControl::Rollback => {
                let h = held.take().ok_or_else(|| none_open("ROLLBACK"))?;
                let id = h.tx.id().to_string();
                let rows = manager.rollback(h);
                self.audit_transaction(ctx, "ROLLBACK_TRANSACTION", &id, &format!("{rows} row(s)"));
                (
                    format!("Transaction {id} rolled back: {rows} staged row(s) discarded"),
                    id,
                )
            }
        };
        Ok((Output::Transaction { message, id }, as_user))
    }

    fn audit_transaction(&self, ctx: &ExecCtx, action: &'static str, id: &str, details: &str) {
        self.app.audit().record(AuditEvent {
            actor: ctx.identity.user_id.as_str(),
            action,
            target: id,
            details: Some(details.to_string()),
            ip: ctx.client_ip,
            ..AuditEvent::default()
        });
    }

    /// Runs one statement, unwrapping `EXECUTE AS USER 'u' (…)`; returns the output and the
    /// effective user.
    async fn run_statement(&self, ctx: &mut ExecCtx, text: &str) -> Result<(Output, String)> {
        let Some((target, inner)) = parse::execute_as(text)? else {
            let out = self.run_one(ctx, text).await?;
            if let Some((action, object)) = parse::audited_action(text) {
                self.app.audit().record(AuditEvent {
                    actor: ctx.identity.user_id.as_str(),
                    action,
                    target: &object,
                    ip: ctx.client_ip,
                    ..AuditEvent::default()
                });
            }
            return Ok((out, ctx.identity.user_id.to_string()));
        };
        let target_id = kalamdb_commons::UserId::new(target.as_str());
        let identity = if target_id == ctx.identity.user_id {
            ctx.identity.clone()
        } else {
            let found = self
                .app
                .catalog()
                .user(&target_id)?
                .filter(|u| u.deleted_at.is_none());
            let allowed = match found {
                Some(user) => {
                    crate::access::check_impersonate(&ctx.identity, user.role).map(|()| user)
                }
                None => Err(KalamError::NotFound {
                    kind: "User",
                    name: target.clone(),
                }),
            };
            // Callers who cannot list users learn nothing about which exist: one answer for
            // "no such user" and "may not act as that user".
            let user = match allowed {
                Ok(user) => user,
                Err(e) if ctx.identity.role.is_admin() => return Err(e),
                Err(_) => {
                    return Err(KalamError::PermissionDenied(format!(
                        "Cannot execute as user '{target}': no such user, or your role may \
                         not act as it"
                    )));
                }
            };
            Identity {
                user_id: target_id,
                role: user.role,
            }
        };
        let mut inner_ctx = ExecCtx {
            identity,
            namespace: ctx.namespace.clone(),
            params: ctx.params.clone(),
            client_ip: ctx.client_ip,
            now: ctx.now,
            tx: ctx.tx.clone(),
        };
        let result = self.run_one(&mut inner_ctx, &inner).await;
        // Every use is audited, refused or not; user-management statements are not quoted
        // (they may carry a password).
        let details = match parse::audited_action(&inner) {
            Some((action, object)) if action.ends_with("_USER") => format!("{action} {object}"),
            _ => inner.chars().take(1000).collect(),
        };
        let status = if result.is_ok() { "ok" } else { "failed" };
        self.app.audit().record(AuditEvent {
            actor: ctx.identity.user_id.as_str(),
            action: "EXECUTE_AS",
            target: &target,
            details: Some(format!("[{status}] {details}")),
            subject: Some(&target),
            ip: ctx.client_ip,
        });
        Ok((result?, inner_ctx.identity.user_id.to_string()))
    }

    async fn run_one(&self, ctx: &mut ExecCtx, text: &str) -> Result<Output> {
        let app = &*self.app;
        if let Some(ins) = super::insert_values::parse(text, &ctx.params) {
            match dml::insert_rows(app, ctx, &ins.table, &ins.columns, ins.rows).await {
                // An ALTER overtook it (nothing was written): the general path below parses
                // the statement again and retries.
                Err(KalamError::SchemaChanged(_)) => {}
                other => {
                    return Ok(Output::Dml {
                        kind: DmlKind::Insert,
                        count: other?,
                    });
                }
            }
        }
        let command = parse_statement(text)?;
        command.check_limits(ExprLimits::of(&app.config().limits))?;
        if let Some(tx) = &ctx.tx
            && !command.allowed_in_transaction()
        {
            return Err(KalamError::InvalidInput(format!(
                "{} is not allowed inside a transaction (only queries, INSERT, UPDATE, DELETE, \
                 USE, SHOW and DESCRIBE are); COMMIT or ROLLBACK transaction {} first",
                parse::leading_words(text, 2).join(" "),
                tx.id()
            )));
        }
        let _one_ddl_at_a_time = if command.changes_catalog() {
            Some(app.ddl_lock().lock().await)
        } else {
            None
        };
        match command {
            Command::CreateNamespace {
                name,
                if_not_exists,
            } => ddl::create_namespace(app, ctx, &name, if_not_exists),
            Command::DropNamespace {
                name,
                if_exists,
                cascade,
            } => ddl::drop_namespace(app, ctx, &name, if_exists, cascade).await,
            Command::Use(ns) => {
                let out = ddl::use_namespace(app, &ns)?;
                ctx.namespace = ns;
                Ok(out)
            }
            Command::ShowNamespaces => ddl::show_namespaces(app),
            Command::ShowTables(ns) => ddl::show_tables(app, ns.as_deref()),
            Command::ShowStorages => ddl::show_storages(app),
            Command::ShowManifest => ddl::show_manifest(app, ctx),
            Command::SubscribeTo(text) => {
                super::subscribe::subscribe_to(app, &self.live_url, &text)
            }
            Command::KillLiveQuery(id) => ddl::kill_live_query(app, ctx, &id),
            Command::Cluster(cmd) => ddl::cluster(app, ctx, cmd).await,
            Command::FlushTable(t) => ddl::flush_table(app, ctx, &t).await,
            Command::Backup(target) => ddl::backup_database(app, ctx, &target).await,
            Command::ExportUserData(user) => ddl::export_user_data(app, ctx, user).await,
            Command::FlushAll(ns) => ddl::flush_all(app, ctx, ns.as_deref()).await,
            Command::CompactTable(t) => ddl::compact_table(app, ctx, &t).await,
            Command::CompactAll(ns) => ddl::compact_all(app, ctx, ns.as_deref()).await,
            Command::KillJob(id) => ddl::kill_job(app, ctx, &id),
            Command::Topic(cmd) => super::topics::run(app, ctx, cmd).await,
            Command::KillTransaction(id) => {
                crate::access::check_admin(&ctx.identity, "kill transactions")?;
                if !app.transactions().kill(&id) {
                    return Err(KalamError::NotFound {
                        kind: "Transaction",
                        name: id,
                    });
                }
                Ok(Output::Message(format!(
                    "Transaction {id} killed: rolled back"
                )))
            }
            Command::KillQuery(id) => {
                crate::access::check_admin(&ctx.identity, "kill queries")?;
                if !app.queries().kill(id) {
                    return Err(KalamError::NotFound {
                        kind: "Query",
                        name: id.to_string(),
                    });
                }
                Ok(Output::Message(format!("Query {id} cancelled")))
            }
            Command::CreateStorage {
                id,
                storage_type,
                options,
            } => ddl::create_storage(app, ctx, &id, &storage_type, options).await,
            Command::DropStorage { id, if_exists } => ddl::drop_storage(app, ctx, &id, if_exists),
            Command::StorageCheck { id, extended } => {
                ddl::storage_check(app, ctx, &id, extended).await
            }
            Command::Describe(t) => ddl::describe(app, ctx, &t),
            Command::CreateTable { prefix_type, stmt } => {
                ddl::create_table(app, ctx, prefix_type, &stmt)
            }
            Command::DropTable {
                table,
                table_type,
                if_exists,
            } => ddl::drop_table(app, ctx, &table, table_type, if_exists).await,
            Command::CreateUser {
                name,
                login,
                role,
                email,
            } => ddl::create_user(app, ctx, &name, login, role.as_deref(), email).await,
            Command::DropUser { name, if_exists } => ddl::drop_user(app, ctx, &name, if_exists),
            Command::AlterUser { name, change } => ddl::alter_user(app, ctx, &name, change).await,
            Command::AlterTable { table, change } => {
                super::alter::alter_table(app, ctx, &table, change).await
            }
            Command::Sql(mut stmt) => {
                params::bind(&mut stmt, &ctx.params, &ctx.identity)?;
                match *stmt {
                    Statement::Query(_) => {
                        // Inside a transaction a lookup reads through its snapshot: the
                        // general path.
                        if ctx.tx.is_none()
                            && let Some(out) =
                                super::point_lookup::try_point_lookup(app, ctx, &stmt).await?
                        {
                            return Ok(out);
                        }
                        client_rows(app, ctx, *stmt).await
                    }
                    Statement::Explain { .. } | Statement::ExplainTable { .. } => {
                        crate::access::check_admin(&ctx.identity, "run EXPLAIN")?;
                        client_rows(app, ctx, *stmt).await
                    }
                    Statement::Insert(ins) => Ok(Output::Dml {
                        kind: DmlKind::Insert,
                        count: dml::insert(app, ctx, &ins).await?,
                    }),
                    Statement::Update(up) => Ok(Output::Dml {
                        kind: DmlKind::Update,
                        count: dml::update(app, ctx, &up).await?,
                    }),
                    Statement::Delete(del) => Ok(Output::Dml {
                        kind: DmlKind::Delete,
                        count: dml::delete(app, ctx, &del).await?,
                    }),
                    Statement::CreateView(v) => super::views::create_view(app, ctx, v).await,
                    Statement::Drop {
                        object_type: ObjectType::View,
                        if_exists,
                        names,
                        ..
                    } => super::views::drop_view(app, ctx, &names, if_exists),
                    other => Err(KalamError::InvalidSql(format!(
                        "Unsupported statement: {}",
                        other
                            .to_string()
                            .split_whitespace()
                            .take(3)
                            .collect::<Vec<_>>()
                            .join(" ")
                    ))),
                }
            }
        }
    }
}

impl super::stream::Executor for SqlExecutor {
    fn app(&self) -> &Arc<AppContext> {
        &self.app
    }

    fn run_statements(
        &self,
        ctx: ExecCtx,
        statements: Vec<String>,
    ) -> futures::future::BoxFuture<'_, std::result::Result<Vec<QueryResult>, RequestError>> {
        Box::pin(SqlExecutor::run_statements(self, ctx, statements, None))
    }

    fn results_of(&self, output: Output, identity: &Identity, as_user: String) -> Vec<QueryResult> {
        SqlExecutor::results_of(self, output, identity, as_user)
    }
}
