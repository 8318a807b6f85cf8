//! The operational system tables, one function per table, each row's cells in the order of
//! the table's columns: `system.stats`, `settings`, `server_logs`, `columns`, `datatypes`,
//! `manifest`, `job_nodes`, `transactions`, and `cluster` / `cluster_groups` (this node alone, until KalamDB
//! runs as a cluster). Column names and types are upstream KalamDB's, so its tools read them.

use crate::metrics::{Figure, counter, gauge};
use crate::providers::deps::ProviderDeps;
use crate::providers::system_rows::Rows;
use kalamdb_catalog::error::Result;
use kalamdb_catalog::value::Value;
use kalamdb_commons::KalamDataType as K;

/// The cluster id shown while this node runs alone.
const STANDALONE: &str = "standalone";

fn text(s: impl Into<String>) -> Value {
    Value::Text(s.into())
}

fn opt_text(s: Option<&str>) -> Value {
    s.map(text).unwrap_or(Value::Null)
}

fn opt_ts(t: Option<i64>) -> Value {
    t.map(Value::Timestamp).unwrap_or(Value::Null)
}

/// `system.stats`: one row per figure, the value as text.
pub(crate) fn stats_rows(deps: &ProviderDeps) -> Result<Rows> {
    let catalog = &deps.catalog;
    let live = deps
        .tables
        .change_listener()
        .map(|l| l.counts())
        .unwrap_or_default();
    let jobs = catalog.jobs()?;
    let running = |status: &str| jobs.iter().filter(|j| j.status == status).count();
    let tables = catalog.tables(None)?;
    let backend = deps.tables.backend();
    let hot_rows: u64 = tables
        .iter()
        .filter_map(|def| {
            let parts = kalamdb_catalog::partitions::TablePartitions::of(def);
            let part = match def.table_type {
                kalamdb_commons::TableType::Stream => &parts.log,
                _ => &parts.rows,
            };
            backend.estimated_keys(part)
        })
        .sum();
    let cache = deps.tables.cold().segment_cache();
    let manifests = deps.tables.cold().cached_manifests();
    let figures: Vec<(&str, String)> = vec![
        ("server_version", env!("CARGO_PKG_VERSION").to_string()),
        ("node_id", deps.node_id.to_string()),
        (
            "uptime_seconds",
            deps.started.elapsed().as_secs().to_string(),
        ),
        (
            "memory_rss_mb",
            rss_mib().map_or("unknown".into(), |m| m.to_string()),
        ),
        ("total_namespaces", catalog.namespaces()?.len().to_string()),
        ("total_tables", tables.len().to_string()),
        (
            "total_users",
            catalog
                .users()?
                .iter()
                .filter(|u| u.deleted_at.is_none())
                .count()
                .to_string(),
        ),
        ("total_storages", catalog.storages()?.len().to_string()),
        ("active_connections", live.connections.to_string()),
        (
            "connections_with_subscriptions",
            live.subscribed_connections.to_string(),
        ),
        ("active_subscriptions", live.subscriptions.to_string()),
        ("running_queries", deps.queries.list().len().to_string()),
        ("jobs_running", running("running").to_string()),
        ("jobs_failed", running("failed").to_string()),
        ("jobs_total", jobs.len().to_string()),
        (
            "open_transactions",
            deps.transactions.list().len().to_string(),
        ),
        ("total_topics", catalog.topics()?.len().to_string()),
        ("hot_rows_estimated", hot_rows.to_string()),
        ("cached_manifests", manifests.len().to_string()),
        (
            "cold_segments_cached_manifests",
            manifests
                .iter()
                .map(|m| m.manifest.segments.len())
                .sum::<usize>()
                .to_string(),
        ),
        ("segment_cache_bytes", cache.bytes.to_string()),
        ("segment_cache_capacity_bytes", cache.capacity.to_string()),
        ("segment_cache_segments", cache.segments.to_string()),
        ("segment_cache_hits", cache.hits.to_string()),
        ("segment_cache_misses", cache.misses.to_string()),
    ];
    let mut rows: Rows = figures
        .into_iter()
        .map(|(name, value)| vec![text(name), text(value)])
        .collect();
    // Then every sample of `GET /metrics`, named as there.
    let scraped = metric_figures(deps);
    rows.extend(
        deps.metrics
            .samples(&scraped)
            .into_iter()
            .map(|(name, value)| vec![text(name), text(value)]),
    );
    Ok(rows)
}

