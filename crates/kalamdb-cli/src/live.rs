//! `\subscribe` and `--subscribe`: a live query over the WebSocket (`docs/protocol.md` §6),
//! shown as a table redrawn in place on a terminal (or, with `--format json` or when output is
//! not a terminal, the initial rows and then one line per change), until Ctrl-C.
//!
//! A dropped connection is opened again with `from` = the largest `_seq` seen, so the server
//! sends only what changed after it: no change is lost or shown twice.

use crate::client::Client;
use crate::error::{CliError, Result};
use crate::render::{self, Expanded, Format, Style};
use futures::{SinkExt, StreamExt};
use kalamdb_commons::ws::{
    BatchStatus, ChangeType, ClientMessage, ServerMessage, SubscriptionOptions, SubscriptionRequest,
};
use serde_json::{Map, Value};
use std::io::Write;
use std::time::Duration;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

/// A row of a live result, as the server sends it (`_seq` included).
type LiveRow = Map<String, Value>;

/// The rows a subscription shows, in arrival order, found by key (the primary key, or the
/// whole row when the query does not select it) in constant time.
#[derive(Debug, Default)]
struct View {
    names: Vec<String>,
    pk: Vec<String>,
    /// Arrival order; removed rows leave a hole until the next compaction.
    rows: Vec<Option<LiveRow>>,
    index: std::collections::HashMap<String, usize>,
    live_rows: usize,
    ready: bool,
    /// Lines the last redraw printed (to move back over them).
    drawn: usize,
    last_seq: Option<i64>,
}

impl View {
    fn key_of(&self, row: &LiveRow) -> String {
        let cols = if self.pk.is_empty() {
            &self.names
        } else {
            &self.pk
        };
        let key: Vec<&Value> = cols
            .iter()
            .map(|c| row.get(c).unwrap_or(&Value::Null))
            .collect();
        serde_json::to_string(&key).unwrap_or_default()
    }

    fn see_seq(&mut self, row: &LiveRow) {
        let seq = row.get("_seq").and_then(|v| match v {
            Value::String(s) => s.parse().ok(),
            other => other.as_i64(),
        });
        if let Some(seq) = seq {
            self.last_seq = Some(self.last_seq.map_or(seq, |l: i64| l.max(seq)));
        }
    }

    /// Inserts `row`, or replaces the row with key `old_key` (its own key when `None`); true
    /// when it replaced one.
    fn upsert(&mut self, row: LiveRow, old_key: Option<String>) -> bool {
        self.see_seq(&row);
        let key = self.key_of(&row);
        let old = old_key.unwrap_or_else(|| key.clone());
        match self.index.remove(&old) {
            Some(i) => {
                self.rows[i] = Some(row);
                self.index.insert(key, i);
                true
            }
            None => {
                self.index.insert(key, self.rows.len());
                self.rows.push(Some(row));
                self.live_rows += 1;
                false
            }
        }
    }

    fn remove(&mut self, row: &LiveRow) {
        self.see_seq(row);
        if let Some(i) = self.index.remove(&self.key_of(row)) {
            self.rows[i] = None;
            self.live_rows -= 1;
        }
        // Holes are dropped once they are half the list.
        if self.rows.len() > 64 && self.live_rows * 2 < self.rows.len() {
            self.rows.retain(Option::is_some);
            self.index.clear();
            for (i, r) in self.rows.iter().enumerate() {
                if let Some(r) = r {
                    let k = self.key_of(r);
                    self.index.insert(k, i);
                }
            }
        }
    }

    /// The rows, in arrival order.
    fn current(&self) -> impl Iterator<Item = &LiveRow> {
        self.rows.iter().flatten()
    }

    fn cells(&self, row: &LiveRow) -> Vec<Value> {
        self.names
            .iter()
            .map(|n| row.get(n).cloned().unwrap_or(Value::Null))
            .collect()
    }
}

/// How changes are shown.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    /// A table redrawn in place.
    Redraw,
    /// The initial table, then a line per change (`insert: {…}`).
    Lines,
    /// One JSON object per row and change.
    Json,
}

/// Shows `sql` live until `stop` completes (Ctrl-C); reconnects after a dropped connection.
pub async fn subscribe(
    client: &mut Client,
    sql: &str,
    style: &Style,
    stop: impl std::future::Future<Output = ()>,
) -> Result<()> {
    let mode = match style.format {
        Format::Json => Mode::Json,
        _ if crate::term::stdout_is_tty() => Mode::Redraw,
        _ => Mode::Lines,
    };
    let mut view = View::default();
    tokio::pin!(stop);
    let mut backoff = Duration::from_millis(200);
    loop {
        let session = run_once(client, sql, style, mode, &mut view, &mut stop).await;
        match session {
            Ok(()) => return Ok(()),
            Err(Lost::Fatal(e)) => return Err(e),
            Err(Lost::Expired) => client.refresh().await?,
            Err(Lost::Dropped(why)) => {
                let from = view
                    .last_seq
                    .map_or("the start".to_string(), |s| format!("_seq {s}"));
                eprintln!("connection lost ({why}); reconnecting from {from}");
                tokio::select! {
                    _ = tokio::time::sleep(backoff) => {}
                    _ = &mut stop => return Ok(()),
                }
                backoff = (backoff * 2).min(Duration::from_secs(5));
            }
        }
    }
}

