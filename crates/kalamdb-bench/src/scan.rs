//! `scan-scale`: reads on a large SHARED table (the "streaming bounded-memory scans" issue).
//!
//! The table holds `--rows` rows of about 60 bytes, `(id, name, score, note)`, with 1,000
//! distinct names for the GROUP BY. Rows are loaded by two clients sending 5,000-row
//! multi-VALUES inserts.
//!
//! - HOT phase: `{ns}.scan_hot`, every row still in the hot store (no flush).
//! - COLD phase: `{ns}.scan_hot` dropped, then `{ns}.scan_cold` loaded in four chunks, each
//!   followed by `STORAGE FLUSH TABLE` (four segments).
//!
//! Each phase measures, one client at a time, `limit10` (`SELECT * ... LIMIT 10`), `range-agg`
//! (count and max over 1,000 ids at a pseudo-random offset), `count` (`SELECT count(*)`, its
//! rows/s counted as table rows scanned per second) and `groupby` (1,000 groups). The COLD
//! phase then sends one `stream-5m`: `SELECT *` of the first 5,000,000 rows, read chunk by
//! chunk and only counted, never held. With `--server-pid`, every result notes the server's
//! peak resident memory during the query (sampled every 50 ms), its idle memory before the
//! phase's load, and its memory 2 s after the phase.

use crate::report::{self, WorkloadResult};
use crate::{Args, Client, create_table, drive};
use futures::StreamExt;
use hdrhistogram::Histogram;
use kalamdb_commons::wire::SqlRequest;
use std::ops::Range;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// Rows per INSERT request while loading.
const BATCH: u64 = 5_000;
/// Concurrent loading clients.
const LOADERS: u64 = 2;
/// Rows asked for by `stream-5m`.
const STREAM_ROWS: u64 = 5_000_000;

/// One row of about 60 bytes; `name` takes 1,000 distinct values.
fn scan_row(id: u64) -> String {
    format!("({id}, 'n{}', {}.25, 'note {id:010}')", id % 1000, id % 997)
}

/// Polls the server's resident memory every 50 ms, keeping the peak, until [`Self::peak`].
struct RssSampler {
    stop: Arc<AtomicBool>,
    task: tokio::task::JoinHandle<Option<f64>>,
}

impl RssSampler {
    fn start(pid: Option<u32>) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let s = stop.clone();
        let task = tokio::spawn(async move {
            let pid = pid?;
            let mut peak: Option<f64> = None;
            loop {
                if let Some(rss) = report::rss_mib(pid) {
                    peak = Some(peak.map_or(rss, |p| p.max(rss)));
                }
                if s.load(Ordering::Relaxed) {
                    return peak;
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        });
        Self { stop, task }
    }

    async fn peak(self) -> Option<f64> {
        self.stop.store(true, Ordering::Relaxed);
        self.task.await.ok().flatten()
    }
}

fn mib(v: Option<f64>) -> String {
    v.map_or_else(|| "?".into(), |v| format!("{v:.1} MiB"))
}

/// The server's memory after 2 s of idle.
async fn settled_rss(pid: Option<u32>) -> Option<f64> {
    tokio::time::sleep(Duration::from_secs(2)).await;
    pid.and_then(report::rss_mib)
}

/// Inserts rows `ids` into `table` (qualified), split between [`LOADERS`] clients.
/// Returns the seconds spent and the server's peak memory meanwhile.
async fn load(
    client: &Client,
    table: &str,
    ids: Range<u64>,
    pid: Option<u32>,
) -> Result<(f64, Option<f64>), String> {
    let (start, rss) = (Instant::now(), RssSampler::start(pid));
    let done = Arc::new(AtomicU64::new(0));
    let step = (ids.end - ids.start).div_ceil(LOADERS);
    let mut tasks = Vec::new();
    for l in 0..LOADERS {
        let (lo, hi) = (
            ids.start + l * step,
            (ids.start + (l + 1) * step).min(ids.end),
        );
        let (c, table, done) = (client.clone(), table.to_string(), done.clone());
        tasks.push(tokio::spawn(async move {
            let mut id = lo;
            while id < hi {
                let end = (id + BATCH).min(hi);
                let values: Vec<String> = (id..end).map(scan_row).collect();
                let sql = format!("INSERT INTO {table} VALUES {}", values.join(", "));
                c.sql(sql, None).await?;
                done.fetch_add(end - id, Ordering::Relaxed);
                id = end;
            }
            Ok::<(), String>(())
        }));
    }
    let progress = {
        let (done, total, table) = (done.clone(), ids.end - ids.start, table.to_string());
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(Duration::from_secs(3)).await;
                let n = done.load(Ordering::Relaxed);
                let rate = n as f64 / start.elapsed().as_secs_f64();
                eprint!("\rloading {table}: {n} of {total} rows, {rate:.0} rows/s   ");
            }
        })
    };
    let mut result = Ok(());
    for t in tasks {
        let r = t.await.map_err(|e| e.to_string()).and_then(|r| r);
        result = result.and(r);
    }
    progress.abort();
    result?;
    let secs = start.elapsed().as_secs_f64();
    let rows = ids.end - ids.start;
    eprintln!(
        "\rloaded {rows} rows into {table} in {secs:.1}s ({:.0} rows/s)          ",
        rows as f64 / secs
    );
    Ok((secs, rss.peak().await))
}

