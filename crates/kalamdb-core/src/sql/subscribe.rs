//! `SUBSCRIBE TO <select> [OPTIONS (last_rows=…, batch_size=…, from_seq_id=…)]` sent over
//! HTTP (`docs/protocol.md` §6.8): live queries run on the WebSocket, so this registers
//! nothing; it checks the query and answers one row saying where and what to subscribe.

use super::ddl::table_output;
use super::session::Output;
use super::table_select::{TableSelect, parse_subscription};
use crate::app_context::AppContext;
use kalamdb_catalog::error::{KalamError, Result};
use kalamdb_catalog::value::Value;
use kalamdb_commons::KalamDataType as K;
use serde_json::{Map, Value as Json};

/// Answers `SUBSCRIBE TO` (`text` is what follows `TO`); `ws_url` is where the transport
/// serves live queries (the transport says: see `SqlExecutor::new`).
pub fn subscribe_to(app: &AppContext, ws_url: &str, text: &str) -> Result<Output> {
    let (select, options) = split_options(text)?;
    let limits = crate::expr_limits::ExprLimits::of(&app.config().limits);
    let stmt = parse_subscription(select, limits)?;
    let table = TableSelect::of(&stmt)?.qualified_table()?;
    let table = format!("{}.{}", table.namespace.unwrap_or_default(), table.table);
    let mut subscription = Map::new();
    let id = uuid::Uuid::new_v4().simple();
    subscription.insert(
        "id".into(),
        Json::String(format!("sub-{}-{id}", table.replace('.', "-"))),
    );
    subscription.insert("sql".into(), Json::String(select.to_string()));
    if let Some(options) = options {
        subscription.insert("options".into(), Json::Object(options));
    }
    table_output(
        &[
            ("status", K::Text, false),
            ("ws_url", K::Text, false),
            ("subscription", K::Json, false),
            ("message", K::Text, false),
        ],
        vec![vec![
            Value::Text("active".into()),
            Value::Text(ws_url.to_string()),
            Value::Text(Json::Object(subscription).to_string()),
            Value::Text(
                "Nothing was registered: open ws_url, authenticate, and send a subscribe \
                 message with this subscription to receive the rows and their changes"
                    .into(),
            ),
        ]],
    )
}

/// The query and its `OPTIONS (k=v, …)` as a JSON object (integers only).
fn split_options(text: &str) -> Result<(&str, Option<Map<String, Json>>)> {
    let upper = text.to_ascii_uppercase();
    let Some(at) = upper.rfind("OPTIONS") else {
        return Ok((text.trim(), None));
    };
    let list = text[at + "OPTIONS".len()..].trim();
    let Some(inner) = list.strip_prefix('(').and_then(|l| l.strip_suffix(')')) else {
        return Ok((text.trim(), None));
    };
    let mut options = Map::new();
    for pair in inner.split(',').filter(|p| !p.trim().is_empty()) {
        let (key, value) = pair.split_once('=').ok_or_else(|| bad_option(pair))?;
        let key = key.trim().to_ascii_lowercase();
        if !matches!(
            key.as_str(),
            "last_rows" | "batch_size" | "from_seq_id" | "from"
        ) {
            return Err(bad_option(pair));
        }
        let value: i64 = value.trim().parse().map_err(|_| bad_option(pair))?;
        options.insert(key, Json::from(value));
    }
    Ok((text[..at].trim(), Some(options)))
}

fn bad_option(pair: &str) -> KalamError {
    KalamError::InvalidSql(format!(
        "Invalid SUBSCRIBE option '{}': use last_rows, batch_size or from_seq_id = <integer>",
        pair.trim()
    ))
}
