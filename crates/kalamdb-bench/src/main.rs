//! `kalamdb-bench`: a load generator that speaks only KalamDB's public protocol (login and
//! `POST /v1/api/sql`), so the same workload can be pointed at any server that speaks it.
//!
//! Workloads (`--workload`):
//! - `insert-single`: one row per request, `--concurrency` clients;
//! - `insert-batch`: `--batch` rows per multi-VALUES request;
//! - `point-select`: primary-key lookups on a table preloaded with `--rows` rows;
//! - `user-insert` / `stream-insert` / `shared-insert`: single-row inserts into a USER / STREAM /
//!   SHARED table, each request by one of `--users` real users (service accounts for SHARED;
//!   created and logged in first; run the server with a low `KALAMDB_AUTH_BCRYPT_COST` to make
//!   that quick);
//! - `user-select`: `SELECT *` of one user's rows in a USER table preloaded with `--rows` rows
//!   spread over `--users` users;
//! - `live-latency` / `live-fanout` / `live-users`: INSERT-to-delivery time of live queries
//!   (see [`live`]);
//! - `flush` / `cold-query` / `flush-insert`: flush throughput, queries over flushed segments,
//!   batch inserts with and without flushes running (see [`cold`]);
//! - `health-under-load` / `point-select-under-load`: latency of health checks and point reads
//!   while `--heavy` worst-case queries run (see [`load`]);
//! - `scan-scale`: LIMIT, key-range, count, GROUP BY and a 5,000,000-row `SELECT *` on a SHARED
//!   table of `--rows` rows, first hot then as flushed segments, with the server's peak memory
//!   (see [`scan`]);
//! - `system-tables`: latency of `system.stats`, `system.settings`, `system.cluster` (see
//!   [`system`]);
//! - `failover`: outage when a cluster leader is killed (see [`failover`]);
//! - `all`: insert-single, insert-batch and point-select in turn.
//!
//! Each workload warms up for `--warmup` seconds, then measures for `--duration` seconds;
//! a progress line shows the running rate. Results print as a table and, with `--json`, are
//! written with the command, commit and machine so `docs/benchmarks.md` can quote them.

mod cold;
mod failover;
mod live;
mod load;
mod report;
mod scan;
mod schema;
mod system;
mod topics;
mod txn;

