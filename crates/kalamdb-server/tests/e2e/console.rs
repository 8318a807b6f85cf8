//! The web console at `/ui`, driven in headless Chromium over the DevTools protocol against a
//! server with CORS off (same origin): it logs in, runs a query and shows the rows, subscribes
//! to a live query and shows a row another client inserts, browses the schema, lists users
//! and draws metrics. Screenshots are kept under `$CARGO_TARGET_TMPDIR/artifacts/`.

use crate::cdp::Page;
use crate::support::{ROOT_PASSWORD, TestServer};
use std::path::PathBuf;

/// Sets a form field or textarea as typing would (an `input` event follows).
fn type_into(selector: &str, text: &str) -> String {
    format!(
        "(() => {{ const e = document.querySelector({sel}); e.value = {text}; \
         e.dispatchEvent(new Event('input', {{bubbles: true}})); return true; }})()",
        sel = serde_json::to_string(selector).unwrap(),
        text = serde_json::to_string(text).unwrap(),
    )
}

fn click(selector: &str) -> String {
    format!(
        "(() => {{ document.querySelector({}).click(); return true; }})()",
        serde_json::to_string(selector).unwrap()
    )
}

fn artifact(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
        .join("artifacts")
        .join(name)
}

#[tokio::test]
async fn the_console_logs_in_queries_and_shows_live_rows() {
    let s = TestServer::start().await;
    let root = s.root_token().await;
    s.ok(
        &root,
        "CREATE NAMESPACE web; \
         CREATE SHARED TABLE web.notes (id INT PRIMARY KEY, body TEXT); \
         INSERT INTO web.notes VALUES (1, 'first note')",
    )
    .await;

    let mut page = Page::open(&format!("{}/ui", s.base)).await;

    // Log in.
    page.wait_for(
        "the login form",
        "!!document.querySelector('#login-password')",
    )
    .await;
    page.eval(&type_into("#login-user", "root")).await;
    page.eval(&type_into("#login-password", ROOT_PASSWORD))
        .await;
    page.eval(&click("#login-submit")).await;
    page.wait_for(
        "the console after login",
        "document.querySelector('header.top .who')?.innerText",
    )
    .await;
    let who = page
        .eval("document.querySelector('header.top .who').innerText")
        .await;
    assert!(who.as_str().unwrap().contains("root · system"), "{who}");

    // A query: highlighted in the editor, its rows in the grid.
    page.eval(&type_into(
        ".editor textarea",
        "SELECT id, body FROM web.notes ORDER BY id",
    ))
    .await;
    let keywords = page
        .eval("[...document.querySelectorAll('.editor pre .tok-kw')].map(e => e.textContent)")
        .await;
    assert_eq!(
        keywords,
        serde_json::json!(["SELECT", "FROM", "ORDER", "BY"]),
        "highlighted keywords"
    );
    page.eval(&click("#run")).await;
    let cells = page
        .wait_for(
            "the query's rows",
            "(() => { const t = document.querySelector('#results table.grid'); \
             return t && [...t.querySelectorAll('tbody td')].map(c => c.textContent); })()",
        )
        .await;
    assert_eq!(cells, serde_json::json!(["1", "first note"]));
    let history = page
        .eval("[...document.querySelectorAll('.history div')].map(e => e.textContent)")
        .await;
    assert_eq!(
        history[0], "SELECT id, body FROM web.notes ORDER BY id",
        "{history}"
    );
    // A failing statement shows its error code.
    page.eval(&type_into(".editor textarea", "SELECT * FROM web.nope"))
        .await;
    page.eval(&click("#run")).await;
    let error = page
        .wait_for(
            "the error",
            "document.querySelector('#results .error')?.innerText",
        )
        .await;
    assert!(error.as_str().unwrap().contains("web.nope"), "{error}");

    // Live: subscribe, then another client inserts; the row appears.
    page.eval("location.hash = '#live'").await;
    page.wait_for("the live page", "!!document.querySelector('#subscribe')")
        .await;
    page.eval(&type_into(".editor textarea", "SELECT * FROM web.notes"))
        .await;
    page.eval(&click("#subscribe")).await;
    page.wait_for(
        "the subscription to load",
        "document.querySelector('#live-state').innerText === 'live'",
    )
    .await;
    let loaded = page
        .eval("document.querySelector('#live-rows tbody').innerText")
        .await;
    assert!(loaded.as_str().unwrap().contains("first note"), "{loaded}");
    s.ok(
        &root,
        "INSERT INTO web.notes VALUES (2, 'from another client')",
    )
    .await;
    let rows = page
        .wait_for(
            "the inserted row",
            "(() => { const t = document.querySelector('#live-rows tbody').innerText; \
             return t.includes('from another client') && t; })()",
        )
        .await;
    assert!(rows.as_str().unwrap().contains("first note"), "{rows}");
    // Updates replace the row, deletes remove it; markup in values stays text.
    s.ok(&root, "UPDATE web.notes SET body = 'edited' WHERE id = 1")
        .await;
    s.ok(
        &root,
        "INSERT INTO web.notes VALUES (3, '<img src=x onerror=\"window.pwned=1\">')",
    )
    .await;
    page.wait_for(
        "the update and the markup row",
        "(() => { const t = document.querySelector('#live-rows tbody').innerText; \
         return t.includes('edited') && t.includes('<img src=x') && !t.includes('first note'); })()",
    )
    .await;
    let injected = page
        .eval("!!document.querySelector('#live-rows img') || !!window.pwned")
        .await;
    assert_eq!(injected, false, "a value became markup");
    s.ok(&root, "DELETE FROM web.notes WHERE id = 3").await;
    page.wait_for(
        "the delete",
        "document.querySelectorAll('#live-rows tbody tr').length === 2",
    )
    .await;
    let png = page.screenshot(&artifact("console-live.png")).await;
    assert!(png.starts_with(b"\x89PNG\r\n\x1a\n") && png.len() > 10_000);
    // The server lists the console's subscription.
    let live = s.ok(&root, "SELECT query FROM system.live").await;
    assert!(
        live.to_string().contains("SELECT * FROM web.notes"),
        "{live}"
    );

    // A reload keeps the session (a new access token from the refresh cookie).
    page.eval("location.hash = '#schema'; window.beforeReload = true")
        .await;
    page.reload().await;
    page.wait_for(
        "the console after a reload",
        "!window.beforeReload && document.querySelector('header.top .who')?.innerText",
    )
    .await;

    // Schema browser: the table, its kind and columns.
    page.wait_for(
        "the schema tree",
        "document.querySelector('.tree')?.innerText.includes('notes')",
    )
    .await;
    page.eval(
        "[...document.querySelectorAll('.tree a')].find(a => a.textContent === 'notes').click()",
    )
    .await;
    let detail = page
        .wait_for(
            "the table's columns",
            "document.querySelector('.schema-layout table.grid')?.innerText",
        )
        .await;
    let detail = detail.as_str().unwrap();
    assert!(
        detail.contains("body") && detail.contains("TEXT"),
        "{detail}"
    );
    let kind = page
        .eval("document.querySelector('.tree .badge').innerText")
        .await;
    assert_eq!(kind, "shared");

    // Users: root is listed; a user made from the form appears.
    page.eval("location.hash = '#users'").await;
    page.wait_for(
        "the users list",
        "document.querySelector('main table.grid')?.innerText.includes('root')",
    )
    .await;
    page.eval(&type_into("input[aria-label='user name']", "carol"))
        .await;
    page.eval(&type_into("input[aria-label='password']", "carol-pass-123"))
        .await;
    page.eval(&click("form.row button[type=submit]")).await;
    page.wait_for(
        "the new user",
        "document.querySelector('main table.grid')?.innerText.includes('carol')",
    )
    .await;
    let users = s
        .ok(
            &root,
            "SELECT role FROM system.users WHERE user_id = 'carol'",
        )
        .await;
    assert_eq!(users["rows"], serde_json::json!([["user"]]));

    // Metrics: the charts fill from system.stats.
    page.eval("location.hash = '#metrics'").await;
    let memory = page
        .wait_for(
            "the memory chart",
            "(() => { const c = [...document.querySelectorAll('.chart')].find(c => \
             c.innerText.startsWith('Resident memory')); \
             const v = c && c.querySelector('.now').innerText; return v !== '–' && v; })()",
        )
        .await;
    let mib: f64 = memory.as_str().unwrap().replace(',', "").parse().unwrap();
    assert!(mib > 1.0, "resident memory {mib} MiB");
    // Counters are shown as rates: the console's own polling makes HTTP requests per second.
    let rate = page
        .wait_for(
            "a request rate after two samples",
            "(() => { const c = [...document.querySelectorAll('.chart')].find(c => \
             c.innerText.startsWith('HTTP requests')); \
             const v = c && c.querySelector('.now').innerText; return v !== '–' && v; })()",
        )
        .await;
    let rate: f64 = rate.as_str().unwrap().replace(',', "").parse().unwrap();
    assert!(rate > 0.0, "HTTP requests/s {rate}");
    page.screenshot(&artifact("console-metrics.png")).await;

    assert!(page.errors.is_empty(), "page errors: {:?}", page.errors);
}

