//! Live-query workloads: each request is an INSERT, timed until its change reached every
//! subscriber that should get it (no sleeps inside the timed span). Sockets ask
//! `?compress=false`, so the client spends its CPU counting messages, not inflating them.
//! Each socket sends all its `subscribe` messages at once: run the server with
//! `KALAMDB_WEBSOCKET_MAX_MESSAGES_PER_SEC` above `--subs-per-socket`.
//!
//! - `live-latency`: one subscriber on a SHARED table, one writer;
//! - `live-fanout`: `--sockets` x `--subs-per-socket` subscriptions on one SHARED table; rows/s
//!   is deliveries/s; `--live-where` gives both a WHERE clause (rows carry a JSON `doc`);
//! - `live-users`: `--users` users, each subscribed to their own rows of a USER table and
//!   inserting; per-change latency as the number of users grows.

use crate::report::WorkloadResult;
use crate::{Client, bench_users, create_table, create_table_with, drive, row_values};
use futures::{SinkExt, StreamExt};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};
use tokio::sync::Notify;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

/// Counts the change messages a group of sockets received.
#[derive(Debug, Default)]
struct Deliveries {
    count: AtomicU64,
    notify: Notify,
}

impl Deliveries {
    /// Waits until at least `target` changes arrived (10 s at most).
    async fn wait_for(&self, target: u64) -> Result<(), String> {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let notified = self.notify.notified();
            if self.count.load(Ordering::Acquire) >= target {
                return Ok(());
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if tokio::time::timeout(left, notified).await.is_err() {
                return Err(format!(
                    "only {} of {target} changes arrived within 10 s",
                    self.count.load(Ordering::Acquire)
                ));
            }
        }
    }
}

/// Opens a socket as `client`, subscribes `subs` times to `sql` (no initial data), waits for
/// every ack, then counts change messages into `deliveries` in a background task.
async fn open_socket(
    client: &Client,
    subs: usize,
    sql: &str,
    deliveries: Arc<Deliveries>,
) -> Result<(), String> {
    let url = format!(
        "{}/v1/ws?compress=false",
        client.url.replacen("http", "ws", 1)
    );
    let mut req = url.into_client_request().map_err(|e| e.to_string())?;
    let auth = format!("Bearer {}", client.token)
        .parse()
        .map_err(|_| "bad token".to_string())?;
    req.headers_mut().insert("Authorization", auth);
    let (mut ws, _) = tokio_tungstenite::connect_async(req)
        .await
        .map_err(|e| format!("websocket connect: {e}"))?;
    for i in 0..subs {
        let msg = serde_json::json!({"type": "subscribe", "subscription": {"id": format!("s{i}"), "sql": sql}});
        ws.send(Message::Text(msg.to_string().into()))
            .await
            .map_err(|e| e.to_string())?;
    }
    let mut acks = 0;
    while acks < subs {
        let frame = tokio::time::timeout(Duration::from_secs(30), ws.next())
            .await
            .map_err(|_| "no subscription_ack within 30 s".to_string())?
            .ok_or("socket closed")?
            .map_err(|e| e.to_string())?;
        if let Message::Text(t) = frame {
            if t.contains("\"subscription_ack\"") {
                acks += 1;
            } else if t.contains("\"error\"") {
                return Err(format!(
                    "subscribe failed (raise KALAMDB_WEBSOCKET_MAX_MESSAGES_PER_SEC for many subscriptions per socket): {t}"
                ));
            }
        }
    }
    tokio::spawn(async move {
        // Keepalive: the server closes sockets silent for 10 s.
        let mut ping = tokio::time::interval(Duration::from_secs(4));
        loop {
            tokio::select! {
                frame = ws.next() => match frame {
                    Some(Ok(Message::Text(t))) if t.starts_with("{\"type\":\"change\"") => {
                        deliveries.count.fetch_add(1, Ordering::AcqRel);
                        deliveries.notify.notify_waiters();
                    }
                    Some(Ok(_)) => {}
                    _ => return,
                },
                _ = ping.tick() => {
                    if ws.send(Message::Text("{\"type\":\"ping\"}".into())).await.is_err() {
                        return;
                    }
                }
            }
        }
    });
    Ok(())
}