use clap::Parser;
use hdrhistogram::Histogram;
use kalamdb_commons::wire::{LoginResponse, SqlRequest, SqlResponse};
use report::{Machine, Report, WorkloadResult};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// Command-line options.
#[derive(Debug, Clone, Parser)]
#[command(version, about = "Load generator for KalamDB's HTTP protocol")]
struct Args {
    /// Server base URL.
    #[arg(long, default_value = "http://127.0.0.1:8080")]
    url: String,
    /// User to log in as (needs rights to create a namespace and a SHARED table).
    #[arg(long, default_value = "root")]
    user: String,
    /// Password (or KALAMDB_BENCH_PASSWORD).
    #[arg(long, env = "KALAMDB_BENCH_PASSWORD", default_value = "")]
    password: String,
    /// insert-single | insert-batch | point-select | all | user-insert | shared-insert |
    /// stream-insert | user-select | live-latency | live-fanout | live-users | flush |
    /// cold-query | flush-insert | alter-add-column | view-query | health-under-load |
    /// point-select-under-load | scan-scale | system-tables | tx-insert | tx-transfer |
    /// topic-latency | topic-publish | topic-consume | topic-consume-flushed |
    /// topic-source-insert | failover
    #[arg(long, default_value = "all")]
    workload: String,
    /// Concurrent clients.
    #[arg(long, default_value_t = 1)]
    concurrency: usize,
    /// Measured seconds per workload.
    #[arg(long, default_value_t = 10)]
    duration: u64,
    /// Warm-up seconds per workload (not measured).
    #[arg(long, default_value_t = 2)]
    warmup: u64,
    /// Rows per request for insert-batch.
    #[arg(long, default_value_t = 1000)]
    batch: usize,
    /// Rows preloaded for point-select and scan-scale.
    #[arg(long, default_value_t = 100_000)]
    rows: usize,
    /// Users for the user-* and stream-* workloads.
    #[arg(long, default_value_t = 1000)]
    users: usize,
    /// Sockets for live-fanout.
    #[arg(long, default_value_t = 100)]
    sockets: usize,
    /// Subscriptions per socket for live-fanout.
    #[arg(long, default_value_t = 100)]
    subs_per_socket: usize,
    /// WHERE clause of the live-latency/live-fanout subscriptions (it must hold for every
    /// row: e.g. `score >= 0`, or `doc->>'kind' = 'k'` over the table's JSON column).
    #[arg(long)]
    live_where: Option<String>,
    /// Worst-case queries kept running by the *-under-load workloads.
    #[arg(long, default_value_t = 2)]
    heavy: usize,
    /// Namespace the bench creates its tables in.
    #[arg(long, default_value = "bench")]
    namespace: String,
    /// Storage of the USER and SHARED tables the bench creates (`STORAGE_ID`; a cluster flushes
    /// only tables on a storage every member reads).
    #[arg(long)]
    storage: Option<String>,
    /// `x-kalamdb-consistency` on every SQL request (`linearizable`: a cluster member's
    /// reads confirm every group's read index first).
    #[arg(long)]
    consistency: Option<String>,
    /// Server process id, to report its resident memory.
    #[arg(long)]
    server_pid: Option<u32>,
    /// More server processes whose CPU counts with `--server-pid`'s (a cluster's other
    /// members), comma-separated.
    #[arg(long, value_delimiter = ',')]
    also_pids: Vec<u32>,
    /// live-latency/live-fanout: open the subscriptions on this server (a cluster member
    /// other than the one written to) instead of `--url`.
    #[arg(long)]
    live_url: Option<String>,
    /// failover: the folder of a cluster started by `scripts/cluster.sh up`.
    #[arg(long)]
    cluster_dir: Option<String>,
    /// failover: how many leaders to kill.
    #[arg(long, default_value_t = 5)]
    rounds: usize,
    /// failover: the script that restarts a killed member.
    #[arg(long, default_value = "scripts/cluster.sh")]
    cluster_script: String,
    /// Write the results as JSON to this file.
    #[arg(long)]
    json: Option<String>,
}

/// CPU time of `--server-pid` and `--also-pids`, summed (µs).
fn server_cpu(args: &Args) -> Option<u64> {
    let first = args.server_pid.and_then(report::cpu_micros)?;
    Some(
        args.also_pids
            .iter()
            .filter_map(|p| report::cpu_micros(*p))
            .sum::<u64>()
            + first,
    )
}

/// A logged-in HTTP client.
#[derive(Clone)]
struct Client {
    http: reqwest::Client,
    url: String,
    token: String,
}

impl Client {
    /// The same server, as another user.
    async fn as_user(&self, user: &str, password: &str) -> Result<Self, String> {
        let resp = self
            .http
            .post(format!("{}/v1/api/auth/login", self.url))
            .json(&serde_json::json!({"user": user, "password": password}))
            .send()
            .await
            .map_err(|e| e.to_string())?;
        if !resp.status().is_success() {
            return Err(format!("login of {user}: {}", resp.status()));
        }
        let login: LoginResponse = resp.json().await.map_err(|e| e.to_string())?;
        Ok(Self {
            http: self.http.clone(),
            url: self.url.clone(),
            token: login.access_token,
        })
    }

    async fn login(args: &Args) -> Result<Self, String> {
        let http = reqwest::Client::builder()
            .pool_max_idle_per_host(1024)
            .build()
            .map_err(|e| e.to_string())?;
        let resp = http
            .post(format!("{}/v1/api/auth/login", args.url))
            .json(&serde_json::json!({"user": args.user, "password": args.password}))
            .send()
            .await
            .map_err(|e| format!("login: {e}"))?;
        if !resp.status().is_success() {
            return Err(format!(
                "login failed: {} {}",
                resp.status(),
                resp.text().await.unwrap_or_default()
            ));
        }
        let login: LoginResponse = resp.json().await.map_err(|e| e.to_string())?;
        Ok(Self {
            http,
            url: args.url.clone(),
            token: login.access_token,
        })
    }

