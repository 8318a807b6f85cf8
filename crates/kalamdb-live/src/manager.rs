//! [`LiveQueryManager`]: connections, subscriptions, the compiled-filter cache and the routing
//! index, in one place. A change is routed by `(table, user)` for USER and STREAM tables and by
//! table for SHARED tables, so its cost follows the subscriptions that can see it. Closing a
//! connection removes all of its state at once; nothing polls.

use crate::compiled::{CompiledQuery, mentions_caller, mentions_clock};
use crate::error::LiveError;
use crate::initial::{InitialRows, ack, ack_schema, batch_size_of};
use crate::outbox::{CloseReason, Outbound, Outbox};
use crate::query::LiveQuery;
use crate::subscription::{BodyCache, LoadState, Subscription};
use crate::system::SystemFeeds;
use dashmap::DashMap;
use datafusion::execution::SessionState;
use kalamdb_catalog::schema_registry::CachedTable;
use kalamdb_commons::schema::Role;
use kalamdb_commons::ws::{ServerMessage, SubscriptionOptions, SubscriptionRequest};
use kalamdb_commons::{ErrorCode, NamespaceId, TableId, TableName, TableType, UserId};
use kalamdb_core::access;
use kalamdb_core::app_context::AppContext;
use kalamdb_core::auth::Identity;
use kalamdb_core::expr_limits::ExprLimits;
use kalamdb_core::providers::system::SystemTable;
use kalamdb_core::sql::row_filter::Caller;
use kalamdb_tables::changes::{ChangeEvent, ChangeListener, LiveCounts, LiveQueryInfo};
use kalamdb_tables::faults::PausePoint;
use kalamdb_tables::rows::Scope;
use kalamdb_tables::scan::BatchStream;
use parking_lot::{Mutex, RwLock};
use std::collections::HashMap;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Weak};
use tokio::sync::mpsc;

/// The query a recompiled one replaces, and the subscriber for per-user queries.
type RecompileKey = (*const CompiledQuery, Option<(UserId, Role)>);

/// Queries compiled for a new table version during one ALTER, by the query they replace (and
/// the subscriber, for per-user queries), so subscriptions that shared one share the new one;
/// and the session state they compile in.
struct Recompiled {
    state: SessionState,
    done: HashMap<RecompileKey, Arc<CompiledQuery>>,
}

impl Recompiled {
    fn new(app: &AppContext) -> Self {
        Self {
            state: app.expression_state().clone(),
            done: HashMap::new(),
        }
    }
}

/// What one connection may hold, set by the transport (`[websocket]` of the server's config).
#[derive(Debug, Clone, Copy)]
pub struct ConnectionLimits {
    /// Server messages queued for the connection; one that falls further behind is closed.
    pub outbound_queue: usize,
    /// Subscriptions the connection may hold (`SUBSCRIPTION_LIMIT_EXCEEDED` beyond).
    pub max_subscriptions: usize,
}

/// One client connection: its outbound side (id, queue, close signal), its identity and its
/// subscriptions.
#[derive(Debug)]
pub struct Connection {
    outbox: Arc<Outbox>,
    /// The authenticated user.
    pub identity: Identity,
    max_subscriptions: usize,
    subs: Mutex<HashMap<String, Arc<Subscription>>>,
}

impl std::ops::Deref for Connection {
    type Target = Outbox;
    fn deref(&self) -> &Outbox {
        &self.outbox
    }
}

impl Connection {
    /// How many subscriptions the connection holds.
    pub fn subscription_count(&self) -> usize {
        self.subs.lock().len()
    }

    fn error(&self, subscription_id: &str, e: &LiveError) {
        self.send(&ServerMessage::Error {
            subscription_id: subscription_id.to_string(),
            code: e.code.as_str().to_string(),
            message: e.message.clone(),
        });
    }
}

/// Subscriptions of one table.
#[derive(Debug, Default)]
struct Route {
    /// SHARED tables.
    shared: Vec<Arc<Subscription>>,
    /// USER and STREAM tables, by the partition's owner.
    users: HashMap<UserId, Vec<Arc<Subscription>>>,
}

