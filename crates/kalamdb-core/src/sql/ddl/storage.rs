//! Storages and the jobs that move table data into them: `CREATE|DROP STORAGE`,
//! `STORAGE CHECK`, `SHOW STORAGES`, `STORAGE FLUSH|COMPACT TABLE|ALL` (including the flush of
//! `system.audit_log`), and [`StorageJob`] / [`run_storage_job`], which the background
//! maintenance runs too.

use super::{resolve, table_output};
use crate::access;
use crate::app_context::AppContext;
use crate::providers::system::SystemTable;
use crate::sql::parse::TableRef;
use crate::sql::session::{ExecCtx, Output};
use kalamdb_catalog::error::{KalamError, Result};
use kalamdb_catalog::jobs::{JobOutcome, JobReport};
use kalamdb_catalog::schema_registry::CachedTable;
use kalamdb_catalog::value::Value;
use kalamdb_commons::ids::validate_identifier;
use kalamdb_commons::{KalamDataType as K, NamespaceId, TableType};
use std::sync::Arc;

/// `SHOW STORAGES`: the rows and columns of `system.storages` (upstream's shape, `local`
/// first, credentials redacted), for every user.
pub fn show_storages(app: &AppContext) -> Result<Output> {
    system_table_output(app, SystemTable::Storages)
}

/// `SHOW MANIFEST [CACHE]`: the rows of `system.manifest` (dba/system, as the table).
pub fn show_manifest(app: &AppContext, ctx: &ExecCtx) -> Result<Output> {
    access::check_system_read(&ctx.identity)?;
    system_table_output(app, SystemTable::Manifest)
}

/// The current rows of a system table as a statement's result.
fn system_table_output(app: &AppContext, table: SystemTable) -> Result<Output> {
    Ok(Output::Rows {
        schema: table.schema(),
        batches: table.batches(app.provider_deps())?,
        memory: None,
    })
}

/// Which storage job a statement runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum StorageJob {
    /// `flush`
    Flush,
    /// `compact`
    Compact,
}

/// Runs `kind` on `table` as a recorded job; returns the line for the reply.
pub(crate) async fn run_storage_job(
    app: &AppContext,
    table: &Arc<CachedTable>,
    kind: StorageJob,
    trigger: &str,
    by: &str,
    attempt: u32,
) -> Result<String> {
    let target = table.def.table_id().to_string();
    let job_type = match kind {
        StorageJob::Flush => "flush",
        StorageJob::Compact => "compact",
    };
    let outcome = app
        .jobs()
        .run(job_type, &target, trigger, by, attempt, |cancel| {
            let target = target.clone();
            async move {
                Ok(match kind {
                    StorageJob::Flush => {
                        let s = app.tables().flush_table(table, &cancel).await?;
                        let elsewhere = match s.elsewhere {
                            0 => String::new(),
                            n => format!(
                                " ({n} scope(s) belong to groups other cluster members lead: \
                                 they flush there)"
                            ),
                        };
                        JobReport {
                            rows: s.rows,
                            bytes: s.bytes,
                            message: format!(
                                "Flushed {} row(s) of {target} into {} segment(s), {} \
                                 bytes{elsewhere}",
                                s.rows, s.segments, s.bytes
                            ),
                        }
                    }
                    StorageJob::Compact => {
                        let (before, after) = app.tables().compact_table(table, &cancel).await?;
                        JobReport {
                            rows: 0,
                            bytes: 0,
                            message: format!(
                                "Compacted {target}: {before} segment(s) into {after}"
                            ),
                        }
                    }
                })
            }
        })
        .await?;
    Ok(job_line(outcome, job_type, &target))
}

