//! Cold-tier workloads.
//!
//! - `flush`: `--batch` rounds of loading `--rows` bench rows (about 100 bytes each) into a
//!   SHARED table, then timing `STORAGE FLUSH TABLE` (the request, end to end). Rows/s is the
//!   rows flushed over the time spent in flush requests.
//! - `cold-query`: 200,000 rows written as 20 flushed segments of 10,000, then a GROUP BY, a
//!   filter, a primary-key lookup and a key-range query, each measured on its own.
//! - `flush-insert`: `--batch`-row inserts into a SHARED table, first alone, then while
//!   another client flushes that table back to back.

use crate::report::WorkloadResult;
use crate::{Args, Client, batch_inserts, create_table, drive, load_rows};
use hdrhistogram::Histogram;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Instant;

pub(crate) async fn flush(args: &Args, client: &Client) -> Result<WorkloadResult, String> {
    let ns = &args.namespace;
    create_table(client, ns, "flush", "SHARED").await?;
    let rounds = args.batch.clamp(1, 20) as u64;
    let per_round = args.rows as u64;
    let mut hist =
        Histogram::<u64>::new_with_bounds(1, 600_000_000, 3).map_err(|e| e.to_string())?;
    let (mut flush_secs, mut flushed) = (0.0, 0u64);
    for r in 0..rounds {
        load_rows(client, ns, "flush", r * per_round..(r + 1) * per_round).await?;
        let t = Instant::now();
        let reply = client
            .sql(format!("STORAGE FLUSH TABLE {ns}.flush"), None)
            .await?;
        let spent = t.elapsed();
        // Count what this flush wrote: the server's flush policy may have taken some already.
        let rows = reply
            .results
            .first()
            .and_then(|r| r.message.as_deref())
            .and_then(|m| m.strip_prefix("Flushed "))
            .and_then(|m| m.split_whitespace().next())
            .and_then(|n| n.parse::<u64>().ok())
            .ok_or("unexpected flush reply")?;
        flush_secs += spent.as_secs_f64();
        flushed += rows;
        hist.saturating_record(spent.as_micros() as u64);
        eprintln!(
            "flush: round {} of {rounds}: {rows} rows in {:.1} ms",
            r + 1,
            spent.as_secs_f64() * 1000.0
        );
    }
    let mut result = WorkloadResult::new("flush", 1, flush_secs, &hist, flushed, 0);
    result.notes.push(format!(
        "{rounds} rounds of {per_round} rows loaded, then flushed; {flushed} rows flushed by the timed requests"
    ));
    Ok(result)
}

/// Builds a query's SQL from the namespace, the request number and the table's row count.
type QueryText = fn(&str, u64, u64) -> String;

pub(crate) async fn queries(args: &Args, client: &Client) -> Result<Vec<WorkloadResult>, String> {
    let ns = args.namespace.clone();
    create_table(client, &ns, "cold", "SHARED").await?;
    let (segments, per_segment) = (20u64, 10_000u64);
    let load = Instant::now();
    for s in 0..segments {
        load_rows(client, &ns, "cold", s * per_segment..(s + 1) * per_segment).await?;
        client
            .sql(format!("STORAGE FLUSH TABLE {ns}.cold"), None)
            .await?;
    }
    eprintln!(
        "cold-query: {} rows in {segments} segments loaded in {:.1}s",
        segments * per_segment,
        load.elapsed().as_secs_f64()
    );
    let total = segments * per_segment;
    let queries: [(&str, QueryText); 4] = [
        ("cold-groupby", |ns, _, _| {
            format!("SELECT score, COUNT(*), MAX(id) FROM {ns}.cold GROUP BY score")
        }),
        ("cold-filter", |ns, _, _| {
            format!("SELECT COUNT(*) FROM {ns}.cold WHERE score > 990 AND note LIKE '%bench%'")
        }),
        ("cold-pk", |ns, i, total| {
            format!("SELECT * FROM {ns}.cold WHERE id = {}", (i * 7919) % total)
        }),
        ("cold-range", |ns, i, total| {
            let lo = (i * 7919) % (total - 100);
            format!(
                "SELECT * FROM {ns}.cold WHERE id >= {lo} AND id < {}",
                lo + 100
            )
        }),
    ];
    let mut out = Vec::new();
    for (name, make) in queries {
        let (c, ns) = (client.clone(), ns.clone());
        out.push(
            drive(args, name, move |_, i| {
                let (c, sql) = (c.clone(), make(&ns, i, total));
                async move {
                    let r = c.sql(sql, None).await?;
                    Ok(r.results.first().map(|r| r.row_count as u64).unwrap_or(0))
                }
            })
            .await,
        );
    }
    Ok(out)
}

pub(crate) async fn inserts_while_flushing(
    args: &Args,
    client: &Client,
) -> Result<Vec<WorkloadResult>, String> {
    let ns = args.namespace.clone();
    create_table(client, &ns, "flush_insert", "SHARED").await?;
    let alone = batch_inserts(args, client, "flush_insert", "insert-alone").await;
    create_table(client, &ns, "flush_insert", "SHARED").await?;
    let stop = Arc::new(AtomicBool::new(false));
    let flushes = Arc::new(AtomicU64::new(0));
    let flusher = {
        let (c, stop, flushes, ns) = (client.clone(), stop.clone(), flushes.clone(), ns.clone());
        tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                if c.sql(format!("STORAGE FLUSH TABLE {ns}.flush_insert"), None)
                    .await
                    .is_ok()
                {
                    flushes.fetch_add(1, Ordering::Relaxed);
                }
            }
        })
    };
    let mut during = batch_inserts(args, client, "flush_insert", "insert-flushing").await;
    stop.store(true, Ordering::Relaxed);
    flusher.await.map_err(|e| e.to_string())?;
    during.notes.push(format!(
        "{} flushes ran during the {} s window and warm-up; {:.1}% of the rate alone",
        flushes.load(Ordering::Relaxed),
        args.duration,
        100.0 * during.rows_per_sec / alone.rows_per_sec.max(1.0)
    ));
    Ok(vec![alone, during])
}