/// The live-query manager.
#[derive(Debug)]
pub struct LiveQueryManager {
    app: Weak<AppContext>,
    next_connection: AtomicU64,
    connections: DashMap<u64, Arc<Connection>>,
    routes: DashMap<TableId, Route>,
    /// Compiled queries shared by identical subscriptions.
    queries: DashMap<String, Weak<CompiledQuery>>,
    /// Subscriptions on `system.*`.
    system: Arc<SystemFeeds>,
    /// Deliveries and their latency are counted here.
    metrics: Arc<kalamdb_core::metrics::Metrics>,
}

impl LiveQueryManager {
    /// A manager for `app`, registered as its change listener.
    pub fn start(app: &Arc<AppContext>) -> Arc<Self> {
        let manager = Arc::new(Self {
            app: Arc::downgrade(app),
            next_connection: AtomicU64::new(1),
            connections: DashMap::new(),
            routes: DashMap::new(),
            queries: DashMap::new(),
            system: Arc::new(SystemFeeds::new()),
            metrics: Arc::clone(&app.provider_deps().metrics),
        });
        app.tables()
            .set_change_listener(Arc::clone(&manager) as Arc<dyn ChangeListener>);
        let feeds = Arc::clone(&manager.system);
        app.catalog()
            .set_hook(Arc::new(move |part| feeds.mark(SystemTable::fed_by(part))));
        match tokio::runtime::Handle::try_current() {
            Ok(rt) => {
                rt.spawn(refresh_system_tables(Arc::downgrade(&manager)));
            }
            Err(_) => tracing::warn!("no async runtime: system-table subscriptions get no changes"),
        }
        manager
    }

    /// Re-reads one system table and publishes its changes.
    fn refresh_system(&self, app: &AppContext, kind: SystemTable) {
        let Some((_, table)) = self.system.table(kind.name()) else {
            return;
        };
        let subscribed = self.routes.contains_key(&table.def.table_id());
        let refreshed = self.system.refresh(app, kind, subscribed, |table, events| {
            self.publish(table, None, events)
        });
        if let Err(e) = refreshed {
            tracing::warn!(table = kind.name(), error = %e, "cannot refresh a system table");
        }
    }

    /// Opens a connection for `identity` with an outbound queue of `queue` messages.
    pub fn connect(
        &self,
        identity: Identity,
        limits: ConnectionLimits,
    ) -> (Arc<Connection>, mpsc::Receiver<Outbound>) {
        let queue = limits.outbound_queue;
        let (tx, rx) = mpsc::channel(queue.max(1));
        let conn = Arc::new(Connection {
            outbox: Arc::new(Outbox::new(
                self.next_connection.fetch_add(1, Ordering::Relaxed),
                tx,
            )),
            identity,
            max_subscriptions: limits.max_subscriptions,
            subs: Mutex::new(HashMap::new()),
        });
        self.connections.insert(conn.id, Arc::clone(&conn));
        self.metrics.ws_connections.inc();
        (conn, rx)
    }

    /// The open connection `id`.
    fn connection(&self, id: u64) -> Option<Arc<Connection>> {
        self.connections.get(&id).map(|c| Arc::clone(c.value()))
    }

    /// Closes a connection: every subscription of it goes, at once.
    pub fn disconnect(&self, conn: &Connection) {
        let subs: Vec<Arc<Subscription>> = conn.subs.lock().drain().map(|(_, s)| s).collect();
        for sub in subs {
            self.unroute(&sub);
        }
        self.connections.remove(&conn.id);
        self.system.mark(&[SystemTable::Live]);
    }

    /// Live subscriptions on the server.
    pub fn subscription_count(&self) -> usize {
        self.connections
            .iter()
            .map(|c| c.value().subscription_count())
            .sum()
    }

    /// Handles `subscribe`: replies with an ack and the first batch, or an `error`.
    pub async fn subscribe(&self, conn: &Arc<Connection>, req: SubscriptionRequest) {
        if let Err(e) = self.check_subscription_id(&req.id) {
            conn.error("invalid_subscription", &e);
            return;
        }
        if let Err(e) = self.try_subscribe(conn, &req).await {
            conn.error(&req.id, &e);
        }
    }

    /// Refuses an empty subscription id or one longer than `limits.max_name_bytes`.
    fn check_subscription_id(&self, id: &str) -> Result<(), LiveError> {
        if id.trim().is_empty() {
            return Err(LiveError::new(
                ErrorCode::InvalidSubscriptionId,
                "subscription id must not be empty",
            ));
        }
        let max = self
            .app
            .upgrade()
            .map_or(256, |app| app.config().limits.max_name_bytes);
        if id.len() > max {
            return Err(LiveError::new(
                ErrorCode::InvalidSubscriptionId,
                format!("subscription id is longer than {max} bytes (limits.max_name_bytes)"),
            ));
        }
        Ok(())
    }