/// The figures read at scrape time.
pub(crate) fn metric_figures(deps: &ProviderDeps) -> Vec<Figure> {
    let engine = deps.tables.backend().engine_stats();
    let cache = deps.tables.cold().segment_cache();
    let live = deps
        .tables
        .change_listener()
        .map(|l| l.counts())
        .unwrap_or_default();
    let process = crate::metrics::ProcessStats::read();
    vec![
        gauge(
            "uptime_seconds",
            "Seconds since the engine opened",
            deps.started.elapsed().as_secs_f64(),
        ),
        gauge(
            "websocket_connections",
            "Open WebSocket connections",
            live.connections as f64,
        ),
        gauge(
            "live_subscriptions",
            "Live subscriptions",
            live.subscriptions as f64,
        ),
        gauge(
            "running_queries",
            "Requests running now",
            deps.queries.list().len() as f64,
        ),
        gauge(
            "open_transactions",
            "Open explicit transactions",
            deps.transactions.list().len() as f64,
        ),
        gauge(
            "rocksdb_memtable_bytes",
            "Bytes in RocksDB memtables",
            engine.memtable_bytes as f64,
        ),
        gauge(
            "rocksdb_pending_compaction_bytes",
            "Bytes RocksDB estimates compaction must rewrite",
            engine.pending_compaction_bytes as f64,
        ),
        gauge(
            "rocksdb_sst_bytes",
            "Bytes of live RocksDB files",
            engine.sst_bytes as f64,
        ),
        gauge(
            "rocksdb_wal_bytes",
            "Bytes of RocksDB write-ahead log files",
            engine.wal_bytes as f64,
        ),
        gauge(
            "rocksdb_writes_stopped",
            "1 while RocksDB stops writes (compaction debt)",
            f64::from(u8::from(engine.writes_stopped)),
        ),
        gauge(
            "rocksdb_delayed_write_rate",
            "Bytes/s RocksDB slows writes to (0: not delayed)",
            engine.delayed_write_rate as f64,
        ),
        gauge(
            "segment_cache_bytes",
            "Bytes of decoded Parquet segments cached",
            cache.bytes as f64,
        ),
        gauge(
            "segment_cache_segments",
            "Parquet segments cached",
            cache.segments as f64,
        ),
        counter(
            "segment_cache_hits",
            "Segment reads answered from the cache",
            cache.hits as f64,
        ),
        counter(
            "segment_cache_misses",
            "Segment reads that went to storage",
            cache.misses as f64,
        ),
        gauge(
            "process_resident_memory_bytes",
            "Resident memory of the server process",
            process.rss_bytes as f64,
        ),
        counter(
            "process_cpu_seconds",
            "CPU time of the server process (user + system)",
            process.cpu_seconds,
        ),
        gauge(
            "process_open_fds",
            "Open file descriptors of the server process",
            process.open_fds as f64,
        ),
    ]
}

/// This process's resident memory in MiB (Linux).
fn rss_mib() -> Option<u64> {
    let statm = std::fs::read_to_string("/proc/self/statm").ok()?;
    let pages: u64 = statm.split_whitespace().nth(1)?.parse().ok()?;
    // SAFETY: sysconf only reads a system constant.
    let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    Some(pages * u64::try_from(page).ok()? / (1024 * 1024))
}

/// The descriptions of `server.example.toml` by `(section, key)`: the comment lines above
/// each key.
fn descriptions() -> Vec<(String, String, String)> {
    const EXAMPLE: &str = include_str!("../../../../server.example.toml");
    let (mut section, mut comment, mut out) = (String::new(), Vec::new(), Vec::new());
    for line in EXAMPLE.lines().map(str::trim) {
        if let Some(c) = line.strip_prefix('#') {
            comment.push(c.trim().to_string());
        } else if let Some(s) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
            section = s.to_string();
            comment.clear();
        } else if let Some((key, _)) = line.split_once('=') {
            out.push((section.clone(), key.trim().to_string(), comment.join(" ")));
            comment.clear();
        } else {
            comment.clear();
        }
    }
    out
}