/// `live-latency` and `live-fanout`: `sockets` x `subs` subscriptions on one SHARED table.
pub(crate) async fn shared_fanout(
    args: &crate::Args,
    client: &Client,
    name: &str,
    sockets: usize,
    subs: usize,
) -> Result<WorkloadResult, String> {
    let ns = args.namespace.clone();
    // The bench columns plus a JSON document, for filters that read into it.
    create_table_with(client, &ns, "live_feed", "SHARED", ", doc JSON").await?;
    let deliveries = Arc::new(Deliveries::default());
    let filter = args
        .live_where
        .as_ref()
        .map_or_else(String::new, |w| format!(" WHERE {w}"));
    let sql = format!("SELECT * FROM {ns}.live_feed{filter}");
    // Subscribers may sit on another cluster member than the writer.
    let mut subscriber = client.clone();
    if let Some(url) = &args.live_url {
        subscriber.url = url.clone();
    }
    let start = Instant::now();
    let mut opened = Vec::new();
    for i in 0..sockets {
        opened.push(open_socket(
            &subscriber,
            subs,
            &sql,
            Arc::clone(&deliveries),
        ));
        // Open sockets 50 at a time.
        if opened.len() == 50 || i + 1 == sockets {
            for r in futures::future::join_all(opened.drain(..)).await {
                r?;
            }
            eprint!("\r{name}: {} sockets ready   ", i + 1);
        }
    }
    let established = start.elapsed().as_secs_f64();
    eprintln!(
        "\n{name}: {} subscriptions on {sockets} sockets established in {established:.2} s",
        sockets * subs
    );
    let per_change = (sockets * subs) as u64;
    let client = client.clone();
    let next = Arc::new(AtomicU64::new(0));
    let mut result = drive(args, name, move |w, i| {
        let (client, ns, deliveries, next) = (
            client.clone(),
            ns.clone(),
            Arc::clone(&deliveries),
            Arc::clone(&next),
        );
        async move {
            // One change in flight at a time: the target count is exact.
            let n = next.fetch_add(1, Ordering::SeqCst) + 1;
            let id = (w as u64) << 40 | i;
            client
                .sql(
                    format!("INSERT INTO {ns}.live_feed VALUES {}", json_row_values(id)),
                    None,
                )
                .await?;
            deliveries.wait_for(n * per_change).await?;
            Ok(per_change)
        }
    })
    .await;
    result.notes.push(format!(
        "{} subscriptions on {sockets} sockets established in {established:.2} s",
        sockets * subs
    ));
    Ok(result)
}

/// [`row_values`] with a JSON document after the bench columns.
fn json_row_values(id: u64) -> String {
    let plain = row_values(id);
    format!(
        "{}, '{{\"kind\": \"k\", \"n\": {}, \"tags\": [\"a\", \"b\"]}}')",
        &plain[..plain.len() - 1],
        id % 1000
    )
}

/// `live-users`: every user subscribed to their own rows of a USER table, each inserting.
pub(crate) async fn per_user(
    args: &crate::Args,
    client: &Client,
) -> Result<WorkloadResult, String> {
    let ns = args.namespace.clone();
    create_table(client, &ns, "live_user", "USER").await?;
    let users = bench_users(client, args.users, "user").await?;
    let sql = format!("SELECT * FROM {ns}.live_user");
    let mut per_user = Vec::new();
    for u in &users {
        let d = Arc::new(Deliveries::default());
        open_socket(u, 1, &sql, Arc::clone(&d)).await?;
        per_user.push(d);
    }
    let users = Arc::new(users);
    let per_user = Arc::new(per_user);
    let conc = args.concurrency as u64;
    let mut result = drive(args, "live-users", move |w, i| {
        let (users, per_user) = (Arc::clone(&users), Arc::clone(&per_user));
        let ns = ns.clone();
        async move {
            // Worker w owns users w, w + conc, …: one change per user in flight.
            let u = ((i * conc + w as u64) % users.len() as u64) as usize;
            let before = per_user[u].count.load(Ordering::Acquire);
            let id = (w as u64) << 40 | i;
            users[u]
                .sql(
                    format!("INSERT INTO {ns}.live_user VALUES {}", row_values(id)),
                    None,
                )
                .await?;
            per_user[u].wait_for(before + 1).await?;
            Ok(1)
        }
    })
    .await;
    result.notes.push(format!(
        "{} users, one socket and subscription each",
        args.users
    ));
    Ok(result)
}
