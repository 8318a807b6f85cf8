//! Transaction workloads.
//!
//! - `tx-insert`: each request is `BEGIN`, ten single-row INSERTs and `COMMIT` on a SHARED
//!   table; rows/s compares with `insert-single` at the same concurrency.
//! - `tx-transfer`: each request moves an amount between two of `--rows` accounts (default
//!   100 here when `--rows` is left at its default) in `BEGIN; UPDATE; UPDATE; COMMIT`. Rows
//!   are committed transactions, requests all attempts: a COMMIT that loses to a concurrent
//!   one (409 `TRANSACTION_CONFLICT`) counts as a request without rows, so the abort rate is
//!   1 - rows/requests. The balances are checked to add up afterwards (a note says so).

use crate::report::WorkloadResult;
use crate::{Args, Client, create_table, drive, row_values};

/// Single-row INSERTs per `tx-insert` transaction.
const TX_ROWS: u64 = 10;

pub(crate) async fn tx_insert(args: &Args, client: &Client) -> Result<WorkloadResult, String> {
    create_table(client, &args.namespace, "tx_insert", "SHARED").await?;
    let (c, ns) = (client.clone(), args.namespace.clone());
    Ok(drive(args, "tx-insert", move |w, i| {
        let (c, ns) = (c.clone(), ns.clone());
        async move {
            let base = ((w as u64) << 40) + i * TX_ROWS;
            let mut sql = String::from("BEGIN; ");
            for id in base..base + TX_ROWS {
                sql.push_str(&format!(
                    "INSERT INTO {ns}.tx_insert VALUES {}; ",
                    row_values(id)
                ));
            }
            sql.push_str("COMMIT");
            c.sql(sql, None).await.map(|_| TX_ROWS)
        }
    })
    .await)
}

pub(crate) async fn tx_transfer(args: &Args, client: &Client) -> Result<WorkloadResult, String> {
    let ns = &args.namespace;
    let accounts = if args.rows == 100_000 {
        100
    } else {
        args.rows as u64
    };
    client
        .sql(format!("CREATE NAMESPACE IF NOT EXISTS {ns}"), None)
        .await?;
    client
        .sql(format!("DROP TABLE IF EXISTS {ns}.accounts"), None)
        .await?;
    let values: Vec<String> = (0..accounts).map(|i| format!("({i}, 1000)")).collect();
    client
        .sql(
            format!(
                "CREATE SHARED TABLE {ns}.accounts (id BIGINT PRIMARY KEY, balance BIGINT); \
                 INSERT INTO {ns}.accounts VALUES {}",
                values.join(", ")
            ),
            None,
        )
        .await?;
    let (c, ns2) = (client.clone(), ns.clone());
    let mut result = drive(args, "tx-transfer", move |w, i| {
        let (c, ns) = (c.clone(), ns2.clone());
        async move {
            // A cheap deterministic spread over the accounts.
            let x =
                (w as u64 + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ i.wrapping_mul(0xBF58_476D);
            let from = x % accounts;
            let to = (from + 1 + (x >> 20) % (accounts - 1)) % accounts;
            let amount = x % 50 + 1;
            let sql = format!(
                "BEGIN; UPDATE {ns}.accounts SET balance = balance - {amount} WHERE id = {from}; \
                 UPDATE {ns}.accounts SET balance = balance + {amount} WHERE id = {to}; COMMIT"
            );
            match c.sql(sql, None).await {
                Ok(_) => Ok(1),
                // 409: TRANSACTION_CONFLICT (the client's error text starts with the status).
                Err(e) if e.starts_with("409") => Ok(0),
                Err(e) => Err(e),
            }
        }
    })
    .await;
    let sum = client
        .sql(format!("SELECT sum(balance) FROM {ns}.accounts"), None)
        .await?;
    let total = sum
        .results
        .first()
        .and_then(|r| r.rows.as_ref())
        .and_then(|rows| rows.first())
        .and_then(|row| row.first())
        .map(|v| v.to_string().trim_matches('"').to_string())
        .unwrap_or_default();
    let expected = (accounts * 1000).to_string();
    if total != expected {
        return Err(format!("balances add up to {total}, not {expected}"));
    }
    let aborts = result.requests.saturating_sub(result.rows);
    result.notes.push(format!(
        "{accounts} accounts; {} committed, {aborts} aborted by conflicts ({:.1}%); balances add up",
        result.rows,
        100.0 * aborts as f64 / result.requests.max(1) as f64
    ));
    Ok(result)
}
