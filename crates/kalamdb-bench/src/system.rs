//! `system-tables`: latency of the operational system tables an operator's tools poll
//! (`system.stats`, `system.settings`, `system.cluster`), each read whole, one client at a time
//! unless `--concurrency` says otherwise, on a server holding `--rows` rows in one table (so
//! the figures that count rows have something to count).

use crate::report::WorkloadResult;
use crate::{Args, Client, create_table, drive_query};

pub(crate) async fn system_tables(
    args: &Args,
    client: &Client,
) -> Result<Vec<WorkloadResult>, String> {
    let ns = args.namespace.clone();
    create_table(client, &ns, "counted", "SHARED").await?;
    crate::load_rows(client, &ns, "counted", 0..args.rows as u64).await?;
    let mut out = Vec::new();
    for table in ["stats", "settings", "cluster"] {
        let (name, sql) = (
            format!("system-{table}"),
            format!("SELECT * FROM system.{table}"),
        );
        out.push(drive_query(args, &name, client, sql).await);
    }
    Ok(out)
}