#[tokio::test]
async fn the_console_files_are_served_with_a_strict_policy() {
    let s = TestServer::start().await;
    let http = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let r = http.get(format!("{}/ui", s.base)).send().await.unwrap();
    assert_eq!(r.status(), 308);
    assert_eq!(r.headers()["location"], "/ui/");
    let r = http.get(format!("{}/ui/", s.base)).send().await.unwrap();
    assert_eq!(r.status(), 200);
    let csp = r.headers()["content-security-policy"].to_str().unwrap();
    assert!(csp.contains("script-src 'self'") && csp.contains("frame-ancestors 'none'"));
    let etag = r.headers()["etag"].clone();
    assert!(r.text().await.unwrap().contains("app.js"));
    let r = http
        .get(format!("{}/ui/", s.base))
        .header("if-none-match", etag)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 304);
    let r = http
        .get(format!("{}/ui/app.js", s.base))
        .send()
        .await
        .unwrap();
    assert_eq!(
        r.headers()["content-type"],
        "text/javascript; charset=utf-8"
    );
    for missing in ["/ui/nope.js", "/ui/..%2FCargo.toml", "/ui/a/b.js"] {
        let r = http
            .get(format!("{}{missing}", s.base))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 404, "{missing}");
    }

    // [server] ui = false: no console.
    let s = TestServer::start_with(|c| c.engine.server.ui = false).await;
    let r = http.get(format!("{}/ui/", s.base)).send().await.unwrap();
    assert_eq!(r.status(), 404);
}