/// The reply line of a job a statement ran: what it did, then `Job ID: <id>`, the form
/// upstream's clients and scripts read the job id from.
pub(crate) fn job_line(outcome: JobOutcome, job_type: &str, target: &str) -> String {
    match outcome {
        JobOutcome::Ran(job) => format!(
            "{}{}. Job ID: {}",
            job.message.unwrap_or_default(),
            if job.status == "cancelled" {
                " (cancelled)"
            } else {
                ""
            },
            job.job_id,
        ),
        JobOutcome::AlreadyRunning(id) => {
            format!("A {job_type} of {target} is already running. Job ID: {id}")
        }
    }
}

/// The table a `STORAGE … TABLE` statement names (service, dba, system).
fn storage_target(app: &AppContext, ctx: &ExecCtx, t: &TableRef) -> Result<Arc<CachedTable>> {
    access::check_storage_maintenance(&ctx.identity)?;
    let id = resolve(ctx, t);
    let table = app
        .schema_registry()
        .get(&id)?
        .ok_or_else(|| KalamError::NotFound {
            kind: "Table",
            name: id.to_string(),
        })?;
    if table.def.table_type == TableType::Stream {
        return Err(KalamError::InvalidSql(format!(
            "'{id}' is a STREAM table: its rows expire by TTL and are never flushed or compacted"
        )));
    }
    Ok(table)
}

/// The tables a `STORAGE … ALL [IN ns]` statement covers (service, dba, system).
fn storage_targets(
    app: &AppContext,
    ctx: &ExecCtx,
    ns: Option<&str>,
) -> Result<Vec<Arc<CachedTable>>> {
    access::check_storage_maintenance(&ctx.identity)?;
    let ns = ns.map(NamespaceId::new);
    if let Some(ns) = &ns
        && app.catalog().namespace(ns)?.is_none()
    {
        return Err(KalamError::NotFound {
            kind: "Namespace",
            name: ns.to_string(),
        });
    }
    let mut tables = Vec::new();
    for def in app.catalog().tables(ns.as_ref())? {
        if def.table_type != TableType::Stream {
            tables.extend(app.schema_registry().get(&def.table_id())?);
        }
    }
    Ok(tables)
}

/// `STORAGE FLUSH TABLE ns.t`: writes every scope's hot rows to Parquet.
pub async fn flush_table(app: &AppContext, ctx: &ExecCtx, t: &TableRef) -> Result<Output> {
    let id = resolve(ctx, t);
    if id.namespace.as_str() == "system" {
        return flush_system_table(app, ctx, id.table.as_str()).await;
    }
    let table = storage_target(app, ctx, t)?;
    storage_jobs(app, ctx, &[table], StorageJob::Flush).await
}

/// `STORAGE FLUSH TABLE system.audit_log` (dba/system); see [`crate::providers::flushed_audit`].
async fn flush_system_table(app: &AppContext, ctx: &ExecCtx, name: &str) -> Result<Output> {
    access::check_admin(&ctx.identity, "flush system tables")?;
    if !name.eq_ignore_ascii_case("audit_log") {
        return Err(KalamError::InvalidInput(format!(
            "system.{name} is not flushed: only system.audit_log grows without bound; the other \
             system tables are small catalog records"
        )));
    }
    let by = ctx.identity.user_id.as_str();
    let outcome = app
        .jobs()
        .run("flush", "system.audit_log", "manual", by, 1, |_| async {
            let _files = app.tables().file_changes().await;
            let files = app.tables().cold().files("local")?;
            let (rows, bytes) = app
                .system_cold()
                .flush_audit(&files, app.catalog(), app.seq())
                .await?;
            Ok(JobReport {
                rows,
                bytes,
                message: format!(
                    "Flushed {rows} row(s) of system.audit_log into {} segment(s), {bytes} bytes",
                    u64::from(rows > 0)
                ),
            })
        })
        .await?;
    Ok(Output::Message(job_line(
        outcome,
        "flush",
        "system.audit_log",
    )))
}

