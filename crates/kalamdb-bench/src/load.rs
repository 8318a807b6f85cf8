//! Latency of cheap requests while worst-case queries run: `health-under-load` (GET
//! `/v1/api/healthcheck`) and `point-select-under-load` (primary-key SELECT), each measured
//! while `--heavy` clients keep a CPU-bound three-way cross join running (each one resent as
//! soon as the server cancels it). A request that takes over 5 s counts as an error.

use crate::{Args, Client, WorkloadResult, create_table, drive, load_rows, point_lookup};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

/// A query that keeps a core busy for hours unless the server stops it.
const HEAVY: &str = "SELECT count(*) FROM generate_series(1,11000) a, generate_series(1,11000) b, \
                     generate_series(1,11000) c WHERE a.value + b.value + c.value = -1";

const TIMEOUT: Duration = Duration::from_secs(5);

/// Runs `what` (`health` or `point-select`) under `--heavy` worst-case queries.
pub(crate) async fn under_load(
    args: &Args,
    client: &Client,
    what: &str,
) -> Result<WorkloadResult, String> {
    let ns = args.namespace.clone();
    let rows = 10_000u64;
    if what == "point-select" {
        create_table(client, &ns, "under_load", "SHARED").await?;
        load_rows(client, &ns, "under_load", 0..rows).await?;
    }
    let stop = Arc::new(AtomicBool::new(false));
    let heavy: Vec<_> = (0..args.heavy)
        .map(|_| {
            let (c, stop) = (client.clone(), Arc::clone(&stop));
            tokio::spawn(async move {
                while !stop.load(Ordering::Relaxed) {
                    let _ = c.sql(HEAVY.to_string(), None).await;
                }
            })
        })
        .collect();
    // Let the heavy queries start.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let name = format!("{what}-under-load");
    let c = client.clone();
    let point = what == "point-select";
    let result = drive(args, &name, move |w, i| {
        let (c, ns) = (c.clone(), ns.clone());
        async move {
            let request = async {
                if point {
                    let key = (i.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ w as u64) % rows;
                    point_lookup(&c, &ns, "under_load", key).await
                } else {
                    let resp = c
                        .http
                        .get(format!("{}/v1/api/healthcheck", c.url))
                        .send()
                        .await
                        .map_err(|e| e.to_string())?;
                    if resp.status().is_success() {
                        Ok(1)
                    } else {
                        Err(format!("health: {}", resp.status()))
                    }
                }
            };
            tokio::time::timeout(TIMEOUT, request)
                .await
                .map_err(|_| format!("no answer within {} s", TIMEOUT.as_secs()))?
        }
    })
    .await;
    stop.store(true, Ordering::Relaxed);
    // Dropping the requests closes their connections, which cancels the queries.
    for h in heavy {
        h.abort();
    }
    Ok(result)
}