/// Builds a query's SQL from the qualified table, the request number and the row count.
type QueryText = fn(&str, u64, u64) -> String;

/// The driven queries on `table`, each measured on its own as `{prefix}-{name}`.
async fn measure(args: &Args, client: &Client, table: &str, prefix: &str) -> Vec<WorkloadResult> {
    let rows = args.rows as u64;
    // (name, SQL, whether a request counts as scanning the whole table)
    let queries: [(&str, QueryText, bool); 4] = [
        (
            "limit10",
            |t, _, _| format!("SELECT * FROM {t} LIMIT 10"),
            false,
        ),
        (
            "range-agg",
            |t, i, rows| {
                let lo = i.wrapping_mul(7919).wrapping_mul(104_729) % (rows - 1000);
                let hi = lo + 999;
                format!("SELECT count(*), max(score) FROM {t} WHERE id BETWEEN {lo} AND {hi}")
            },
            false,
        ),
        ("count", |t, _, _| format!("SELECT count(*) FROM {t}"), true),
        (
            "groupby",
            |t, _, _| format!("SELECT name, count(*), avg(score) FROM {t} GROUP BY name"),
            false,
        ),
    ];
    let mut out = Vec::new();
    for (name, make, whole_table) in queries {
        let (c, table) = (client.clone(), table.to_string());
        let rss = RssSampler::start(args.server_pid);
        let mut result = drive(args, &format!("{prefix}-{name}"), move |_, i| {
            let (c, sql) = (c.clone(), make(&table, i, rows));
            async move {
                let r = c.sql(sql, None).await?;
                let first = r.results.first().ok_or("no result")?;
                if !whole_table {
                    return Ok(first.row_count as u64);
                }
                let count = first
                    .rows
                    .as_ref()
                    .and_then(|r| r.first()?.first())
                    .and_then(|v| v.as_u64().or_else(|| v.as_str()?.parse().ok()));
                match count {
                    Some(n) if n == rows => Ok(rows),
                    other => Err(format!("count(*) gave {other:?}, expected {rows}")),
                }
            }
        })
        .await;
        if let Some(peak) = rss.peak().await {
            result.notes.push(format!("server RSS peak {peak:.1} MiB"));
        }
        out.push(result);
    }
    out
}

/// One `SELECT *` of the first 5,000,000 rows, read chunk by chunk and only counted.
async fn stream(args: &Args, client: &Client, table: &str) -> WorkloadResult {
    let n = (args.rows as u64).min(STREAM_ROWS);
    let body = SqlRequest {
        sql: format!("SELECT * FROM {table} WHERE id < {n}"),
        ..SqlRequest::default()
    };
    let (rss, start) = (RssSampler::start(args.server_pid), Instant::now());
    let (mut bytes, mut first_byte, mut error) = (0u64, None, None);
    match client
        .http
        .post(format!("{}/v1/api/sql", client.url))
        .bearer_auth(&client.token)
        .json(&body)
        .send()
        .await
    {
        Err(e) => error = Some(e.to_string()),
        Ok(resp) if resp.status() != reqwest::StatusCode::OK => {
            let status = resp.status();
            let text: String = resp.text().await.unwrap_or_default();
            error = Some(format!(
                "{status}: {}",
                text.chars().take(400).collect::<String>()
            ));
        }
        Ok(resp) => {
            let mut chunks = resp.bytes_stream();
            while let Some(chunk) = chunks.next().await {
                match chunk {
                    Ok(c) => {
                        first_byte.get_or_insert_with(|| start.elapsed());
                        bytes += c.len() as u64;
                    }
                    Err(e) => {
                        error = Some(format!("after {bytes} bytes: {e}"));
                        break;
                    }
                }
            }
        }
    }
    let elapsed = start.elapsed();
    let peak = rss.peak().await;
    let mut hist = Histogram::<u64>::new_with_bounds(1, 600_000_000, 3).expect("histogram bounds");
    hist.saturating_record(elapsed.as_micros().max(1) as u64);
    let (rows, errors) = if error.is_some() { (0, 1) } else { (n, 0) };
    let mut result = WorkloadResult::new(
        "cold-stream-5m",
        1,
        elapsed.as_secs_f64(),
        &hist,
        rows,
        errors,
    );
    result.notes.push(format!(
        "{n} rows asked for: {bytes} bytes ({:.1} MiB) in {:.2}s, first chunk after {}",
        bytes as f64 / 1048576.0,
        elapsed.as_secs_f64(),
        first_byte.map_or("-".into(), |t| format!(
            "{:.0} ms",
            t.as_secs_f64() * 1000.0
        ))
    ));
    if let Some(e) = error {
        eprintln!("cold-stream-5m: {e}");
        result.notes.push(format!("error: {e}"));
    }
    if let Some(peak) = peak {
        result.notes.push(format!("server RSS peak {peak:.1} MiB"));
    }
    result
}

