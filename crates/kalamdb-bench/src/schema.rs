//! Schema workloads.
//!
//! - `alter-add-column`: `--rows` bench rows in a SHARED table (the first half flushed to
//!   Parquet), then `ALTER TABLE … ADD COLUMN` and `DROP COLUMN` of the same column in turn,
//!   each request timed (metadata only: no row is rewritten). Run with `--concurrency 1`.
//! - `view-query`: `--rows` bench rows, and the same aggregate query run directly
//!   (`view-direct`) and through a view over the table (`view-through`).

use crate::report::WorkloadResult;
use crate::{Args, Client, create_table, drive, drive_query, load_rows};
use std::time::Instant;

pub(crate) async fn alter_add_column(
    args: &Args,
    client: &Client,
) -> Result<WorkloadResult, String> {
    let ns = args.namespace.clone();
    create_table(client, &ns, "wide", "SHARED").await?;
    let rows = args.rows as u64;
    let load = Instant::now();
    load_rows(client, &ns, "wide", 0..rows / 2).await?;
    client
        .sql(format!("STORAGE FLUSH TABLE {ns}.wide"), None)
        .await?;
    load_rows(client, &ns, "wide", rows / 2..rows).await?;
    eprintln!(
        "alter-add-column: {rows} rows loaded (half flushed) in {:.1}s",
        load.elapsed().as_secs_f64()
    );
    let c = client.clone();
    Ok(drive(args, "alter-add-column", move |_, i| {
        let (c, ns) = (c.clone(), ns.clone());
        async move {
            let sql = if i % 2 == 0 {
                format!("ALTER TABLE {ns}.wide ADD COLUMN extra TEXT DEFAULT 'x'")
            } else {
                format!("ALTER TABLE {ns}.wide DROP COLUMN extra")
            };
            c.sql(sql, None).await?;
            Ok(0)
        }
    })
    .await)
}

pub(crate) async fn view_query(
    args: &Args,
    client: &Client,
) -> Result<Vec<WorkloadResult>, String> {
    let ns = args.namespace.clone();
    create_table(client, &ns, "viewed", "SHARED").await?;
    load_rows(client, &ns, "viewed", 0..args.rows as u64).await?;
    client
        .sql(format!("DROP VIEW IF EXISTS {ns}.v"), None)
        .await?;
    client
        .sql(
            format!("CREATE VIEW {ns}.v AS SELECT id, score, note FROM {ns}.viewed"),
            None,
        )
        .await?;
    let mut out = Vec::new();
    for (name, from) in [("view-direct", "viewed"), ("view-through", "v")] {
        let sql =
            format!("SELECT score, COUNT(*) FROM {ns}.{from} WHERE id % 2 = 0 GROUP BY score");
        out.push(drive_query(args, name, client, sql).await);
    }
    Ok(out)
}