    /// Subscribes `req` on `conn`, step by step; an `Err` is sent to the client as an `error`.
    async fn try_subscribe(
        &self,
        conn: &Arc<Connection>,
        req: &SubscriptionRequest,
    ) -> Result<(), LiveError> {
        let app = self.app.upgrade().ok_or_else(|| {
            LiveError::new(ErrorCode::SubscriptionFailed, "server is shutting down")
        })?;
        // Re-using an active id replaces that subscription.
        self.unsubscribe(conn, &req.id);
        check_subscription_limit(conn)?;
        let query = parse_query(&app, &req.sql).await?;
        // Access is checked here: system tables for admins, SHARED tables by access level.
        let (table, system) = self.resolve(&app, &conn.identity, &query)?;
        let columns = column_indices(&table, &query)?;
        let compiled = self.compiled_query(&app, &table, &query, columns, &conn.identity)?;
        let opts = req.options.clone().unwrap_or_default();
        let batch_size = batch_size_of(&opts)?;
        let sub = new_subscription(conn, req, &table, compiled, &opts, batch_size);
        // Register and read the initial rows so that every write is either in them or
        // delivered as a change: under the scope's write lock (the rows from a snapshot taken
        // there), or for a system table under its feed lock. No options: no initial rows.
        let options = req.options.as_ref();
        let rows = match system {
            Some(kind) => self.register_system(&app, conn, &sub, kind, options)?,
            None => {
                self.register_table(&app, conn, &sub, &table, options)
                    .await?
            }
        };
        self.send_ack_and_first_batch(conn, &sub, rows, batch_size);
        Ok(())
    }

    /// Adds `sub` to the routing index and to its connection.
    fn register(&self, conn: &Connection, sub: &Arc<Subscription>) {
        self.route(sub);
        conn.subs.lock().insert(sub.id.clone(), Arc::clone(sub));
    }

    /// Undoes a registration whose initial data cannot be read, and says so.
    fn load_failed(
        &self,
        conn: &Connection,
        sub: &Subscription,
        e: &dyn std::fmt::Display,
    ) -> LiveError {
        self.unsubscribe(conn, &sub.id);
        LiveError::new(
            ErrorCode::SubscriptionFailed,
            format!("cannot read initial data: {e}"),
        )
    }

    /// Registers `sub` on system table `kind` under its feed lock, with its initial rows.
    fn register_system(
        &self,
        app: &AppContext,
        conn: &Connection,
        sub: &Arc<Subscription>,
        kind: SystemTable,
        options: Option<&SubscriptionOptions>,
    ) -> Result<Option<InitialRows>, LiveError> {
        let rows = self
            .system
            .register(app, kind, || self.register(conn, sub), options.is_some())
            .map_err(|e| self.load_failed(conn, sub, &e))?;
        self.system.mark(&[SystemTable::Live]);
        Ok(rows
            .zip(options)
            .map(|(rows, opts)| InitialRows::of_rows(sub.query(), opts, rows)))
    }

    /// Registers `sub` on its table and reads its initial rows from the snapshot taken then.
    async fn register_table(
        &self,
        app: &AppContext,
        conn: &Connection,
        sub: &Arc<Subscription>,
        table: &Arc<CachedTable>,
        options: Option<&SubscriptionOptions>,
    ) -> Result<Option<InitialRows>, LiveError> {
        let (table, snapshot) = self
            .register_under_lock(app, conn, sub, table, options)
            .await?;
        let (Some(batches), Some(opts)) = (snapshot, options) else {
            return Ok(None);
        };
        // The snapshot's rows are read after the lock went, a batch at a time, keeping only
        // what the subscription will send.
        InitialRows::of_snapshot(sub.query(), opts, &table, batches)
            .await
            .map(Some)
            .map_err(|e| self.load_failed(conn, sub, &e))
    }