    async fn sql(
        &self,
        sql: String,
        params: Option<Vec<serde_json::Value>>,
    ) -> Result<SqlResponse, String> {
        let body = SqlRequest {
            sql,
            params,
            ..SqlRequest::default()
        };
        let mut request = self
            .http
            .post(format!("{}/v1/api/sql", self.url))
            .bearer_auth(&self.token)
            .json(&body);
        if let Some(level) = CONSISTENCY.get() {
            request = request.header("x-kalamdb-consistency", level);
        }
        let resp = request.send().await.map_err(|e| e.to_string())?;
        let status = resp.status();
        let body: SqlResponse = resp.json().await.map_err(|e| e.to_string())?;
        if !status.is_success() {
            return Err(format!("{status}: {:?}", body.error));
        }
        Ok(body)
    }
}

fn row_values(id: u64) -> String {
    // About 100 bytes per row.
    format!(
        "({id}, 'user-{id:08}', {}.5, 'payload for row {id:012} of the kalamdb bench ..........')",
        id % 1000
    )
}

/// Inserts the bench rows with ids `ids` into `ns.table`, 1,000 per request.
async fn load_rows(
    client: &Client,
    ns: &str,
    table: &str,
    ids: std::ops::Range<u64>,
) -> Result<(), String> {
    let mut id = ids.start;
    while id < ids.end {
        let end = (id + 1000).min(ids.end);
        let values: Vec<String> = (id..end).map(row_values).collect();
        client
            .sql(
                format!("INSERT INTO {ns}.{table} VALUES {}", values.join(", ")),
                None,
            )
            .await?;
        id = end;
    }
    Ok(())
}

/// (Re)creates `ns.table` with the bench's row shape; `kind` is SHARED, USER or STREAM.
/// `--storage`, set once at start.
static TABLE_STORAGE: std::sync::OnceLock<String> = std::sync::OnceLock::new();

/// `--consistency`, set once at start.
static CONSISTENCY: std::sync::OnceLock<String> = std::sync::OnceLock::new();

async fn create_table(client: &Client, ns: &str, table: &str, kind: &str) -> Result<(), String> {
    create_table_with(client, ns, table, kind, "").await
}

/// [`create_table`] with `extra` column definitions (`", doc JSON"`) after the bench columns.
async fn create_table_with(
    client: &Client,
    ns: &str,
    table: &str,
    kind: &str,
    extra: &str,
) -> Result<(), String> {
    client
        .sql(format!("CREATE NAMESPACE IF NOT EXISTS {ns}"), None)
        .await?;
    client
        .sql(format!("DROP TABLE IF EXISTS {ns}.{table}"), None)
        .await?;
    let with = match (kind, TABLE_STORAGE.get()) {
        ("STREAM", _) => " WITH (TTL_SECONDS = 3600)".to_string(),
        (_, Some(storage)) => format!(" WITH (STORAGE_ID = '{storage}')"),
        _ => String::new(),
    };
    let sql = format!(
        "CREATE {kind} TABLE {ns}.{table} (id BIGINT PRIMARY KEY, name TEXT NOT NULL, score DOUBLE, note TEXT{extra}){with}"
    );
    client.sql(sql, None).await?;
    Ok(())
}

/// Sends `sql` over and over (see [`drive`]); each request counts the rows it returned.
async fn drive_query(args: &Args, name: &str, client: &Client, sql: String) -> WorkloadResult {
    let c = client.clone();
    drive(args, name, move |_, _| {
        let (c, sql) = (c.clone(), sql.clone());
        async move {
            let r = c.sql(sql, None).await?;
            Ok(r.results.first().map(|r| r.row_count as u64).unwrap_or(0))
        }
    })
    .await
}