/// `BACKUP DATABASE TO 'folder'` (dba/system), as a `backup` job: see [`crate::backup`].
pub async fn backup_database(
    app: &AppContext,
    ctx: &ExecCtx,
    target: &crate::backup::BackupTarget,
) -> Result<Output> {
    use crate::backup::BackupTarget;
    access::check_admin(&ctx.identity, "back the database up")?;
    match target {
        BackupTarget::Folder(dir) if dir.as_os_str().is_empty() => {
            return Err(KalamError::InvalidInput("BACKUP needs a folder".into()));
        }
        BackupTarget::Folder(_) => {}
        BackupTarget::Storage { storage_id, path } => {
            if app.catalog().storage(storage_id)?.is_none() {
                return Err(KalamError::NotFound {
                    kind: "Storage",
                    name: storage_id.clone(),
                });
            }
            let segment_ok = |p: &str| {
                !p.is_empty()
                    && p != "."
                    && p != ".."
                    && p.chars()
                        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
            };
            if !path.split('/').all(segment_ok) {
                return Err(KalamError::InvalidInput(format!(
                    "PATH '{path}' must be a relative folder inside the storage: names of \
                     letters, digits, '.', '_' and '-' separated by single '/'"
                )));
            }
            let users = storage_users(app, storage_id)?;
            if !users.is_empty() {
                return Err(KalamError::InvalidInput(format!(
                    "storage '{storage_id}' holds {}: back up into a storage of its own",
                    users.join(", ")
                )));
            }
        }
    }
    let by = ctx.identity.user_id.as_str();
    let shown = target.to_string();
    let outcome = app
        .jobs()
        .run("backup", &shown, "manual", by, 1, |_| async {
            let report = crate::backup::backup(app, target).await?;
            Ok(JobReport {
                rows: report.files,
                bytes: report.bytes,
                message: format!(
                    "Backup written to {shown}: {} file(s), {} bytes",
                    report.files, report.bytes
                ),
            })
        })
        .await?;
    Ok(Output::Message(job_line(outcome, "backup", &shown)))
}

/// `EXPORT USER DATA [FOR USER 'u']`: the caller's rows (an admin: any user's) of every USER
/// table, as an `export_user` job; see [`crate::sql::export`].
pub async fn export_user_data(
    app: &AppContext,
    ctx: &ExecCtx,
    user: Option<String>,
) -> Result<Output> {
    let target = match user {
        Some(u) if u != ctx.identity.user_id.as_str() => {
            access::check_admin(&ctx.identity, "export another user's data")?;
            kalamdb_commons::UserId::parse(&u)
                .map_err(|e| KalamError::InvalidInput(e.to_string()))?
        }
        _ => ctx.identity.user_id.clone(),
    };
    crate::sql::export::remove_expired(app, crate::sql::export::EXPORT_TTL_SECS);
    let by = ctx.identity.user_id.as_str();
    let outcome = app
        .jobs()
        .run("export_user", target.as_str(), "manual", by, 1, |_| async {
            let info = crate::sql::export::export_user(app, &target).await?;
            let rows = info.tables.iter().map(|(_, n)| n).sum();
            Ok(JobReport {
                rows,
                bytes: 0,
                message: format!(
                    "Export {} of {rows} row(s) in {} table(s) ready at GET /v1/api/exports/{} \
                     for {} hours",
                    info.export_id,
                    info.tables.len(),
                    info.export_id,
                    crate::sql::export::EXPORT_TTL_SECS / 3600
                ),
            })
        })
        .await?;
    Ok(Output::Message(job_line(
        outcome,
        "export_user",
        target.as_str(),
    )))
}

/// `STORAGE FLUSH ALL [IN ns]`: flushes every USER and SHARED table (of one namespace).
pub async fn flush_all(app: &AppContext, ctx: &ExecCtx, ns: Option<&str>) -> Result<Output> {
    let tables = storage_targets(app, ctx, ns)?;
    storage_jobs(app, ctx, &tables, StorageJob::Flush).await
}