    /// Under the scope's writer lock, held from before `sub` is registered until the snapshot
    /// of its initial rows (with options) is taken and released right after: moves to the
    /// table's current version, registers `sub`, takes the snapshot.
    async fn register_under_lock(
        &self,
        app: &AppContext,
        conn: &Connection,
        sub: &Arc<Subscription>,
        table: &Arc<CachedTable>,
        options: Option<&SubscriptionOptions>,
    ) -> Result<(Arc<CachedTable>, Option<BatchStream>), LiveError> {
        let scope = match &sub.routed_user {
            Some(u) => Scope::User(u.clone()),
            None => Scope::Shared,
        };
        let locks = app.tables().table_locks(&sub.table_id);
        app.tables()
            .faults()
            .pause(PausePoint::SubscribeBeforeLock, &sub.table_id)
            .await;
        let guard = locks.scope(&scope).await;
        let table = self.current_version(app, conn, sub, table)?;
        self.register(conn, sub);
        // The scan takes its snapshot before the lock goes.
        let snapshot = match options {
            None => None,
            Some(opts) => Some(
                app.tables()
                    .snapshot_scope(&table, &scope, opts.from.is_some(), opts.from)
                    .await
                    .map_err(|e| self.load_failed(conn, sub, &e))?,
            ),
        };
        drop(guard);
        self.system.mark(&[SystemTable::Live]);
        Ok((table, snapshot))
    }

    /// The table's version now, under a scope lock: an ALTER that committed after the table
    /// was resolved (it holds every scope lock, so none can commit from here until the
    /// subscription is registered) moves `sub` to the version it made.
    fn current_version(
        &self,
        app: &AppContext,
        conn: &Connection,
        sub: &Subscription,
        table: &Arc<CachedTable>,
    ) -> Result<Arc<CachedTable>, LiveError> {
        match app.schema_registry().get(&sub.table_id) {
            Ok(Some(now)) if now.def.created_at == table.def.created_at => {
                if now.def.version != table.def.version {
                    self.on_new_version(conn, sub, &now, &mut Recompiled::new(app))?;
                }
                Ok(now)
            }
            Ok(_) => Err(LiveError::new(
                ErrorCode::NotFound,
                format!("Table '{}' was dropped", sub.table_id),
            )),
            Err(e) => Err(self.load_failed(conn, sub, &e)),
        }
    }

    /// Sends the ack and then, when there are initial rows, their first batch; with none,
    /// the load is done at once.
    fn send_ack_and_first_batch(
        &self,
        conn: &Connection,
        sub: &Subscription,
        rows: Option<InitialRows>,
        batch_size: usize,
    ) {
        let schema = ack_schema(sub);
        let Some(rows) = rows else {
            // No options: no initial data at all.
            let mut state = sub.state.lock();
            conn.send(&ack(sub, schema, false));
            sub.finish_load(&mut state);
            return;
        };
        let (pending, resumed_deletes) = rows.finish();
        {
            let mut state = sub.state.lock();
            let has_more = pending.len() > batch_size;
            state.pending = pending;
            state.resumed_deletes = resumed_deletes;
            conn.send(&ack(sub, schema, has_more));
        }
        sub.send_next_batch();
    }

    /// Handles `next_batch`.
    pub fn next_batch(&self, conn: &Connection, subscription_id: &str) {
        let sub = conn.subs.lock().get(subscription_id).cloned();
        match sub {
            Some(sub) => sub.send_next_batch(),
            None => conn.error(
                subscription_id,
                &LiveError::new(ErrorCode::BatchFetchFailed, "no such subscription"),
            ),
        }
    }

    /// Handles `unsubscribe` (no reply).
    pub fn unsubscribe(&self, conn: &Connection, subscription_id: &str) {
        let removed = conn.subs.lock().remove(subscription_id);
        if let Some(sub) = removed {
            self.unroute(&sub);
            self.system.mark(&[SystemTable::Live]);
        }
    }

    /// Ends every subscription `pick` chooses, telling its client `why`; returns how many.
    fn end_where(&self, pick: impl Fn(&Subscription) -> bool, why: &LiveError) -> usize {
        let mut ended = 0;
        for conn in self.connections.iter() {
            let ids: Vec<String> = conn
                .subs
                .lock()
                .values()
                .filter(|s| pick(s))
                .map(|s| s.id.clone())
                .collect();
            for id in ids {
                self.unsubscribe(&conn, &id);
                conn.error(&id, why);
                ended += 1;
            }
        }
        ended
    }