/// Runs `op(worker, iteration)` on `concurrency` workers: warm-up, then the measured window.
/// `op` returns how many rows the request carried.
async fn drive<F, Fut>(args: &Args, name: &str, op: F) -> WorkloadResult
where
    F: Fn(usize, u64) -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = Result<u64, String>> + Send,
{
    let op = Arc::new(op);
    let measuring = Arc::new(AtomicBool::new(false));
    let stop = Arc::new(AtomicBool::new(false));
    let requests = Arc::new(AtomicU64::new(0));
    let rows = Arc::new(AtomicU64::new(0));
    let errors = Arc::new(AtomicU64::new(0));
    let mut tasks = Vec::new();
    for w in 0..args.concurrency {
        let (op, measuring, stop, requests, rows, errors) = (
            op.clone(),
            measuring.clone(),
            stop.clone(),
            requests.clone(),
            rows.clone(),
            errors.clone(),
        );
        tasks.push(tokio::spawn(async move {
            let mut hist =
                Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).expect("histogram bounds");
            let mut i = 0u64;
            while !stop.load(Ordering::Relaxed) {
                let start = Instant::now();
                let result = op(w, i).await;
                let micros = start.elapsed().as_micros() as u64;
                i += 1;
                if !measuring.load(Ordering::Relaxed) {
                    continue;
                }
                match result {
                    Ok(n) => {
                        hist.saturating_record(micros.max(1));
                        requests.fetch_add(1, Ordering::Relaxed);
                        rows.fetch_add(n, Ordering::Relaxed);
                    }
                    Err(e) => {
                        if errors.fetch_add(1, Ordering::Relaxed) == 0 {
                            eprintln!("\nfirst error: {e}");
                        }
                    }
                }
            }
            hist
        }));
    }
    tokio::time::sleep(Duration::from_secs(args.warmup)).await;
    measuring.store(true, Ordering::Relaxed);
    let cpu_start = server_cpu(args);
    let start = Instant::now();
    let total = Duration::from_secs(args.duration);
    while start.elapsed() < total {
        tokio::time::sleep(Duration::from_millis(500)).await;
        let secs = start.elapsed().as_secs_f64();
        eprint!(
            "\r{name}: {:>5.1}s  {:>10.0} req/s  {:>10.0} rows/s  errors {}   ",
            secs,
            requests.load(Ordering::Relaxed) as f64 / secs,
            rows.load(Ordering::Relaxed) as f64 / secs,
            errors.load(Ordering::Relaxed)
        );
    }
    let elapsed = start.elapsed().as_secs_f64();
    let cpu_end = server_cpu(args);
    stop.store(true, Ordering::Relaxed);
    eprintln!();
    let mut hist = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).expect("histogram bounds");
    for t in tasks {
        if let Ok(h) = t.await {
            hist.add(h).expect("same bounds");
        }
    }
    let rows = rows.load(Ordering::Relaxed);
    let mut result = WorkloadResult::new(
        name,
        args.concurrency,
        elapsed,
        &hist,
        rows,
        errors.load(Ordering::Relaxed),
    );
    // Per row only when the requests carry rows (an ALTER carries none).
    if let (Some(a), Some(b), true) = (cpu_start, cpu_end, rows > 0) {
        result.server_cpu_us_per_row = Some((b - a) as f64 / rows as f64);
    }
    result
}

async fn insert_single(args: &Args, client: &Client) -> Result<WorkloadResult, String> {
    create_table(client, &args.namespace, "insert_single", "SHARED").await?;
    let (c, ns) = (client.clone(), args.namespace.clone());
    Ok(drive(args, "insert-single", move |w, i| {
        let (c, ns) = (c.clone(), ns.clone());
        async move {
            let id = (w as u64) << 40 | i;
            c.sql(
                format!("INSERT INTO {ns}.insert_single VALUES {}", row_values(id)),
                None,
            )
            .await
            .map(|_| 1)
        }
    })
    .await)
}

async fn insert_batch(args: &Args, client: &Client) -> Result<WorkloadResult, String> {
    create_table(client, &args.namespace, "insert_batch", "SHARED").await?;
    Ok(batch_inserts(args, client, "insert_batch", "insert-batch").await)
}

/// `--batch`-row inserts into the existing SHARED table `table`, measured as `name`.
async fn batch_inserts(args: &Args, client: &Client, table: &str, name: &str) -> WorkloadResult {
    let (c, ns, batch) = (client.clone(), args.namespace.clone(), args.batch as u64);
    let table = table.to_string();
    drive(args, name, move |w, i| {
        let (c, ns, table) = (c.clone(), ns.clone(), table.clone());
        async move {
            let base = ((w as u64) << 40) + i * batch;
            let values: Vec<String> = (base..base + batch).map(row_values).collect();
            c.sql(
                format!("INSERT INTO {ns}.{table} VALUES {}", values.join(", ")),
                None,
            )
            .await
            .map(|_| batch)
        }
    })
    .await
}