/// Whether a setting holds a secret (shown redacted).
fn is_secret(key: &str) -> bool {
    ["secret", "password", "credential", "token"]
        .iter()
        .any(|s| key.contains(s))
}

/// `system.settings`: the effective configuration, secrets redacted.
pub(crate) fn settings_rows(deps: &ProviderDeps) -> Result<Rows> {
    let described = descriptions();
    let settings = deps.settings.read();
    let mut rows = Vec::new();
    for (section, table) in settings.iter() {
        let Some(table) = table.as_table() else {
            continue;
        };
        for (key, value) in table {
            let shown = match value {
                toml::Value::String(s) if is_secret(key) && !s.is_empty() => "<redacted>".into(),
                toml::Value::String(s) => s.clone(),
                other => other.to_string(),
            };
            let description = described
                .iter()
                .find(|(s, k, _)| s == section && k == key)
                .map(|(_, _, d)| d.as_str());
            rows.push(vec![
                text(format!("{section}.{key}")),
                text(shown),
                opt_text(description),
                text(section.as_str()),
            ]);
        }
    }
    Ok(rows)
}

/// `system.server_logs`: the recent log lines of this process, oldest first.
pub(crate) fn server_logs_rows() -> Rows {
    crate::server_logs::recent()
        .into_iter()
        .map(|l| {
            vec![
                Value::Timestamp(l.timestamp),
                text(l.level),
                text(l.thread),
                text(l.target),
                l.line.map_or(Value::Null, |n| Value::I32(n as i32)),
                text(l.message),
                l.request_id.map_or(Value::Null, text),
            ]
        })
        .collect()
}

/// `system.columns`: the columns of the current version of every table.
pub(crate) fn columns_rows(deps: &ProviderDeps) -> Result<Rows> {
    let mut rows = Vec::new();
    for def in deps.catalog.tables(None)? {
        for col in &def.columns {
            rows.push(vec![
                text(def.namespace.as_str()),
                text(def.name.as_str()),
                Value::I32(def.version as i32),
                Value::I32(col.column_id as i32),
                text(col.name.as_str()),
                Value::Null,
                text(col.data_type.sql_name()),
                opt_text(col.default.as_ref().map(|d| d.sql()).as_deref()),
                Value::I32(col.ordinal as i32),
                Value::Bool(col.nullable),
                Value::Bool(col.primary_key),
                if col.primary_key {
                    Value::I32(1)
                } else {
                    Value::Null
                },
            ]);
        }
    }
    Ok(rows)
}

/// `system.datatypes`: each column type, its SQL name and its Arrow type.
pub(crate) fn datatypes_rows() -> Rows {
    let types: [(K, &str); 17] = [
        (K::Boolean, "true or false"),
        (K::SmallInt, "16-bit integer"),
        (K::Int, "32-bit integer"),
        (K::BigInt, "64-bit integer"),
        (K::Float, "32-bit floating point"),
        (K::Double, "64-bit floating point"),
        (K::Text, "UTF-8 text"),
        (K::Timestamp, "instant, microseconds since the epoch (UTC)"),
        (K::Date, "calendar date"),
        (
            K::DateTime,
            "instant with its time zone offset, microseconds",
        ),
        (K::Time, "time of day, microseconds"),
        (K::Json, "JSON document, stored as text"),
        (K::Bytes, "binary data"),
        (K::Uuid, "UUID, 16 bytes"),
        (K::File, "reference to a stored file"),
        (
            K::Decimal {
                precision: 38,
                scale: 10,
            },
            "fixed-point number DECIMAL(precision, scale)",
        ),
        (
            K::Embedding(3),
            "vector of 32-bit floats EMBEDDING(dimension)",
        ),
    ];
    types
        .into_iter()
        .map(|(t, description)| {
            let kalam = format!("{t:?}");
            let kalam = kalam.split([' ', '(', '{']).next().unwrap_or_default();
            vec![
                text(kalamdb_catalog::types::to_arrow(&t).to_string()),
                text(kalam),
                text(t.sql_name()),
                text(description),
            ]
        })
        .collect()
}

