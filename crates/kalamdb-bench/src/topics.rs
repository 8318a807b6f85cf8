//! Topic workloads.
//!
//! - `topic-latency`: a consumer long-polls `POST /v1/api/topics/consume` on a topic fed by a
//!   SHARED table; each round inserts one row and times from sending the INSERT to the
//!   consumer holding its message (one round at a time).
//! - `topic-publish`: `POST /v1/api/topics/publish` in `--batch`-message requests (messages
//!   per second = rows).
//! - `topic-consume`: one partition preloaded with `--rows` messages, read in `--batch`-message
//!   fetches from the start, over and over (messages per second = rows).
//! - `topic-consume-flushed`: the same after `STORAGE FLUSH TOPIC` moved every message into
//!   Parquet segments.
//! - `topic-source-insert`: `insert-single` into a table with an `ON INSERT` source; compare
//!   with `insert-single` at the same concurrency.

use crate::report::WorkloadResult;
use crate::{Args, Client, create_table, drive, row_values};
use hdrhistogram::Histogram;
use serde_json::{Value, json};
use std::time::{Duration, Instant};

impl Client {
    /// POSTs `body` to `path`; the JSON reply of a 2xx, else an error.
    pub(crate) async fn post_json(&self, path: &str, body: &Value) -> Result<Value, String> {
        let resp = self
            .http
            .post(format!("{}{path}", self.url))
            .bearer_auth(&self.token)
            .json(body)
            .send()
            .await
            .map_err(|e| e.to_string())?;
        let status = resp.status();
        let body: Value = resp.json().await.map_err(|e| e.to_string())?;
        if !status.is_success() {
            return Err(format!("{status}: {body}"));
        }
        Ok(body)
    }
}

async fn topic(client: &Client, ns: &str, name: &str, source: Option<&str>) -> Result<(), String> {
    client
        .sql(format!("CREATE NAMESPACE IF NOT EXISTS {ns}"), None)
        .await?;
    client
        .sql(format!("DROP TOPIC IF EXISTS {ns}.{name}"), None)
        .await?;
    client
        .sql(format!("CREATE TOPIC {ns}.{name}"), None)
        .await?;
    if let Some(table) = source {
        client
            .sql(
                format!("ALTER TOPIC {ns}.{name} ADD SOURCE {ns}.{table} ON INSERT"),
                None,
            )
            .await?;
    }
    Ok(())
}

pub(crate) async fn latency(args: &Args, client: &Client) -> Result<WorkloadResult, String> {
    let ns = &args.namespace;
    create_table(client, ns, "topic_rows", "SHARED").await?;
    topic(client, ns, "latency", Some("topic_rows")).await?;
    let topic_id = format!("{ns}.latency");
    let mut hist = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).expect("bounds");
    let mut next = 0u64;
    let run = |secs: u64| Duration::from_secs(secs);
    let started = Instant::now();
    let mut measured_from = None;
    let mut id = 0u64;
    while started.elapsed() < run(args.warmup + args.duration) {
        let measuring = started.elapsed() >= run(args.warmup);
        if measuring && measured_from.is_none() {
            measured_from = Some(Instant::now());
        }
        let (c, body) = (
            client.clone(),
            json!({"topic_id": topic_id, "start": {"Offset": next}, "limit": 10,
                   "timeout_seconds": 5}),
        );
        let waiting =
            tokio::spawn(async move { c.post_json("/v1/api/topics/consume", &body).await });
        // Let the fetch reach its wait first (it would otherwise find the row at once).
        tokio::time::sleep(Duration::from_millis(2)).await;
        let t0 = Instant::now();
        client
            .sql(
                format!("INSERT INTO {ns}.topic_rows VALUES {}", row_values(id)),
                None,
            )
            .await?;
        let reply = waiting.await.map_err(|e| e.to_string())??;
        let got = reply["messages"].as_array().map_or(0, Vec::len);
        if got == 0 {
            return Err("the long-poll returned no message".into());
        }
        if measuring {
            hist.saturating_record((t0.elapsed().as_micros() as u64).max(1));
        }
        next = reply["next_offset"].as_u64().unwrap_or(next + 1);
        id += 1;
    }
    let secs = measured_from.map_or(0.0, |t| t.elapsed().as_secs_f64());
    let mut r = WorkloadResult::new("topic-latency", 1, secs, &hist, hist.len(), 0);
    r.notes
        .push("INSERT sent -> message held by a long-polling consumer".into());
    Ok(r)
}

pub(crate) async fn publish(args: &Args, client: &Client) -> Result<WorkloadResult, String> {
    topic(client, &args.namespace, "publish", None).await?;
    let (c, topic_id, batch) = (
        client.clone(),
        format!("{}.publish", args.namespace),
        args.batch as u64,
    );
    Ok(drive(args, "topic-publish", move |w, i| {
        let (c, topic_id) = (c.clone(), topic_id.clone());
        async move {
            let messages: Vec<Value> = (0..batch)
                .map(|n| json!({"key": format!("{w}-{i}-{n}"), "payload": {"n": n, "w": w}}))
                .collect();
            c.post_json(
                "/v1/api/topics/publish",
                &json!({"topic_id": topic_id, "messages": messages}),
            )
            .await
            .map(|_| batch)
        }
    })
    .await)
}

pub(crate) async fn consume(
    args: &Args,
    client: &Client,
    flushed: bool,
) -> Result<WorkloadResult, String> {
    topic(client, &args.namespace, "consume", None).await?;
    let topic_id = format!("{}.consume", args.namespace);
    let total = args.rows as u64;
    let mut sent = 0;
    while sent < total {
        let n = (total - sent).min(10_000);
        // One key: every message in partition 0.
        let messages: Vec<Value> = (0..n)
            .map(|k| json!({"key": "k", "payload": {"n": sent + k}}))
            .collect();
        client
            .post_json(
                "/v1/api/topics/publish",
                &json!({"topic_id": topic_id, "messages": messages}),
            )
            .await?;
        sent += n;
    }
    let name = if flushed {
        client
            .sql(format!("STORAGE FLUSH TOPIC {topic_id}"), None)
            .await?;
        "topic-consume-flushed"
    } else {
        "topic-consume"
    };
    let (c, batch) = (client.clone(), args.batch as u64);
    Ok(drive(args, name, move |_, i| {
        let (c, topic_id) = (c.clone(), topic_id.clone());
        async move {
            let from = (i * batch) % total.max(1);
            let reply = c
                .post_json(
                    "/v1/api/topics/consume",
                    &json!({"topic_id": topic_id, "start": {"Offset": from}, "limit": batch}),
                )
                .await?;
            Ok(reply["messages"].as_array().map_or(0, Vec::len) as u64)
        }
    })
    .await)
}

pub(crate) async fn source_insert(args: &Args, client: &Client) -> Result<WorkloadResult, String> {
    let ns = args.namespace.clone();
    create_table(client, &ns, "sourced", "SHARED").await?;
    topic(client, &ns, "sourced_changes", Some("sourced")).await?;
    let c = client.clone();
    Ok(drive(args, "topic-source-insert", move |w, i| {
        let (c, ns) = (c.clone(), ns.clone());
        async move {
            let id = (w as u64) << 40 | i;
            c.sql(
                format!("INSERT INTO {ns}.sourced VALUES {}", row_values(id)),
                None,
            )
            .await
            .map(|_| 1)
        }
    })
    .await)
}