/// Adds the phase's idle and after-phase memory to each RSS note, and the load to the first.
fn phase_notes(
    results: &mut [WorkloadResult],
    idle: Option<f64>,
    after: Option<f64>,
    load: String,
) {
    for r in results.iter_mut() {
        for note in r
            .notes
            .iter_mut()
            .filter(|n| n.starts_with("server RSS peak"))
        {
            note.push_str(&format!(
                " (idle before loading {}, after the phase {})",
                mib(idle),
                mib(after)
            ));
        }
    }
    if let Some(first) = results.first_mut() {
        first.notes.insert(0, load);
    }
}

pub(crate) async fn scan_scale(
    args: &Args,
    client: &Client,
) -> Result<Vec<WorkloadResult>, String> {
    let (ns, rows, pid) = (&args.namespace, args.rows as u64, args.server_pid);
    if rows < 4_000 {
        return Err("scan-scale needs --rows of at least 4000".into());
    }
    let args = &Args {
        concurrency: 1,
        ..args.clone()
    };

    let (hot, phase) = (format!("{ns}.scan_hot"), Instant::now());
    let idle = pid.and_then(report::rss_mib);
    create_table(client, ns, "scan_hot", "SHARED").await?;
    let (secs, load_peak) = load(client, &hot, 0..rows, pid).await?;
    let load_note = format!(
        "HOT: {rows} rows loaded in {secs:.1}s ({:.0} rows/s), server RSS peak while loading {}",
        rows as f64 / secs,
        mib(load_peak)
    );
    let mut out = measure(args, client, &hot, "hot").await;
    let after = settled_rss(pid).await;
    phase_notes(&mut out, idle, after, load_note);
    eprintln!(
        "scan-scale: HOT phase took {:.1}s",
        phase.elapsed().as_secs_f64()
    );

    let phase = Instant::now();
    client.sql(format!("DROP TABLE {hot}"), None).await?;
    let idle = settled_rss(pid).await;
    let cold = format!("{ns}.scan_cold");
    create_table(client, ns, "scan_cold", "SHARED").await?;
    let (chunk, mut load_secs, mut flush_secs, mut load_peak) = (rows / 4, 0.0, 0.0, None);
    for c in 0..4 {
        let end = if c == 3 { rows } else { (c + 1) * chunk };
        let (secs, peak) = load(client, &cold, c * chunk..end, pid).await?;
        load_secs += secs;
        load_peak = peak.into_iter().chain(load_peak).reduce(f64::max);
        let t = Instant::now();
        client
            .sql(format!("STORAGE FLUSH TABLE {cold}"), None)
            .await?;
        eprintln!(
            "scan-scale: flush {} of 4 took {:.1}s",
            c + 1,
            t.elapsed().as_secs_f64()
        );
        flush_secs += t.elapsed().as_secs_f64();
    }
    let load_note = format!(
        "COLD: {rows} rows loaded in {load_secs:.1}s ({:.0} rows/s) as 4 flushed segments, \
         flushes took {flush_secs:.1}s, server RSS peak while loading {}",
        rows as f64 / load_secs,
        mib(load_peak)
    );
    let mut results = measure(args, client, &cold, "cold").await;
    results.push(stream(args, client, &cold).await);
    let after = settled_rss(pid).await;
    phase_notes(&mut results, idle, after, load_note);
    eprintln!(
        "scan-scale: COLD phase took {:.1}s",
        phase.elapsed().as_secs_f64()
    );
    out.extend(results);
    Ok(out)
}
