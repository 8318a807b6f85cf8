//! A small Chrome DevTools Protocol driver for the browser tests: starts headless Chromium
//! (Debian's `chromium`, installed by `scripts/setup.sh --browser`) with remote debugging on a
//! free port, opens one page, evaluates scripts in it, and takes screenshots. Exceptions and
//! console errors of the page (script errors, content-policy violations) are collected so a
//! test can require there were none.

use base64::Engine;
use futures::{SinkExt, StreamExt};
use serde_json::{Value, json};
use std::path::Path;
use std::time::Duration;
use tokio_tungstenite::tungstenite::Message;

/// Flags every browser test starts Chromium with.
pub(crate) const CHROMIUM_FLAGS: &[&str] = &[
    "--headless=new",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-dev-shm-usage",
    "--no-first-run",
    "--disable-background-networking",
];

/// Starts Chromium on `url` with a fresh profile; it is killed when the child is dropped.
pub(crate) fn launch(profile: &Path, extra: &[&str], url: &str) -> tokio::process::Child {
    tokio::process::Command::new("chromium")
        .args(CHROMIUM_FLAGS)
        .args(extra)
        .arg(format!("--user-data-dir={}", profile.display()))
        .arg(url)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("chromium is needed for this test: run scripts/setup.sh --browser")
}

type Socket =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// A browser with one page attached.
pub(crate) struct Page {
    _browser: tokio::process::Child,
    _profile: tempfile::TempDir,
    socket: Socket,
    session: String,
    next_id: u64,
    /// Uncaught exceptions and console errors seen so far.
    pub(crate) errors: Vec<String>,
}

impl Page {
    /// Starts Chromium and opens `url` in a 1280x900 page.
    pub(crate) async fn open(url: &str) -> Self {
        let profile = tempfile::tempdir().unwrap();
        let browser = launch(
            profile.path(),
            &["--remote-debugging-port=0", "--window-size=1280,900"],
            "about:blank",
        );
        // Chromium writes the port it picked, and the browser endpoint's path, to this file.
        let port_file = profile.path().join("DevToolsActivePort");
        let mut endpoint = None;
        for _ in 0..300 {
            if let Ok(text) = std::fs::read_to_string(&port_file) {
                let mut lines = text.lines();
                if let (Some(port), Some(path)) = (lines.next(), lines.next()) {
                    endpoint = Some(format!("ws://127.0.0.1:{port}{path}"));
                    break;
                }
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let endpoint = endpoint.expect("chromium opened its debugging port within 30 s");
        let (socket, _) = tokio_tungstenite::connect_async(endpoint).await.unwrap();
        let mut page = Self {
            _browser: browser,
            _profile: profile,
            socket,
            session: String::new(),
            next_id: 0,
            errors: Vec::new(),
        };
        let target = page
            .call("Target.createTarget", json!({"url": "about:blank"}))
            .await;
        let attached = page
            .call(
                "Target.attachToTarget",
                json!({"targetId": target["targetId"], "flatten": true}),
            )
            .await;
        page.session = attached["sessionId"].as_str().unwrap().to_owned();
        page.call("Runtime.enable", json!({})).await;
        page.call("Log.enable", json!({})).await;
        page.call("Page.enable", json!({})).await;
        page.call("Page.navigate", json!({"url": url})).await;
        page
    }

    /// Sends one command (to the page once attached) and answers its result.
    async fn call(&mut self, method: &str, params: Value) -> Value {
        match self.try_call(method, params).await {
            Ok(v) => v,
            Err(e) => panic!("{method} failed: {e}"),
        }
    }

    /// [`Page::call`], answering the protocol's error instead of failing on it.
    async fn try_call(&mut self, method: &str, params: Value) -> Result<Value, Value> {
        self.next_id += 1;
        let id = self.next_id;
        let mut msg = json!({"id": id, "method": method, "params": params});
        if !self.session.is_empty() {
            msg["sessionId"] = json!(self.session);
        }
        self.socket
            .send(Message::Text(msg.to_string().into()))
            .await
            .unwrap();
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        loop {
            let frame = tokio::time::timeout_at(deadline, self.socket.next())
                .await
                .unwrap_or_else(|_| panic!("no answer to {method} within 30 s"))
                .expect("the browser closed its debugging connection")
                .unwrap();
            let Message::Text(text) = frame else { continue };
            let m: Value = serde_json::from_str(&text).unwrap();
            if m["id"] == id {
                return if m["error"].is_null() {
                    Ok(m["result"].clone())
                } else {
                    Err(m["error"].clone())
                };
            }
            self.note_event(&m);
        }
    }

    fn note_event(&mut self, m: &Value) {
        match m["method"].as_str() {
            Some("Runtime.exceptionThrown") => self
                .errors
                .push(m["params"]["exceptionDetails"].to_string()),
            // Failed HTTP answers are logged with source "network": the test checks those
            // itself (a failed login or statement is expected there).
            Some("Log.entryAdded")
                if m["params"]["entry"]["level"] == "error"
                    && m["params"]["entry"]["source"] != "network" =>
            {
                self.errors.push(m["params"]["entry"]["text"].to_string())
            }
            _ => {}
        }
    }

    /// Evaluates `expression` in the page (awaiting a promise) and answers its value.
    pub(crate) async fn eval(&mut self, expression: &str) -> Value {
        let r = self
            .call(
                "Runtime.evaluate",
                json!({"expression": expression, "awaitPromise": true, "returnByValue": true}),
            )
            .await;
        assert!(
            r["exceptionDetails"].is_null(),
            "{expression} threw: {}",
            r["exceptionDetails"]
        );
        r["result"]["value"].clone()
    }

    /// Evaluates `expression` until it answers something other than null/false/""; panics
    /// with `what` after 20 s. An evaluation cut off by a navigation (a reload) counts as not
    /// yet.
    pub(crate) async fn wait_for(&mut self, what: &str, expression: &str) -> Value {
        for _ in 0..200 {
            let r = self
                .try_call(
                    "Runtime.evaluate",
                    json!({"expression": expression, "awaitPromise": true, "returnByValue": true}),
                )
                .await;
            if let Ok(r) = r
                && r["exceptionDetails"].is_null()
            {
                let v = &r["result"]["value"];
                if !(v.is_null() || *v == false || *v == "") {
                    return v.clone();
                }
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let shown = self.eval("document.body.innerText").await;
        panic!("timed out waiting for {what}; the page shows:\n{shown}");
    }

    /// Reloads the page.
    pub(crate) async fn reload(&mut self) {
        self.call("Page.reload", json!({})).await;
    }

    /// A PNG of the page as it is now, written to `path`; answers its bytes.
    pub(crate) async fn screenshot(&mut self, path: &Path) -> Vec<u8> {
        let r = self
            .call("Page.captureScreenshot", json!({"format": "png"}))
            .await;
        let png = base64::engine::general_purpose::STANDARD
            .decode(r["data"].as_str().unwrap())
            .unwrap();
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, &png).unwrap();
        png
    }
}