/// `system.manifest`: the scope manifests held in memory.
pub(crate) fn manifest_rows(deps: &ProviderDeps) -> Rows {
    deps.tables
        .cold()
        .cached_manifests()
        .into_iter()
        .map(|m| {
            vec![
                text(m.key),
                text(m.owner.namespace),
                text(m.owner.table),
                text(m.owner.scope),
                text(format!(
                    "v{}-{}",
                    m.manifest.version,
                    m.manifest.segments.len()
                )),
                Value::Null,
                Value::Null,
                Value::Bool(true),
                text("in_sync"),
                text(serde_json::to_string(&m.manifest).unwrap_or_default()),
            ]
        })
        .collect()
}

/// `system.topics`: every topic, its routes as JSON.
pub(crate) fn topics_rows(deps: &ProviderDeps) -> Result<Rows> {
    Ok(deps
        .catalog
        .topics()?
        .into_iter()
        .map(|t| {
            vec![
                text(&t.topic_id),
                text(t.namespace_id),
                text(t.name),
                Value::Null,
                Value::I32(t.partitions as i32),
                t.retention_seconds
                    .map_or(Value::Null, |v| Value::I64(v as i64)),
                t.retention_max_bytes
                    .map_or(Value::Null, |v| Value::I64(v as i64)),
                text(serde_json::to_string(&t.routes).unwrap_or_default()),
                Value::Timestamp(t.created_at),
                Value::Timestamp(t.updated_at),
                text(t.storage_id),
            ]
        })
        .collect())
}

/// `system.topic_offsets`: consumer groups' committed offsets.
pub(crate) fn topic_offsets_rows(deps: &ProviderDeps) -> Result<Rows> {
    Ok(deps
        .catalog
        .topic_offsets(None)?
        .into_iter()
        .map(|o| {
            vec![
                text(o.topic_id),
                text(o.group_id),
                Value::I32(o.partition_id as i32),
                Value::I64(o.last_acked_offset as i64),
                Value::Timestamp(o.updated_at),
            ]
        })
        .collect())
}

/// `system.transactions`: the open transactions.
pub(crate) fn transactions_rows(deps: &ProviderDeps) -> Rows {
    deps.transactions
        .list()
        .into_iter()
        .map(|t| {
            let touched = if t.tables.is_empty() {
                0
            } else {
                t.tables.split(',').count() as i32
            };
            vec![
                text(t.id),
                text(t.owner),
                text(t.origin),
                text(t.state),
                Value::Timestamp(t.started_at),
                Value::I64(t.age_ms),
                Value::I64(t.idle_ms),
                Value::I64(t.statements),
                Value::I64(t.staged_rows),
                Value::I64(t.staged_bytes),
                Value::I32(touched),
                text(t.tables),
                Value::I64(t.snapshot_seq),
            ]
        })
        .collect()
}

/// `system.job_nodes`: where each job ran (this node).
pub(crate) fn job_nodes_rows(deps: &ProviderDeps) -> Result<Rows> {
    Ok(deps
        .catalog
        .jobs()?
        .into_iter()
        .map(|j| {
            let updated = j.finished_at.or(j.started_at).unwrap_or(j.created_at);
            vec![
                text(j.job_id),
                text(deps.node_id.as_str()),
                text(j.status.as_str()),
                if j.status == "failed" {
                    opt_text(j.message.as_deref())
                } else {
                    Value::Null
                },
                Value::Timestamp(j.created_at),
                opt_ts(j.started_at),
                opt_ts(j.finished_at),
                Value::Timestamp(updated),
            ]
        })
        .collect())
}