async fn point_select(args: &Args, client: &Client) -> Result<WorkloadResult, String> {
    let ns = args.namespace.clone();
    create_table(client, &ns, "point_select", "SHARED").await?;
    let load = Instant::now();
    load_rows(client, &ns, "point_select", 0..args.rows as u64).await?;
    eprintln!(
        "point-select: loaded {} rows in {:.1}s",
        args.rows,
        load.elapsed().as_secs_f64()
    );
    let (c, n) = (client.clone(), args.rows as u64);
    Ok(drive(args, "point-select", move |w, i| {
        let (c, ns) = (c.clone(), ns.clone());
        async move {
            // A cheap, well-spread pseudo-random key per request.
            let key = (i.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ (w as u64)) % n;
            point_lookup(&c, &ns, "point_select", key).await
        }
    })
    .await)
}

/// One primary-key SELECT of `key`, which must find its row.
async fn point_lookup(c: &Client, ns: &str, table: &str, key: u64) -> Result<u64, String> {
    let r = c
        .sql(
            format!("SELECT * FROM {ns}.{table} WHERE id = $1"),
            Some(vec![serde_json::json!(key)]),
        )
        .await?;
    match r.results.first().map(|r| r.row_count) {
        Some(1) => Ok(1),
        other => Err(format!("key {key}: expected one row, got {other:?}")),
    }
}

const BENCH_USER_PASSWORD: &str = "bench-user-pass-1";

/// Creates (if needed) and logs in `n` bench users.
async fn bench_users(client: &Client, n: usize, role: &str) -> Result<Vec<Client>, String> {
    let mut out = Vec::with_capacity(n);
    for i in 0..n {
        let name = format!("bench_{role}{i}");
        // "already exists" on a re-run is fine.
        let _ = client
            .sql(
                format!("CREATE USER {name} WITH PASSWORD '{BENCH_USER_PASSWORD}' ROLE '{role}'"),
                None,
            )
            .await;
        out.push(client.as_user(&name, BENCH_USER_PASSWORD).await?);
        if i % 100 == 99 {
            eprint!("\rusers ready: {}   ", i + 1);
        }
    }
    eprintln!();
    Ok(out)
}

/// Single-row inserts into a USER, STREAM or SHARED table, each request by one of many users
/// (service accounts for SHARED, which plain users may not write).
async fn per_user_insert(
    args: &Args,
    client: &Client,
    kind: &str,
) -> Result<WorkloadResult, String> {
    let ns = args.namespace.clone();
    let table = format!("{kind}_insert");
    create_table(client, &ns, &table, &kind.to_uppercase()).await?;
    // SHARED tables are written by services; USER and STREAM tables by plain users.
    let role = if kind == "shared" { "service" } else { "user" };
    let users = Arc::new(bench_users(client, args.users, role).await?);
    let conc = args.concurrency as u64;
    Ok(drive(args, &format!("{kind}-insert"), move |w, i| {
        let (users, ns, table) = (users.clone(), ns.clone(), table.clone());
        async move {
            let u = ((i * conc + w as u64) % users.len() as u64) as usize;
            let id = (w as u64) << 40 | i;
            users[u]
                .sql(
                    format!("INSERT INTO {ns}.{table} VALUES {}", row_values(id)),
                    None,
                )
                .await
                .map(|_| 1)
        }
    })
    .await)
}

/// `SELECT *` of one user's rows in a USER table holding `--rows` rows of `--users` users.
async fn user_select(args: &Args, client: &Client) -> Result<WorkloadResult, String> {
    let ns = args.namespace.clone();
    create_table(client, &ns, "user_select", "USER").await?;
    let users = Arc::new(bench_users(client, args.users, "user").await?);
    let per_user = (args.rows / args.users).max(1) as u64;
    let load = Instant::now();
    for (i, u) in users.iter().enumerate() {
        let values: Vec<String> = (0..per_user).map(row_values).collect();
        u.sql(
            format!("INSERT INTO {ns}.user_select VALUES {}", values.join(", ")),
            None,
        )
        .await?;
        if i % 500 == 499 {
            eprint!("\rloaded users: {}   ", i + 1);
        }
    }
    eprintln!(
        "\nuser-select: loaded {} rows for {} users in {:.1}s",
        per_user as usize * users.len(),
        users.len(),
        load.elapsed().as_secs_f64()
    );
    Ok(drive(args, "user-select", move |w, i| {
        let (users, ns) = (users.clone(), ns.clone());
        async move {
            let u =
                ((i.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ w as u64) % users.len() as u64) as usize;
            let r = users[u]
                .sql(format!("SELECT * FROM {ns}.user_select"), None)
                .await?;
            match r.results.first().map(|r| r.row_count as u64) {
                Some(n) if n == per_user => Ok(n),
                other => Err(format!("expected {per_user} rows, got {other:?}")),
            }
        }
    })
    .await)
}