/// Why one connection ended.
enum Lost {
    /// The subscription itself failed (bad SQL, no access): not retried.
    Fatal(CliError),
    /// The token expired: refresh, then reconnect.
    Expired,
    /// The connection dropped: reconnect and resume.
    Dropped(String),
}

fn ws_url(http_url: &str) -> String {
    let rest = http_url
        .strip_prefix("https://")
        .map(|r| format!("wss://{r}"))
        .or_else(|| {
            http_url
                .strip_prefix("http://")
                .map(|r| format!("ws://{r}"))
        })
        .unwrap_or_else(|| format!("ws://{http_url}"));
    format!("{rest}/v1/ws?compress=false")
}

async fn run_once(
    client: &Client,
    sql: &str,
    style: &Style,
    mode: Mode,
    view: &mut View,
    stop: &mut std::pin::Pin<&mut impl std::future::Future<Output = ()>>,
) -> std::result::Result<(), Lost> {
    let url = ws_url(&client.session.url);
    let mut request = url
        .as_str()
        .into_client_request()
        .map_err(|e| Lost::Fatal(CliError::Usage(format!("bad server URL {url}: {e}"))))?;
    let bearer = format!("Bearer {}", client.session.access_token);
    request.headers_mut().insert(
        "Authorization",
        bearer.parse().map_err(|_| {
            Lost::Fatal(CliError::Auth("the access token is not valid text".into()))
        })?,
    );
    let (mut ws, _) = tokio_tungstenite::connect_async(request)
        .await
        .map_err(|e| Lost::Dropped(e.to_string()))?;
    let options = SubscriptionOptions {
        batch_size: Some(1000),
        from: view.last_seq,
        ..SubscriptionOptions::default()
    };
    let subscribe = ClientMessage::Subscribe {
        subscription: SubscriptionRequest {
            id: "kalam-cli".into(),
            sql: sql.to_string(),
            options: Some(options),
        },
    };
    let send = |m: &ClientMessage| Message::text(serde_json::to_string(m).unwrap_or_default());
    let resuming = view.ready;
    let mut keepalive = tokio::time::interval(Duration::from_secs(4));
    let mut subscribed = false;
    loop {
        let frame = tokio::select! {
            f = ws.next() => f,
            _ = keepalive.tick() => {
                ws.send(send(&ClientMessage::Ping)).await.map_err(|e| Lost::Dropped(e.to_string()))?;
                continue;
            }
            _ = stop.as_mut() => {
                let bye = ClientMessage::Unsubscribe { subscription_id: "kalam-cli".into() };
                let _ = ws.send(send(&bye)).await;
                let _ = ws.close(None).await;
                return Ok(());
            }
        };
        let text = match frame {
            None => return Err(Lost::Dropped("closed by the server".into())),
            Some(Err(e)) => return Err(Lost::Dropped(e.to_string())),
            Some(Ok(Message::Text(t))) => t.to_string(),
            Some(Ok(Message::Close(c))) => {
                let why = c.map_or("closed".into(), |c| c.reason.to_string());
                return Err(Lost::Dropped(why));
            }
            Some(Ok(_)) => continue,
        };
        let message: ServerMessage = serde_json::from_str(&text)
            .map_err(|e| Lost::Dropped(format!("unexpected message: {e}")))?;
        match message {
            ServerMessage::AuthSuccess { .. } if !subscribed => {
                ws.send(send(&subscribe))
                    .await
                    .map_err(|e| Lost::Dropped(e.to_string()))?;
                subscribed = true;
            }
            ServerMessage::AuthSuccess { .. } => {}
            ServerMessage::AuthError { message } => {
                if client.session.refresh_token.is_some() {
                    return Err(Lost::Expired);
                }
                return Err(Lost::Fatal(CliError::Auth(message)));
            }
            ServerMessage::SubscriptionAck { schema, .. } => {
                view.names = schema.iter().map(|f| f.name.clone()).collect();
                view.pk = schema
                    .iter()
                    .filter(|f| {
                        f.flags
                            .as_ref()
                            .is_some_and(|fl| fl.iter().any(|x| x == "pk"))
                    })
                    .map(|f| f.name.clone())
                    .collect();
            }
            ServerMessage::InitialDataBatch {
                rows,
                batch_control,
                ..
            } => {
                for row in rows {
                    // On a resume these are the rows that changed meanwhile.
                    let replaced = view.upsert(row.clone(), None);
                    if view.ready {
                        let kind = if replaced { "update" } else { "insert" };
                        show_change(view, mode, kind, &row);
                    }
                }
                if batch_control.has_more {
                    let next = ClientMessage::NextBatch {
                        subscription_id: "kalam-cli".into(),
                        last_seq_id: batch_control.last_seq_id,
                    };
                    ws.send(send(&next))
                        .await
                        .map_err(|e| Lost::Dropped(e.to_string()))?;
                }
                if batch_control.status == BatchStatus::Ready && !view.ready {
                    view.ready = true;
                    show_initial(view, mode, style);
                } else if resuming && mode == Mode::Redraw {
                    redraw(view, style, "resumed");
                }
            }
            ServerMessage::Change {
                change_type,
                rows,
                old_values,
                ..
            } => {
                let kind = match change_type {
                    ChangeType::Insert => "insert",
                    ChangeType::Update => "update",
                    ChangeType::Delete => "delete",
                };
                if change_type == ChangeType::Delete {
                    for row in old_values.unwrap_or_default() {
                        view.remove(&row);
                        show_change(view, mode, kind, &row);
                    }
                } else {
                    let olds = old_values.unwrap_or_default();
                    for (i, row) in rows.unwrap_or_default().into_iter().enumerate() {
                        // The old row: the new one with the changed columns' old values.
                        let old_key = olds.get(i).map(|changed| {
                            let mut old = row.clone();
                            old.extend(changed.iter().map(|(k, v)| (k.clone(), v.clone())));
                            view.key_of(&old)
                        });
                        view.upsert(row.clone(), old_key);
                        show_change(view, mode, kind, &row);
                    }
                }
                if mode == Mode::Redraw && view.ready {
                    redraw(view, style, kind);
                }
            }
            // The connection's own trouble (fell behind, rate limit): resume on a new one.
            ServerMessage::Error {
                subscription_id,
                code,
                message,
            } if subscription_id == "protocol" || subscription_id == "rate_limit" => {
                return Err(Lost::Dropped(format!("{code}: {message}")));
            }
            ServerMessage::Error { code, message, .. } => {
                return Err(Lost::Fatal(CliError::Server { code, message }));
            }
        }
    }
}