/// `STORAGE COMPACT TABLE ns.t`: merges each scope's segments into one.
pub async fn compact_table(app: &AppContext, ctx: &ExecCtx, t: &TableRef) -> Result<Output> {
    let table = storage_target(app, ctx, t)?;
    storage_jobs(app, ctx, &[table], StorageJob::Compact).await
}

/// `STORAGE COMPACT ALL [IN ns]`.
pub async fn compact_all(app: &AppContext, ctx: &ExecCtx, ns: Option<&str>) -> Result<Output> {
    let tables = storage_targets(app, ctx, ns)?;
    storage_jobs(app, ctx, &tables, StorageJob::Compact).await
}

/// Runs one job per table, in turn; the reply has a line per table. On a cluster member the
/// other members then run the same jobs on the scopes whose groups they lead (a flush and a
/// compaction run on a scope's leader, docs/cluster.md §7), with a line per member and table.
async fn storage_jobs(
    app: &AppContext,
    ctx: &ExecCtx,
    tables: &[Arc<CachedTable>],
    kind: StorageJob,
) -> Result<Output> {
    let by = ctx.identity.user_id.as_str();
    let mut lines = storage_jobs_here(app, tables, kind, "manual", by).await?;
    if let Some(view) = app.cluster_view() {
        let job = MemberJob {
            flush: kind == StorageJob::Flush,
            tables: tables
                .iter()
                .map(|t| t.def.table_id().to_string())
                .collect(),
            by: by.to_string(),
            marks: view.applied(),
        };
        let body = serde_json::to_vec(&job)
            .map_err(|e| KalamError::Internal(format!("encoding a member job: {e}")))?;
        for (node, answer) in view
            .call_others(STORAGE_JOB_CALL, body, MEMBER_JOB_TIMEOUT)
            .await
        {
            match answer {
                Ok(reply) => lines.extend(
                    String::from_utf8_lossy(&reply)
                        .lines()
                        .map(|line| format!("Node {node}: {line}")),
                ),
                Err(e) => lines.push(format!("Node {node}: failed: {e}")),
            }
        }
    }
    if lines.is_empty() {
        lines.push("No tables".into());
    }
    Ok(Output::Message(lines.join("\n")))
}

/// The engine call that runs a storage job on another cluster member ([`MemberJob`]).
pub const STORAGE_JOB_CALL: &str = "storage-job";

/// How long a member's part of a storage job may take.
const MEMBER_JOB_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(3600);

/// A storage job a cluster member asks another to run on the scopes it leads.
#[derive(Debug, serde::Serialize, serde::Deserialize)]
struct MemberJob {
    /// A flush (else a compaction).
    flush: bool,
    /// The tables, `namespace.table`.
    tables: Vec<String>,
    /// Who asked.
    by: String,
    /// What the asking member had applied: a member waits until it applied as much (a
    /// moment), so it knows the tables it is asked about.
    #[serde(default)]
    marks: Vec<(u64, u64)>,
}

/// Runs the storage job another member asked for ([`STORAGE_JOB_CALL`]) on this node's
/// scopes; answers its reply lines.
pub async fn member_storage_job(app: &AppContext, body: &[u8]) -> Result<String> {
    let job: MemberJob = serde_json::from_slice(body)
        .map_err(|e| KalamError::InvalidInput(format!("a member job does not decode: {e}")))?;
    if let Some(view) = app.cluster_view() {
        view.wait_applied(&job.marks, std::time::Duration::from_secs(5))
            .await;
    }
    let mut tables = Vec::with_capacity(job.tables.len());
    for name in &job.tables {
        let id = name
            .split_once('.')
            .map(|(ns, t)| {
                kalamdb_commons::TableId::new(
                    NamespaceId::new(ns),
                    kalamdb_commons::TableName::new(t),
                )
            })
            .ok_or_else(|| KalamError::InvalidInput(format!("'{name}' is not ns.table")))?;
        // One dropped since: nothing of it to do here.
        tables.extend(app.schema_registry().get(&id)?);
    }
    let kind = if job.flush {
        StorageJob::Flush
    } else {
        StorageJob::Compact
    };
    Ok(storage_jobs_here(app, &tables, kind, "member", &job.by)
        .await?
        .join("\n"))
}