    /// Moves `sub` onto `table`, a new version of its table: access is checked again (an
    /// ALTER can make a SHARED table private) and the query compiled for the new version.
    /// `Err` says why the subscription must end.
    fn on_new_version(
        &self,
        conn: &Connection,
        sub: &Subscription,
        table: &Arc<CachedTable>,
        recompiled: &mut Recompiled,
    ) -> Result<(), LiveError> {
        if table.def.table_type == TableType::Shared {
            access::check_shared_read(&conn.identity, &table.def).map_err(|e| {
                LiveError::new(
                    ErrorCode::Unauthorized,
                    format!("{e}; this subscription has ended"),
                )
            })?;
        }
        let old = sub.query();
        let who = &conn.identity;
        let key = (
            Arc::as_ptr(&old),
            old.per_user.then(|| (who.user_id.clone(), who.role)),
        );
        let new = match recompiled.done.get(&key) {
            Some(hit) => Arc::clone(hit),
            None => {
                let caller = Caller::of(&recompiled.state, who);
                let new = Arc::new(old.for_version(Arc::clone(table), caller)?);
                recompiled.done.insert(key, Arc::clone(&new));
                new
            }
        };
        *sub.query.write() = new;
        Ok(())
    }

    fn resolve(
        &self,
        app: &AppContext,
        identity: &Identity,
        q: &LiveQuery,
    ) -> Result<(Arc<CachedTable>, Option<SystemTable>), LiveError> {
        let not_found = || {
            LiveError::new(
                ErrorCode::NotFound,
                format!("table {}.{} not found", q.namespace, q.table),
            )
        };
        if q.namespace == "system" {
            if !identity.role.is_admin() {
                return Err(LiveError::new(
                    ErrorCode::Unauthorized,
                    "system tables are for dba and system users",
                ));
            }
            let (kind, table) = self.system.table(&q.table).ok_or_else(not_found)?;
            return Ok((table, Some(kind)));
        }
        let ns = NamespaceId::parse(&q.namespace).map_err(|_| not_found())?;
        let name = TableName::parse(&q.table).map_err(|_| not_found())?;
        let table = app
            .schema_registry()
            .get(&TableId::new(ns, name))
            .map_err(|e| LiveError::new(ErrorCode::SubscriptionFailed, e.to_string()))?
            .ok_or_else(not_found)?;
        if table.def.table_type == TableType::Shared {
            access::check_shared_read(identity, &table.def)
                .map_err(|e| LiveError::new(ErrorCode::Unauthorized, e.to_string()))?;
        }
        Ok((table, None))
    }

    /// The compiled query for `q` on `table`, shared with identical subscriptions.
    fn compiled_query(
        &self,
        app: &AppContext,
        table: &Arc<CachedTable>,
        q: &LiveQuery,
        columns: Vec<usize>,
        who: &Identity,
    ) -> Result<Arc<CompiledQuery>, LiveError> {
        let filter_text = q.filter.as_ref().map(|e| e.to_string()).unwrap_or_default();
        let per_user = mentions_caller(q.filter.as_ref());
        let caller = if per_user {
            format!("{}/{}", who.user_id, who.role.as_str())
        } else {
            String::new()
        };
        let key = format!(
            "{}|{}|{}|{}|{:?}|{}",
            table.def.table_id(),
            table.def.version,
            caller,
            q.columns.is_none(),
            columns,
            filter_text
        );
        // A clause that reads the clock is folded at this subscription's start: not shared.
        let shared = !mentions_clock(q.filter.as_ref());
        if shared && let Some(hit) = self.queries.get(&key).and_then(|w| w.upgrade()) {
            return Ok(hit);
        }
        let compiled = Arc::new(CompiledQuery::compile(
            Arc::clone(table),
            columns,
            q.columns.is_none(),
            q.filter.as_ref(),
            Caller::of(app.expression_state(), who),
        )?);
        if self.queries.len() > 1024 && self.queries.len() > 2 * self.subscription_count() {
            self.queries.retain(|_, w| w.strong_count() > 0);
        }
        if shared {
            self.queries.insert(key, Arc::downgrade(&compiled));
        }
        Ok(compiled)
    }

    fn route(&self, sub: &Arc<Subscription>) {
        let mut route = self.routes.entry(sub.table_id.clone()).or_default();
        match &sub.routed_user {
            None => route.shared.push(Arc::clone(sub)),
            Some(u) => route
                .users
                .entry(u.clone())
                .or_default()
                .push(Arc::clone(sub)),
        }
    }

