//! A real browser against the server: headless Chromium (Debian's `chromium`, installed by
//! `scripts/setup.sh --browser`) loads a web app from another origin, a second loopback port
//! served by this test. From a listed origin the app logs in, runs SQL (CORS preflights and
//! actual requests), subscribes over the WebSocket and sees its own INSERT arrive; from an origin
//! not listed the same app is refused by the browser (no CORS headers) and the WebSocket upgrade
//! answers 403. The page reports what happened by POSTing to its own origin.

use crate::support::{ROOT_PASSWORD, TestServer};
use axum::extract::State;
use axum::routing::{get, post};
use serde_json::Value;
use std::time::Duration;
use tokio::sync::mpsc;

/// The web app: every step's outcome goes into `report`, sent to `/report` of its own origin.
const PAGE: &str = r#"<!doctype html>
<html><body><pre id="out">running</pre><script>
const api = new URLSearchParams(location.search).get("api");
const report = {};
const done = () => fetch("/report", {method: "POST", body: JSON.stringify(report)});
async function sql(token, text) {
  const r = await fetch(api + "/v1/api/sql", {
    method: "POST",
    headers: {"Content-Type": "application/json", "Authorization": "Bearer " + token},
    body: JSON.stringify({sql: text}),
  });
  return [r.status, await r.json()];
}
function live(token) {
  return new Promise((resolve) => {
    const seen = [];
    let over = false;
    const ws = new WebSocket(api.replace("http", "ws") + "/v1/ws?compress=false");
    const finish = (why) => {
      if (over) return;
      over = true;
      seen.push(why);
      try { ws.close(); } catch (e) {}
      resolve(seen);
    };
    setTimeout(() => finish("timeout"), 8000);
    ws.onerror = () => finish("error");
    ws.onclose = (e) => finish("close:" + e.code);
    ws.onopen = () => ws.send(JSON.stringify({type: "authenticate", method: "jwt", token,
      protocol: {serialization: "json", compression: "none"}}));
    ws.onmessage = async (e) => {
      const m = JSON.parse(e.data);
      seen.push(m.type + (m.change_type ? ":" + m.change_type : ""));
      if (m.type === "auth_success") {
        ws.send(JSON.stringify({type: "subscribe", subscription: {id: "s1",
          sql: "SELECT * FROM web.notes", options: {}}}));
      } else if (m.type === "initial_data_batch") {
        await sql(token, "INSERT INTO web.notes (id, body) VALUES (2, 'from the browser')");
      } else if (m.type === "change") {
        report.change_rows = m.rows;
        finish("done");
      }
    };
  });
}
(async () => {
  let token = null;
  try {
    const r = await fetch(api + "/v1/api/auth/login", {method: "POST",
      headers: {"Content-Type": "application/json"},
      body: JSON.stringify({user: "root", password: "PASSWORD"})});
    report.login_status = r.status;
    token = (await r.json()).access_token;
    const [status, body] = await sql(token, "SELECT count(*) AS n FROM web.notes");
    report.sql_status = status;
    report.sql_rows = body.results[0].rows;
  } catch (e) {
    report.http_error = String(e);
  }
  report.live = await live(token || "no-token");
  document.getElementById("out").textContent = JSON.stringify(report);
  await done();
})();
</script></body></html>"#;

/// Serves the app on a loopback port; reports arrive on the returned channel.
async fn serve_app() -> (String, mpsc::UnboundedReceiver<Value>) {
    let (tx, rx) = mpsc::unbounded_channel::<Value>();
    let page = PAGE.replace("PASSWORD", ROOT_PASSWORD);
    let app = axum::Router::new()
        .route(
            "/",
            get(move || {
                let page = page.clone();
                async move { axum::response::Html(page) }
            }),
        )
        .route(
            "/report",
            post(
                |State(tx): State<mpsc::UnboundedSender<Value>>, body: String| async move {
                    let _ = tx.send(serde_json::from_str(&body).unwrap_or(Value::Null));
                },
            ),
        )
        .with_state(tx);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let origin = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });
    (origin, rx)
}

/// Loads `url` in headless Chromium and returns the page's report.
async fn run_browser(url: &str, reports: &mut mpsc::UnboundedReceiver<Value>) -> Value {
    let profile = tempfile::tempdir().unwrap();
    let mut browser = crate::cdp::launch(profile.path(), &[], url);
    let report = tokio::time::timeout(Duration::from_secs(60), reports.recv())
        .await
        .expect("the page reported within 60 s")
        .expect("report channel open");
    let _ = browser.kill().await;
    report
}

#[tokio::test]
async fn a_web_app_from_a_listed_origin_logs_in_queries_and_subscribes() {
    let (allowed, mut allowed_reports) = serve_app().await;
    let (other, mut other_reports) = serve_app().await;
    let listed = allowed.clone();
    let s = TestServer::start_with(move |c| {
        c.security.cors.allowed_origins = vec![listed];
    })
    .await;
    let root = s.root_token().await;
    s.ok(
        &root,
        "CREATE NAMESPACE web; CREATE SHARED TABLE web.notes (id INT PRIMARY KEY, body TEXT); \
         INSERT INTO web.notes VALUES (1, 'first')",
    )
    .await;

    let report = run_browser(&format!("{allowed}/?api={}", s.base), &mut allowed_reports).await;
    assert_eq!(report["login_status"], 200, "{report}");
    assert_eq!(report["sql_status"], 200, "{report}");
    assert_eq!(report["sql_rows"], serde_json::json!([["1"]]), "{report}");
    let live: Vec<&str> = report["live"]
        .as_array()
        .unwrap_or_else(|| panic!("{report}"))
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    assert_eq!(
        live,
        [
            "auth_success",
            "subscription_ack",
            "initial_data_batch",
            "change:insert",
            "done"
        ],
        "{report}"
    );
    assert_eq!(
        report["change_rows"][0]["body"], "from the browser",
        "{report}"
    );

    // The same app from an origin that is not listed: the browser blocks the responses (no
    // CORS headers) and the server refuses the WebSocket upgrade.
    let report = run_browser(&format!("{other}/?api={}", s.base), &mut other_reports).await;
    assert!(
        report["http_error"]
            .as_str()
            .is_some_and(|e| e.contains("Failed to fetch")),
        "{report}"
    );
    assert_eq!(report["live"], serde_json::json!(["error"]), "{report}");
}