/// Runs one job per table on this node, in turn; a line per table.
async fn storage_jobs_here(
    app: &AppContext,
    tables: &[Arc<CachedTable>],
    kind: StorageJob,
    trigger: &str,
    by: &str,
) -> Result<Vec<String>> {
    let mut lines = Vec::with_capacity(tables.len());
    for table in tables {
        if kind == StorageJob::Flush {
            app.tables().flushes().forget(&table.def.table_id());
        }
        match run_storage_job(app, table, kind, trigger, by, 1).await {
            Ok(line) => lines.push(line),
            // Dropped while the statement ran (another table of an ALL may still be done).
            Err(KalamError::NotFound { kind: "Table", .. }) if tables.len() > 1 => {
                lines.push(format!(
                    "Table '{}' was dropped meanwhile; skipped",
                    table.def.table_id()
                ))
            }
            // A cluster table on a node's own folder (of an ALL): skipped, with why.
            Err(e @ KalamError::Unsupported(_)) if tables.len() > 1 => {
                lines.push(format!("Skipped: {e}"))
            }
            Err(e) => return Err(e),
        }
    }
    Ok(lines)
}

/// `CREATE STORAGE`: registers a filesystem or S3 storage after a write/read/list/delete probe
/// of it succeeds (dba/system).
pub async fn create_storage(
    app: &AppContext,
    ctx: &ExecCtx,
    id: &str,
    storage_type: &str,
    options: Vec<(String, String)>,
) -> Result<Output> {
    access::check_admin(&ctx.identity, "create storages")?;
    validate_identifier("storage", id).map_err(|e| KalamError::InvalidSql(e.to_string()))?;
    if app.catalog().storage(id)?.is_some() {
        return Err(KalamError::AlreadyExists {
            kind: "Storage",
            name: id.to_string(),
        });
    }
    let now = chrono::Utc::now().timestamp_micros();
    let record = kalamdb_catalog::storages::record_from_options(id, storage_type, options, now)?;
    app.catalog().put_storage(&record)?;
    // Probe before keeping it: a storage nobody can write to is refused.
    let probe = app
        .tables()
        .cold()
        .probe(id, &app.seq().next_id().to_string())
        .await;
    let failed = match &probe {
        Ok(p) if p.error.is_none() => None,
        Ok(p) => p.error.clone(),
        Err(e) => Some(e.to_string()),
    };
    if let Some(why) = failed {
        app.tables().cold().forget_storage(id);
        app.catalog().delete_storage(id)?;
        return Err(KalamError::InvalidInput(format!(
            "Storage '{id}' failed its check: {why}"
        )));
    }
    Ok(Output::Message(format!("Storage '{id}' created")))
}

/// `DROP STORAGE [IF EXISTS] id`: refused for `local` and while a table uses it.
pub fn drop_storage(app: &AppContext, ctx: &ExecCtx, id: &str, if_exists: bool) -> Result<Output> {
    access::check_admin(&ctx.identity, "drop storages")?;
    if id == "local" {
        return Err(KalamError::PermissionDenied(
            "The built-in storage 'local' cannot be dropped".into(),
        ));
    }
    if app.catalog().storage(id)?.is_none() {
        return if if_exists {
            Ok(Output::Message(format!("Storage '{id}' does not exist")))
        } else {
            Err(KalamError::NotFound {
                kind: "Storage",
                name: id.to_string(),
            })
        };
    }
    let users = storage_users(app, id)?;
    if !users.is_empty() {
        return Err(KalamError::Constraint(format!(
            "Storage '{id}' is used by {} table(s) or topic(s): {}",
            users.len(),
            users.join(", ")
        )));
    }
    app.catalog().delete_storage(id)?;
    app.tables().cold().forget_storage(id);
    Ok(Output::Message(format!("Storage '{id}' dropped")))
}