    fn unroute(&self, sub: &Subscription) {
        let mut empty = false;
        if let Some(mut route) = self.routes.get_mut(&sub.table_id) {
            let keep = |s: &Arc<Subscription>| s.live_id != sub.live_id;
            match &sub.routed_user {
                None => route.shared.retain(keep),
                Some(u) => {
                    if let Some(list) = route.users.get_mut(u) {
                        list.retain(keep);
                        if list.is_empty() {
                            route.users.remove(u);
                        }
                    }
                }
            }
            empty = route.shared.is_empty() && route.users.is_empty();
        }
        if empty {
            self.routes.remove_if(&sub.table_id, |_, r| {
                r.shared.is_empty() && r.users.is_empty()
            });
        }
    }
}

/// Refuses a subscription beyond the connection's limit.
fn check_subscription_limit(conn: &Connection) -> Result<(), LiveError> {
    let limit = conn.max_subscriptions;
    if conn.subscription_count() >= limit {
        return Err(LiveError::new(
            ErrorCode::SubscriptionLimitExceeded,
            format!("at most {limit} subscriptions per connection"),
        ));
    }
    Ok(())
}

/// Parses `sql` as a live query on the query runtime, within the expression limits.
async fn parse_query(app: &AppContext, sql: &str) -> Result<LiveQuery, LiveError> {
    let sql = sql.to_string();
    let limits = ExprLimits::of(&app.config().limits);
    app.queries()
        .run_small(move || LiveQuery::parse(&sql, limits))
        .await
        .map_err(|e| LiveError::new(ErrorCode::SubscriptionFailed, e.to_string()))?
}

/// The indices of the columns `q` selects (all for `*`; `_seq` is always sent).
fn column_indices(table: &CachedTable, q: &LiveQuery) -> Result<Vec<usize>, LiveError> {
    let def = &table.def;
    match &q.columns {
        None => Ok((0..def.columns.len()).collect()),
        Some(names) => names
            .iter()
            .filter(|n| n.as_str() != kalamdb_commons::schema::SEQ_COLUMN)
            .map(|n| {
                def.columns
                    .iter()
                    .position(|c| &c.name == n)
                    .ok_or_else(|| LiveError::invalid(format!("unknown column {n}")))
            })
            .collect(),
    }
}

/// A new subscription of `conn` to `table`, not registered yet.
fn new_subscription(
    conn: &Connection,
    req: &SubscriptionRequest,
    table: &CachedTable,
    compiled: Arc<CompiledQuery>,
    opts: &SubscriptionOptions,
    batch_size: usize,
) -> Arc<Subscription> {
    let user = conn.identity.user_id.clone();
    let routed_user = (table.def.table_type != TableType::Shared).then(|| user.clone());
    Arc::new(Subscription {
        id: req.id.clone(),
        live_id: format!("{}-{}", conn.id, req.id),
        conn: Arc::downgrade(&conn.outbox),
        user,
        table_id: table.def.table_id(),
        routed_user,
        query: RwLock::new(compiled),
        from: opts.from,
        sql: req.sql.clone(),
        options: req
            .options
            .as_ref()
            .and_then(|o| serde_json::to_string(o).ok())
            .unwrap_or_else(|| "null".into()),
        created_at: chrono::Utc::now().timestamp_micros(),
        changes: AtomicU64::new(0),
        last_update: AtomicI64::new(0),
        state: Mutex::new(LoadState {
            batch_size,
            ..LoadState::default()
        }),
    })
}

/// The task that refreshes subscribed system tables after catalog writes; ends with the
/// manager.
async fn refresh_system_tables(manager: Weak<LiveQueryManager>) {
    let Some(feeds) = manager.upgrade().map(|m| Arc::clone(&m.system)) else {
        return;
    };
    loop {
        let dirty = feeds.next_dirty().await;
        let Some(m) = manager.upgrade() else {
            return;
        };
        let Some(app) = m.app.upgrade() else {
            return;
        };
        for kind in dirty {
            m.refresh_system(&app, kind);
        }
    }
}

impl ChangeListener for LiveQueryManager {
    fn wants(&self, table: &TableId, user: Option<&UserId>) -> bool {
        self.routes.get(table).is_some_and(|r| match user {
            None => !r.shared.is_empty(),
            Some(u) => r.users.contains_key(u),
        })
    }

