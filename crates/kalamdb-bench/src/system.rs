//! `system-tables`: latency of the operational system tables an operator's tools poll
//! (`system.stats`, `system.settings`, `system.cluster`), each read whole, one client at a time
//! unless `--concurrency` says otherwise, on a server holding `--rows` rows in one table (so
//! the figures that count rows have something to count).

use crate::report::WorkloadResult;
use crate::{Args, Client, create_table, drive};

pub(crate) async fn system_tables(
    args: &Args,
    client: &Client,
) -> Result<Vec<WorkloadResult>, String> {
    let ns = args.namespace.clone();
    create_table(client, &ns, "counted", "SHARED").await?;
    crate::load_rows(client, &ns, "counted", 0..args.rows as u64).await?;
    let mut out = Vec::new();
    for table in ["stats", "settings", "cluster"] {
        let (c, sql) = (client.clone(), format!("SELECT * FROM system.{table}"));
        out.push(
            drive(args, &format!("system-{table}"), move |_, _| {
                let (c, sql) = (c.clone(), sql.clone());
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