/// `system.cluster`: this node, leader of itself.
pub(crate) fn cluster_rows(deps: &ProviderDeps) -> Rows {
    if let Some(view) = deps.cluster.get() {
        return member_rows(deps, &**view);
    }
    let settings = deps.settings.read();
    let server = settings.get("server").and_then(|s| s.as_table());
    let api_addr = server.map(|s| {
        let host = s
            .get("host")
            .and_then(|h| h.as_str())
            .unwrap_or("127.0.0.1");
        let port = s.get("port").and_then(|p| p.as_integer()).unwrap_or(0);
        format!("{host}:{port}")
    });
    vec![vec![
        text(STANDALONE),
        text(deps.node_id.as_str()),
        text("leader"),
        text("active"),
        Value::Null,
        opt_text(api_addr.as_deref()),
        Value::Bool(true),
        Value::Bool(true),
        Value::I32(0),
        Value::I32(0),
        Value::Null,
        Value::Null,
        Value::Null,
        Value::Null,
        Value::Null,
        Value::Null,
        opt_text(hostname().as_deref()),
        text(env!("CARGO_PKG_VERSION")),
        rss_mib().map_or(Value::Null, |m| Value::I64(m as i64)),
        text(std::env::consts::OS),
        text(std::env::consts::ARCH),
        Value::I64(deps.started.elapsed().as_secs() as i64),
    ]]
}

/// `system.cluster` of a cluster member: a row per member, as this node sees it.
fn member_rows(deps: &ProviderDeps, view: &dyn crate::cluster_view::ClusterView) -> Rows {
    let opt = |v: Option<u64>| v.map_or(Value::Null, |v| Value::I64(v as i64));
    let groups = view.groups().len() as i32;
    view.members()
        .into_iter()
        .map(|m| {
            let own = |v: Value| if m.is_self { v } else { Value::Null };
            vec![
                text(view.cluster_id()),
                text(m.node_id.to_string()),
                text(m.role.clone()),
                text(m.status),
                text(m.rpc_addr),
                text(m.api_addr),
                Value::Bool(m.is_self),
                Value::Bool(m.role == "leader"),
                Value::I32(m.groups_leading as i32),
                Value::I32(groups),
                opt(m.current_term),
                opt(m.last_applied),
                opt(m.leader_last_log),
                opt(m.snapshot_index),
                Value::Null,
                opt(m.lag),
                own(opt_text(hostname().as_deref())),
                text(env!("CARGO_PKG_VERSION")),
                own(rss_mib().map_or(Value::Null, |m| Value::I64(m as i64))),
                own(text(std::env::consts::OS)),
                own(text(std::env::consts::ARCH)),
                own(Value::I64(deps.started.elapsed().as_secs() as i64)),
            ]
        })
        .collect()
}

/// `system.cluster_groups`: this node's groups, or the one group a lone node is.
pub(crate) fn cluster_groups_rows(deps: &ProviderDeps) -> Rows {
    if let Some(view) = deps.cluster.get() {
        let opt = |v: Option<u64>| v.map_or(Value::Null, |v| Value::I64(v as i64));
        let node = view.node_id().to_string();
        return view
            .groups()
            .into_iter()
            .map(|g| {
                vec![
                    text(g.group.to_string()),
                    text(view.cluster_id()),
                    text(node.clone()),
                    text(g.kind),
                    Value::I64(g.term as i64),
                    opt_text(g.vote.map(|v| v.to_string()).as_deref()),
                    opt(g.last_log),
                    opt(g.applied),
                    opt(g.snapshot),
                    opt(g.purged),
                    opt(g.committed),
                    text(g.state),
                    opt_text(g.leader.map(|v| v.to_string()).as_deref()),
                    opt(g.millis_since_quorum_ack),
                ]
            })
            .collect();
    }
    vec![vec![
        text(STANDALONE),
        text(STANDALONE),
        text(deps.node_id.as_str()),
        text(STANDALONE),
        Value::Null,
        Value::Null,
        Value::Null,
        Value::Null,
        Value::Null,
        Value::Null,
        Value::Null,
        text("leader"),
        text(deps.node_id.as_str()),
        Value::Null,
    ]]
}

fn hostname() -> Option<String> {
    let name = std::fs::read_to_string("/proc/sys/kernel/hostname").ok()?;
    Some(name.trim().to_string()).filter(|n| !n.is_empty())
}