    fn publish(&self, table: &CachedTable, user: Option<&UserId>, events: Vec<ChangeEvent>) {
        let subs: Vec<Arc<Subscription>> = match self.routes.get(&table.def.table_id()) {
            None => return,
            Some(r) => match user {
                None => r.shared.clone(),
                Some(u) => r.users.get(u).cloned().unwrap_or_default(),
            },
        };
        let started = std::time::Instant::now();
        let mut cache = BodyCache::new();
        let mut queued = 0;
        for sub in subs {
            match sub.deliver(&events, &mut cache) {
                Ok(n) => queued += n,
                Err(e) => {
                    if let Some(outbox) = sub.conn.upgrade()
                        && let Some(conn) = self.connection(outbox.id)
                    {
                        self.unsubscribe(&conn, &sub.id);
                        conn.error(&sub.id, &e);
                    }
                }
            }
        }
        if queued > 0 {
            self.metrics.live_deliveries.inc_by(queued);
            self.metrics
                .live_delivery_seconds
                .observe(started.elapsed().as_secs_f64());
        }
    }

    fn counts(&self) -> LiveCounts {
        let mut counts = LiveCounts::default();
        for conn in self.connections.iter() {
            let subs = conn.subscription_count();
            counts.connections += 1;
            counts.subscribed_connections += usize::from(subs > 0);
            counts.subscriptions += subs;
        }
        counts
    }

    fn live_queries(&self) -> Vec<LiveQueryInfo> {
        let subs: Vec<Arc<Subscription>> = self
            .connections
            .iter()
            .flat_map(|c| c.value().subs.lock().values().cloned().collect::<Vec<_>>())
            .collect();
        subs.iter()
            .map(|s| LiveQueryInfo {
                live_id: s.live_id.clone(),
                connection_id: s.conn.upgrade().map(|c| c.id).unwrap_or(0).to_string(),
                subscription_id: s.id.clone(),
                namespace_id: s.table_id.namespace.to_string(),
                table_name: s.table_id.table.to_string(),
                user_id: s.user.to_string(),
                query: s.sql.clone(),
                options: s.options.clone(),
                status: if s.state.lock().ready {
                    "active"
                } else {
                    "loading"
                }
                .into(),
                created_at: s.created_at,
                last_update: Some(s.last_update.load(Ordering::Relaxed)).filter(|t| *t > 0),
                changes: s.changes.load(Ordering::Relaxed) as i64,
            })
            .collect()
    }

    fn kill_live_query(&self, live_id: &str) -> bool {
        let why = LiveError::new(
            ErrorCode::SubscriptionFailed,
            "live query killed by KILL LIVE QUERY",
        );
        self.end_where(|s| s.live_id == live_id, &why) > 0
    }

    fn table_altered(&self, def: &kalamdb_commons::TableDefinition) -> usize {
        let id = def.table_id();
        let Some(app) = self.app.upgrade() else {
            return 0; // the server is stopping
        };
        let table = match app.schema_registry().get(&id) {
            Ok(Some(table)) => table,
            // Gone meanwhile (DROP ends its subscriptions).
            _ => return 0,
        };
        // Subscriptions that shared a compiled query share its new version too.
        let mut recompiled = Recompiled::new(&app);
        let mut ended = 0;
        for conn in self.connections.iter() {
            let subs: Vec<Arc<Subscription>> = conn
                .subs
                .lock()
                .values()
                .filter(|s| s.table_id == id)
                .cloned()
                .collect();
            for sub in subs {
                let outcome = self.on_new_version(&conn, &sub, &table, &mut recompiled);
                if let Err(why) = outcome {
                    self.unsubscribe(&conn, &sub.id);
                    conn.error(&sub.id, &why);
                    ended += 1;
                }
            }
        }
        ended
    }

    fn user_revoked(&self, user: &UserId) -> usize {
        let conns: Vec<Arc<Connection>> = self
            .connections
            .iter()
            .filter(|c| c.identity.user_id == *user)
            .map(|c| Arc::clone(c.value()))
            .collect();
        for conn in &conns {
            let ids: Vec<String> = conn.subs.lock().keys().cloned().collect();
            for id in ids {
                self.unsubscribe(conn, &id);
            }
            conn.close_now(CloseReason::Revoked);
        }
        conns.len()
    }

    fn table_dropped(&self, table: &TableId) -> usize {
        let why = LiveError::new(
            ErrorCode::NotFound,
            format!("Table '{table}' was dropped; this subscription has ended"),
        );
        self.end_where(|s| s.table_id == *table, &why)
    }
}