#[tokio::main]
async fn main() {
    let args = Args::parse();
    if let Some(storage) = &args.storage {
        let _ = TABLE_STORAGE.set(storage.clone());
    }
    if let Some(level) = &args.consistency {
        let _ = CONSISTENCY.set(level.clone());
    }
    let client = match Client::login(&args).await {
        Ok(c) => c,
        Err(e) => {
            eprintln!("kalamdb-bench: {e}");
            std::process::exit(2);
        }
    };
    let rss_idle = args.server_pid.and_then(report::rss_mib);
    let workloads: Vec<&str> = match args.workload.as_str() {
        "all" => vec!["insert-single", "insert-batch", "point-select"],
        w => vec![w],
    };
    let mut results = Vec::new();
    for w in workloads {
        if matches!(
            w,
            "cold-query" | "flush-insert" | "view-query" | "scan-scale" | "system-tables"
        ) {
            let rs = match w {
                "cold-query" => cold::queries(&args, &client).await,
                "view-query" => schema::view_query(&args, &client).await,
                "scan-scale" => scan::scan_scale(&args, &client).await,
                "system-tables" => system::system_tables(&args, &client).await,
                _ => cold::inserts_while_flushing(&args, &client).await,
            };
            match rs {
                Ok(rs) => results.extend(rs),
                Err(e) => {
                    eprintln!("kalamdb-bench: {w}: {e}");
                    std::process::exit(1);
                }
            }
            continue;
        }
        let r = match w {
            "insert-single" => insert_single(&args, &client).await,
            "insert-batch" => insert_batch(&args, &client).await,
            "point-select" => point_select(&args, &client).await,
            "user-insert" => per_user_insert(&args, &client, "user").await,
            "stream-insert" => per_user_insert(&args, &client, "stream").await,
            "shared-insert" => per_user_insert(&args, &client, "shared").await,
            "live-latency" => live::shared_fanout(&args, &client, "live-latency", 1, 1).await,
            "live-fanout" => {
                let (sockets, subs) = (args.sockets, args.subs_per_socket);
                live::shared_fanout(&args, &client, "live-fanout", sockets, subs).await
            }
            "live-users" => live::per_user(&args, &client).await,
            "failover" => failover::failover(&args, &client).await,
            "user-select" => user_select(&args, &client).await,
            "flush" => cold::flush(&args, &client).await,
            "alter-add-column" => schema::alter_add_column(&args, &client).await,
            "health-under-load" => load::under_load(&args, &client, "health").await,
            "point-select-under-load" => load::under_load(&args, &client, "point-select").await,
            "tx-insert" => txn::tx_insert(&args, &client).await,
            "tx-transfer" => txn::tx_transfer(&args, &client).await,
            "topic-latency" => topics::latency(&args, &client).await,
            "topic-publish" => topics::publish(&args, &client).await,
            "topic-consume" => topics::consume(&args, &client, false).await,
            "topic-consume-flushed" => topics::consume(&args, &client, true).await,
            "topic-source-insert" => topics::source_insert(&args, &client).await,
            other => Err(format!("unknown workload {other}")),
        };
        match r {
            Ok(r) => results.push(r),
            Err(e) => {
                eprintln!("kalamdb-bench: {w}: {e}");
                std::process::exit(1);
            }
        }
    }
    let report = Report {
        command: std::env::args().collect::<Vec<_>>().join(" "),
        commit: report::git_commit(),
        machine: Machine::current(),
        server_rss_idle_mib: rss_idle,
        server_rss_end_mib: args.server_pid.and_then(report::rss_mib),
        results,
    };
    report.print();
    if let Some(path) = &args.json
        && let Err(e) = std::fs::write(
            path,
            serde_json::to_string_pretty(&report).expect("report serializes"),
        )
    {
        eprintln!("kalamdb-bench: cannot write {path}: {e}");
    }
}