/// The tables and topics whose files are in storage `id`.
fn storage_users(app: &AppContext, id: &str) -> Result<Vec<String>> {
    let mut users: Vec<String> = app
        .catalog()
        .tables(None)?
        .into_iter()
        .filter(|d| d.storage_id.as_str() == id)
        .map(|d| d.table_id().to_string())
        .collect();
    users.extend(
        app.catalog()
            .topics()?
            .into_iter()
            .filter(|t| t.storage_id == id)
            .map(|t| format!("topic {}", t.topic_id)),
    );
    Ok(users)
}

/// `STORAGE CHECK id [EXTENDED]`: a write/read/list/delete probe (dba/system), in upstream's
/// row shape: `status` is `healthy` when every step worked, `degraded` when some did,
/// `unreachable` when none did. EXTENDED adds the size of a filesystem storage's volume.
pub async fn storage_check(
    app: &AppContext,
    ctx: &ExecCtx,
    id: &str,
    extended: bool,
) -> Result<Output> {
    access::check_admin(&ctx.identity, "check storages")?;
    let p = app
        .tables()
        .cold()
        .probe(id, &app.seq().next_id().to_string())
        .await?;
    let steps = [p.writable, p.readable, p.listable, p.deletable];
    let status = match steps.iter().filter(|ok| **ok).count() {
        4 => "healthy",
        0 => "unreachable",
        _ => "degraded",
    };
    let (total, used) = match extended {
        true => volume_bytes(app, id)?,
        false => (None, None),
    };
    let bytes = |b: Option<u64>| b.map_or(Value::Null, |b| Value::I64(b as i64));
    table_output(
        &[
            ("storage_id", K::Text, false),
            ("status", K::Text, false),
            ("writable", K::Boolean, false),
            ("readable", K::Boolean, false),
            ("listable", K::Boolean, false),
            ("deletable", K::Boolean, false),
            ("latency_ms", K::Double, false),
            ("total_bytes", K::BigInt, true),
            ("used_bytes", K::BigInt, true),
            ("error", K::Text, true),
            ("tested_at", K::Timestamp, false),
        ],
        vec![vec![
            Value::Text(id.to_string()),
            Value::Text(status.into()),
            Value::Bool(p.writable),
            Value::Bool(p.readable),
            Value::Bool(p.listable),
            Value::Bool(p.deletable),
            Value::F64(p.latency_ms),
            bytes(total),
            bytes(used),
            p.error.map(Value::Text).unwrap_or(Value::Null),
            Value::Timestamp(chrono::Utc::now().timestamp_micros()),
        ]],
    )
}

/// Total and used bytes of the volume holding a filesystem storage (`None` for object
/// stores, which have no such figure).
fn volume_bytes(app: &AppContext, id: &str) -> Result<(Option<u64>, Option<u64>)> {
    let Some(storage) = app.catalog().storage(id)? else {
        return Ok((None, None));
    };
    if storage.storage_type != "filesystem" {
        return Ok((None, None));
    }
    let dir = std::path::Path::new(&app.config().storage.data_path).join(&storage.base_directory);
    let Ok(path) = std::ffi::CString::new(dir.to_string_lossy().as_bytes()) else {
        return Ok((None, None));
    };
    let mut stat: libc::statvfs = unsafe { std::mem::zeroed() };
    // SAFETY: `path` is a NUL-terminated string and `stat` a valid, writable statvfs.
    if unsafe { libc::statvfs(path.as_ptr(), &mut stat) } != 0 {
        return Ok((None, None));
    }
    let unit = stat.f_frsize as u64;
    let total = stat.f_blocks as u64 * unit;
    let free = stat.f_bfree as u64 * unit;
    Ok((Some(total), Some(total.saturating_sub(free))))
}