fn show_initial(view: &mut View, mode: Mode, style: &Style) {
    let mut out = std::io::stdout().lock();
    match mode {
        Mode::Redraw => {
            drop(out);
            redraw(view, style, "ready");
        }
        Mode::Lines => {
            let rows: Vec<Vec<Value>> = view.current().map(|r| view.cells(r)).collect();
            let names: Vec<&str> = view.names.iter().map(String::as_str).collect();
            let table_style = Style {
                format: Format::Table,
                expanded: Expanded::Auto,
                ..style.clone()
            };
            let _ = render::print_table(&mut out, &names, &rows, &table_style);
            let _ = writeln!(
                out,
                "live: {} row(s); changes follow (Ctrl-C stops)",
                rows.len()
            );
            let _ = out.flush();
        }
        Mode::Json => {
            for row in view.current() {
                let _ = writeln!(out, "{}", json_line("initial", view, row));
            }
            let _ = out.flush();
        }
    }
}

fn json_line(kind: &str, view: &View, row: &LiveRow) -> String {
    let mut names: Vec<&str> = view.names.iter().map(String::as_str).collect();
    names.push("_seq");
    let cells: Vec<Value> = names
        .iter()
        .map(|n| row.get(*n).cloned().unwrap_or(Value::Null))
        .collect();
    format!(
        "{{\"change\":\"{kind}\",\"row\":{}}}",
        render::row_object(&names, &cells)
    )
}

/// Prints one changed row (line modes; the redrawn table is drawn once per message).
fn show_change(view: &View, mode: Mode, kind: &str, row: &LiveRow) {
    if !view.ready {
        return;
    }
    let line = match mode {
        Mode::Redraw => return,
        Mode::Lines => {
            let names: Vec<&str> = view.names.iter().map(String::as_str).collect();
            format!("{kind}: {}", render::row_object(&names, &view.cells(row)))
        }
        Mode::Json => json_line(kind, view, row),
    };
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{line}");
    let _ = out.flush();
}

/// Redraws the table over the previous drawing, the newest rows that fit the terminal.
fn redraw(view: &mut View, style: &Style, last: &str) {
    let (width, height) = crate::term::size();
    let room = usize::from(height).saturating_sub(6).max(3);
    let skipped = view.live_rows.saturating_sub(room);
    let rows: Vec<Vec<Value>> = view
        .current()
        .skip(skipped)
        .map(|r| view.cells(r))
        .collect();
    let names: Vec<&str> = view.names.iter().map(String::as_str).collect();
    let table_style = Style {
        format: Format::Table,
        width,
        ..style.clone()
    };
    let mut buf = Vec::new();
    let _ = render::print_table(&mut buf, &names, &rows, &table_style);
    let text = String::from_utf8_lossy(&buf);
    let mut out = std::io::stdout().lock();
    if view.drawn > 0 {
        // Up over the last drawing, then clear to the end of the screen.
        let _ = write!(out, "\x1b[{}A\r\x1b[J", view.drawn);
    }
    let _ = write!(out, "{text}");
    let more = if skipped > 0 {
        format!(" ({skipped} older not shown)")
    } else {
        String::new()
    };
    let _ = writeln!(
        out,
        "live: {} row(s){more}, last: {last} (Ctrl-C stops)",
        view.live_rows
    );
    let _ = out.flush();
    view.drawn = text.lines().count() + 1;
}
