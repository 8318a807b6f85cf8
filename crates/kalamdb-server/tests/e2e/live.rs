//! Live queries over `GET /v1/ws`, spoken to with a plain WebSocket client: authentication,
//! initial batches, changes, per-user routing, unsubscribe, compression and errors.

use crate::support::{TestServer, rows};
use flate2::read::GzDecoder;
use futures::{SinkExt, StreamExt};
use serde_json::{Value, json};
use std::io::Read;
use std::time::Duration;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

type Socket =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// A test WebSocket client.
pub(crate) struct Ws {
    socket: Socket,
    /// Binary (gzip) frames received.
    pub(crate) binary_frames: usize,
}

impl Ws {
    /// Connects with `Authorization: Bearer <token>` (or none) and an optional query string.
    pub(crate) async fn connect(s: &TestServer, token: Option<&str>, query: &str) -> Self {
        Self::connect_to(&s.base, token, query).await
    }

    /// [`Self::connect`] to the server at `base`.
    pub(crate) async fn connect_to(base: &str, token: Option<&str>, query: &str) -> Self {
        let url = format!("{}/v1/ws{query}", base.replacen("http", "ws", 1));
        let mut req = url.into_client_request().unwrap();
        if let Some(t) = token {
            req.headers_mut()
                .insert("Authorization", format!("Bearer {t}").parse().unwrap());
        }
        let (socket, _) = tokio_tungstenite::connect_async(req).await.unwrap();
        Self {
            socket,
            binary_frames: 0,
        }
    }

    /// Connects with a token and expects `auth_success`.
    pub(crate) async fn authed(s: &TestServer, token: &str) -> Self {
        let mut ws = Self::connect(s, Some(token), "").await;
        assert_eq!(ws.next().await["type"], "auth_success");
        ws
    }

    /// Sends a Close frame (code 1000, "bye").
    pub(crate) async fn close(&mut self) {
        use tokio_tungstenite::tungstenite::protocol::CloseFrame;
        use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
        self.socket
            .send(Message::Close(Some(CloseFrame {
                code: CloseCode::Normal,
                reason: "bye".into(),
            })))
            .await
            .unwrap();
    }

    /// Sends a WebSocket ping (keeps a quiet subscriber within the server's idle timeout).
    pub(crate) async fn ping(&mut self) {
        self.socket
            .send(Message::Ping(Vec::new().into()))
            .await
            .unwrap();
    }

    pub(crate) async fn send(&mut self, msg: Value) {
        self.socket
            .send(Message::Text(msg.to_string().into()))
            .await
            .unwrap();
    }

    /// The next server message (JSON, gunzipped when binary); panics after 5 s.
    pub(crate) async fn next(&mut self) -> Value {
        self.try_next(Duration::from_secs(5))
            .await
            .expect("no message within 5 s")
    }

    /// The next server message, or `None` if none comes within `wait`.
    pub(crate) async fn try_next(&mut self, wait: Duration) -> Option<Value> {
        loop {
            let frame = tokio::time::timeout(wait, self.socket.next())
                .await
                .ok()??;
            match frame.ok()? {
                Message::Text(t) => return Some(serde_json::from_str(&t).unwrap()),
                Message::Binary(b) => {
                    self.binary_frames += 1;
                    let mut text = String::new();
                    GzDecoder::new(&b[..]).read_to_string(&mut text).unwrap();
                    return Some(serde_json::from_str(&text).unwrap());
                }
                Message::Close(f) => {
                    return Some(json!({"type": "close", "code": f.map(|f| u16::from(f.code))}));
                }
                _ => continue,
            }
        }
    }

    pub(crate) async fn subscribe(&mut self, id: &str, sql: &str, options: Value) {
        self.send(json!({"type": "subscribe", "subscription": {"id": id, "sql": sql, "options": options}}))
            .await;
    }

    /// Subscribes and reads the ack and every initial batch (answering `next_batch`); returns
    /// the initial rows.
    pub(crate) async fn subscribe_all(
        &mut self,
        id: &str,
        sql: &str,
        options: Value,
    ) -> Vec<Value> {
        self.subscribe(id, sql, options).await;
        let ack = self.next().await;
        assert_eq!(ack["type"], "subscription_ack", "{ack}");
        let mut rows = Vec::new();
        loop {
            let batch = self.next().await;
            assert_eq!(batch["type"], "initial_data_batch", "{batch}");
            rows.extend(batch["rows"].as_array().unwrap().iter().cloned());
            if !batch["batch_control"]["has_more"].as_bool().unwrap() {
                assert_eq!(batch["batch_control"]["status"], "ready");
                return rows;
            }
            self.send(json!({"type": "next_batch", "subscription_id": id}))
                .await;
        }
    }
}

fn seq(row: &Value) -> i64 {
    row["_seq"].as_str().unwrap().parse().unwrap()
}

#[tokio::test]
async fn subscribe_receives_initial_rows_then_changes_of_its_own_user() {
    let s = TestServer::start().await;
    let root = s.root_token().await;
    s.ok(&root, "CREATE NAMESPACE app; CREATE USER TABLE app.notes (id BIGINT PRIMARY KEY, body TEXT, done BOOLEAN)").await;
    let users = s.users_with_tokens(&root, &["alice", "bob"]).await;
    let (alice, bob) = (&users[0], &users[1]);
    s.ok(
        alice,
        "INSERT INTO app.notes VALUES (1, 'one', false), (2, 'two', true), (3, 'three', false)",
    )
    .await;
    s.ok(bob, "INSERT INTO app.notes VALUES (1, 'bob one', false)")
        .await;

    let mut ws = Ws::authed(&s, alice).await;
    let rows = ws
        .subscribe_all(
            "s1",
            "SELECT id, body FROM app.notes WHERE done = false",
            json!({}),
        )
        .await;
    let got: Vec<(Value, Value)> = rows
        .iter()
        .map(|r| (r["id"].clone(), r["body"].clone()))
        .collect();
    assert_eq!(
        got,
        vec![(json!("1"), json!("one")), (json!("3"), json!("three"))]
    );
    assert!(
        rows[0].get("done").is_none(),
        "projection applies: {}",
        rows[0]
    );
    let snapshot_max = rows.iter().map(seq).max().unwrap();

    // Bob's write is routed to bob only; alice's own writes reach her.
    s.ok(bob, "INSERT INTO app.notes VALUES (7, 'bob seven', false)")
        .await;
    s.ok(alice, "INSERT INTO app.notes VALUES (4, 'four', false)")
        .await;
    let c = ws.next().await;
    assert_eq!(
        (c["type"].as_str(), c["change_type"].as_str()),
        (Some("change"), Some("insert")),
        "{c}"
    );
    assert_eq!(c["subscription_id"], "s1");
    assert_eq!(c["rows"][0]["id"], "4");
    let insert_seq = seq(&c["rows"][0]);
    assert!(insert_seq > snapshot_max);

    // A filtered-out row does not arrive; an update moving a row out of the filter is a delete.
    s.ok(alice, "INSERT INTO app.notes VALUES (5, 'five', true)")
        .await;
    s.ok(alice, "UPDATE app.notes SET body = 'FOUR' WHERE id = 4")
        .await;
    let c = ws.next().await;
    assert_eq!(c["change_type"], "update", "{c}");
    assert_eq!(c["rows"][0]["body"], "FOUR");
    assert_eq!(c["old_values"][0]["body"], "four");
    assert_eq!(c["old_values"][0]["id"], "4");
    s.ok(alice, "UPDATE app.notes SET done = true WHERE id = 3")
        .await;
    let c = ws.next().await;
    assert_eq!(
        (c["change_type"].as_str(), c["old_values"][0]["id"].as_str()),
        (Some("delete"), Some("3")),
        "{c}"
    );
    s.ok(alice, "DELETE FROM app.notes WHERE id = 1").await;
    let c = ws.next().await;
    assert_eq!(c["change_type"], "delete", "{c}");
    assert!(
        seq(&c["old_values"][0]) > insert_seq,
        "a delete carries its tombstone's _seq"
    );

    // After unsubscribe nothing more arrives.
    ws.send(json!({"type": "unsubscribe", "subscription_id": "s1"}))
        .await;
    ws.send(json!({"type": "ping"})).await;
    s.ok(alice, "INSERT INTO app.notes VALUES (6, 'six', false)")
        .await;
    assert_eq!(ws.try_next(Duration::from_millis(300)).await, None);
}

#[tokio::test]
async fn initial_data_comes_in_ascending_batches_and_options_select_the_load() {
    let s = TestServer::start().await;
    let root = s.root_token().await;
    s.ok(&root, "CREATE NAMESPACE app; CREATE TABLE app.t (id INT PRIMARY KEY, v TEXT) WITH (ACCESS_LEVEL = 'PUBLIC')").await;
    // Keys inserted out of order: batches follow _seq, not the key.
    for id in [5, 1, 4, 2, 3] {
        s.ok(&root, &format!("INSERT INTO app.t VALUES ({id}, 'v{id}')"))
            .await;
    }
    let mut ws = Ws::authed(&s, &root).await;
    ws.subscribe("b", "SELECT * FROM app.t", json!({"batch_size": 2}))
        .await;
    let ack = ws.next().await;
    assert_eq!(ack["batch_control"]["status"], "loading", "{ack}");
    assert_eq!(ack["schema"][0]["name"], "id");
    let mut statuses = Vec::new();
    let mut ids = Vec::new();
    let mut seqs = Vec::new();
    loop {
        let b = ws.next().await;
        statuses.push(b["batch_control"]["status"].as_str().unwrap().to_string());
        for r in b["rows"].as_array().unwrap() {
            ids.push(r["id"].as_i64().unwrap());
            seqs.push(seq(r));
            assert_eq!(r["_deleted"], false);
        }
        if !b["batch_control"]["has_more"].as_bool().unwrap() {
            break;
        }
        ws.send(json!({"type": "next_batch", "subscription_id": "b"}))
            .await;
    }
    assert_eq!(statuses, ["loading", "loading_batch", "ready"]);
    assert_eq!(ids, [5, 1, 4, 2, 3]);
    assert!(seqs.windows(2).all(|w| w[0] < w[1]));

    // last_rows: the newest rows only; null options: no initial data at all.
    let rows = ws
        .subscribe_all("last", "SELECT id FROM app.t", json!({"last_rows": 2}))
        .await;
    assert_eq!(
        rows.iter()
            .map(|r| r["id"].as_i64().unwrap())
            .collect::<Vec<_>>(),
        [2, 3]
    );
    ws.subscribe("none", "SELECT id FROM app.t", Value::Null)
        .await;
    let ack = ws.next().await;
    assert_eq!(
        (
            ack["type"].as_str(),
            ack["batch_control"]["status"].as_str()
        ),
        (Some("subscription_ack"), Some("ready"))
    );
    // from: resume after a _seq: later rows as data, deletes as changes.
    s.ok(&root, "DELETE FROM app.t WHERE id = 4").await;
    for _ in 0..3 {
        ws.next().await; // the delete, seen by b, last and none
    }
    let rows = ws
        .subscribe_all("resume", "SELECT id FROM app.t", json!({"from": seqs[3]}))
        .await;
    assert_eq!(
        rows.iter()
            .map(|r| r["id"].as_i64().unwrap())
            .collect::<Vec<_>>(),
        [3]
    );
    let c = ws.next().await;
    assert_eq!(
        (c["subscription_id"].as_str(), c["change_type"].as_str()),
        (Some("resume"), Some("delete")),
        "{c}"
    );
    assert_eq!(c["old_values"][0]["id"], 4);
}

#[tokio::test]
async fn auth_paths_errors_and_compression() {
    let s = TestServer::start().await;
    let root = s.root_token().await;
    s.ok(&root, "CREATE NAMESPACE app; CREATE TABLE app.priv (id INT PRIMARY KEY, v TEXT); CREATE USER TABLE app.u (id INT PRIMARY KEY, v TEXT)").await;
    let users = s.users_with_tokens(&root, &["carol"]).await;

    // Bad header token: auth_error then close 1008.
    let mut ws = Ws::connect(&s, Some("not-a-token"), "").await;
    assert_eq!(ws.next().await["type"], "auth_error");
    assert_eq!(ws.next().await["code"], 1008);

    // authenticate message (browser path); subscribe before it is refused.
    let mut ws = Ws::connect(&s, None, "").await;
    ws.subscribe("early", "SELECT * FROM app.u", json!({}))
        .await;
    let e = ws.next().await;
    assert_eq!(
        (e["code"].as_str(), e["subscription_id"].as_str()),
        (Some("AUTH_REQUIRED"), Some("subscribe"))
    );
    ws.send(json!({"type": "authenticate", "method": "jwt", "token": users[0], "protocol": {"serialization": "json", "compression": "gzip"}})).await;
    let ok = ws.next().await;
    assert_eq!(
        (
            ok["type"].as_str(),
            ok["user"].as_str(),
            ok["role"].as_str()
        ),
        (Some("auth_success"), Some("carol"), Some("user"))
    );

    for (sql, code) in [
        ("SELECT * FROM app.priv", "UNAUTHORIZED"),
        ("SELECT * FROM app.missing", "NOT_FOUND"),
        ("SELECT * FROM app.u ORDER BY id", "UNSUPPORTED"),
        ("SELECT * FROM u", "INVALID_SQL"),
        ("SELECT * FROM system.users", "UNAUTHORIZED"),
    ] {
        ws.subscribe("x", sql, json!({})).await;
        let e = ws.next().await;
        assert_eq!(
            (e["type"].as_str(), e["code"].as_str()),
            (Some("error"), Some(code)),
            "{sql}: {e}"
        );
    }
    ws.subscribe(" ", "SELECT * FROM app.u", json!({})).await;
    assert_eq!(ws.next().await["code"], "INVALID_SUBSCRIPTION_ID");
    // An invalid message closes with 1011.
    ws.send(json!({"type": "bogus"})).await;
    assert_eq!(ws.next().await["code"], 1011);

    // Large messages are gzip binary frames, unless ?compress=false.
    let big = "x".repeat(2000);
    s.ok(&users[0], &format!("INSERT INTO app.u VALUES (1, '{big}')"))
        .await;
    for (query, binary) in [("", 1), ("?compress=false", 0)] {
        let mut ws = Ws::connect(&s, Some(&users[0]), query).await;
        assert_eq!(ws.next().await["type"], "auth_success");
        let rows = ws
            .subscribe_all("big", "SELECT * FROM app.u", json!({}))
            .await;
        assert_eq!(rows[0]["v"], big.as_str());
        assert_eq!(ws.binary_frames, binary, "query {query:?}");
    }
}

async fn live_rows(s: &TestServer, token: &str) -> Vec<Vec<Value>> {
    let r = s
        .ok(token, "SELECT subscription_id, user_id, table_name, status, query FROM system.live ORDER BY subscription_id")
        .await;
    crate::support::rows(&r)
}

#[tokio::test]
async fn system_live_lists_subscriptions_and_closing_sockets_removes_them() {
    let s = TestServer::start().await;
    let root = s.root_token().await;
    s.ok(
        &root,
        "CREATE NAMESPACE app; CREATE USER TABLE app.n (id INT PRIMARY KEY)",
    )
    .await;
    let users = s.users_with_tokens(&root, &["dave"]).await;
    let mut sockets = Vec::new();
    for _ in 0..10 {
        let mut ws = Ws::authed(&s, &users[0]).await;
        for i in 0..10 {
            ws.subscribe(
                &format!("s{i:02}"),
                "SELECT * FROM app.n WHERE id > 0",
                json!({}),
            )
            .await;
            assert_eq!(ws.next().await["type"], "subscription_ack");
            assert_eq!(ws.next().await["type"], "initial_data_batch");
        }
        sockets.push(ws);
    }
    let rows = live_rows(&s, &root).await;
    assert_eq!(rows.len(), 100);
    assert_eq!(
        rows[0][1..4].to_vec(),
        vec![json!("dave"), json!("n"), json!("active")]
    );
    // Non-admins may not read system.live.
    assert_eq!(s.sql(&users[0], "SELECT * FROM system.live").await.0, 403);

    // KILL LIVE QUERY ends one subscription and tells its client.
    let r = s
        .ok(
            &root,
            "SELECT live_id FROM system.live WHERE subscription_id = 's03' LIMIT 1",
        )
        .await;
    let live_id = crate::support::rows(&r)[0][0].as_str().unwrap().to_string();
    s.ok(&users[0], &format!("KILL LIVE QUERY '{live_id}'"))
        .await;
    assert_eq!(live_rows(&s, &root).await.len(), 99);
    let (status, code, _) = s.err(&root, &format!("KILL LIVE QUERY '{live_id}'")).await;
    assert_eq!((status, code.as_str()), (400, "SQL_EXECUTION_ERROR"));

    // Dropping the sockets (no unsubscribe, no close frame) removes everything.
    drop(sockets);
    let mut left = usize::MAX;
    for _ in 0..50 {
        left = live_rows(&s, &root).await.len();
        if left == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(left, 0, "system.live must be empty after the sockets close");
    // The routing index holds nothing for the table any more.
    let app = &s.server.as_ref().unwrap().app;
    let table = kalamdb_commons::TableId::new(
        kalamdb_commons::NamespaceId::new("app"),
        kalamdb_commons::TableName::new("n"),
    );
    let dave = kalamdb_commons::UserId::new("dave");
    assert!(
        !app.tables()
            .change_listener()
            .unwrap()
            .wants(&table, Some(&dave))
    );
}

#[tokio::test]
async fn connection_limits_give_their_codes() {
    let s = TestServer::start_with(|c| {
        c.websocket.max_messages_per_sec = 5;
        c.websocket.max_message_bytes = 2000;
        c.websocket.max_subscriptions_per_connection = 2;
        c.websocket.client_timeout_secs = 1;
    })
    .await;
    let root = s.root_token().await;
    s.ok(
        &root,
        "CREATE NAMESPACE app; CREATE USER TABLE app.l (id INT PRIMARY KEY)",
    )
    .await;
    let mut ws = Ws::authed(&s, &root).await;
    for id in ["a", "b", "c"] {
        ws.subscribe(id, "SELECT * FROM app.l", Value::Null).await;
    }
    assert_eq!(ws.next().await["type"], "subscription_ack");
    assert_eq!(ws.next().await["type"], "subscription_ack");
    let e = ws.next().await;
    assert_eq!(
        (e["subscription_id"].as_str(), e["code"].as_str()),
        (Some("c"), Some("SUBSCRIPTION_LIMIT_EXCEEDED")),
        "{e}"
    );
    ws.send(json!({"type": "ping", "pad": "x".repeat(3000)}))
        .await;
    assert_eq!(ws.next().await["code"], "MESSAGE_TOO_LARGE");
    // The limit is 5 per second: at least one of these is dropped with an error, even if a
    // new second starts among them.
    for _ in 0..10 {
        ws.send(json!({"type": "ping"})).await;
    }
    let e = ws.next().await;
    assert_eq!(
        (e["subscription_id"].as_str(), e["code"].as_str()),
        (Some("rate_limit"), Some("RATE_LIMIT_EXCEEDED")),
        "{e}"
    );
    // A silent client is closed with 1000 (after the rest of the rate-limit errors).
    let close = loop {
        let m = ws
            .try_next(Duration::from_secs(4))
            .await
            .expect("no close within 4 s");
        if m["type"] == "close" {
            break m;
        }
        assert_eq!(m["code"], "RATE_LIMIT_EXCEEDED", "{m}");
    };
    assert_eq!(close["code"], 1000);
}

#[tokio::test]
async fn resume_from_a_seq_delivers_exactly_the_missed_changes() {
    let s = TestServer::start().await;
    let root = s.root_token().await;
    s.ok(
        &root,
        "CREATE NAMESPACE app; CREATE USER TABLE app.m (id INT PRIMARY KEY, v TEXT)",
    )
    .await;
    let users = s.users_with_tokens(&root, &["fay"]).await;
    let fay = &users[0];
    s.ok(fay, "INSERT INTO app.m VALUES (1, 'a'), (2, 'b'), (3, 'c')")
        .await;
    let mut ws = Ws::authed(&s, fay).await;
    let rows = ws
        .subscribe_all("m", "SELECT * FROM app.m", json!({}))
        .await;
    let last = rows.iter().map(seq).max().unwrap();
    drop(ws);

    // Missed while away: an insert, an update, a delete.
    s.ok(fay, "INSERT INTO app.m VALUES (4, 'd')").await;
    s.ok(fay, "UPDATE app.m SET v = 'B' WHERE id = 2").await;
    s.ok(fay, "DELETE FROM app.m WHERE id = 3").await;

    let mut ws = Ws::authed(&s, fay).await;
    let rows = ws
        .subscribe_all("m", "SELECT * FROM app.m", json!({"from": last}))
        .await;
    let got: Vec<(Value, Value)> = rows
        .iter()
        .map(|r| (r["id"].clone(), r["v"].clone()))
        .collect();
    assert_eq!(got, vec![(json!(4), json!("d")), (json!(2), json!("B"))]);
    assert!(rows.iter().all(|r| seq(r) > last));
    let c = ws.next().await;
    assert_eq!(
        (c["change_type"].as_str(), c["old_values"][0]["id"].as_i64()),
        (Some("delete"), Some(3)),
        "{c}"
    );
    assert!(seq(&c["old_values"][0]) > last);
    assert_eq!(
        ws.try_next(Duration::from_millis(200)).await,
        None,
        "nothing else was missed"
    );
    drop(ws);

    // A row that stopped matching the filter while away is a delete on resume.
    let mut ws = Ws::authed(&s, fay).await;
    let rows = ws
        .subscribe_all("f", "SELECT * FROM app.m WHERE v <> 'gone'", json!({}))
        .await;
    let last = rows.iter().map(seq).max().unwrap();
    drop(ws);
    s.ok(fay, "UPDATE app.m SET v = 'gone' WHERE id = 4").await;
    let mut ws = Ws::authed(&s, fay).await;
    let rows = ws
        .subscribe_all(
            "f",
            "SELECT * FROM app.m WHERE v <> 'gone'",
            json!({"from": last}),
        )
        .await;
    assert!(rows.is_empty(), "{rows:?}");
    // Deletes of everything that left the result after `from`: id 4 now, and id 3 whose
    // tombstone is newer than the rows this client saw (a delete of a key it does not hold).
    let c = ws.next().await;
    assert_eq!(c["change_type"], "delete", "{c}");
    let gone: Vec<i64> = c["old_values"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["id"].as_i64().unwrap())
        .collect();
    assert!(gone.contains(&4), "{c}");
    assert!(
        c["old_values"]
            .as_array()
            .unwrap()
            .iter()
            .all(|r| seq(r) > last)
    );
}

#[tokio::test]
async fn a_subscriber_that_never_reads_is_dropped_without_slowing_others() {
    // A short queue, so the kernel's socket buffers are not what the test measures.
    let s = TestServer::start_with(|c| c.websocket.outbound_queue = 4).await;
    let root = s.root_token().await;
    s.ok(&root, "CREATE NAMESPACE app; CREATE TABLE app.feed (id INT PRIMARY KEY, body TEXT) WITH (ACCESS_LEVEL = 'PUBLIC')").await;
    let mut slow = Ws::connect(&s, Some(&root), "?compress=false").await;
    assert_eq!(slow.next().await["type"], "auth_success");
    slow.subscribe("slow", "SELECT * FROM app.feed", json!({}))
        .await;
    assert_eq!(slow.next().await["type"], "subscription_ack");
    let mut fast = Ws::authed(&s, &root).await;
    fast.subscribe_all("fast", "SELECT id FROM app.feed", json!({}))
        .await;

    // Far more change data than the slow socket's queue and TCP buffers hold; the fast
    // subscriber reads as it comes. One 500-row INSERT is one change message.
    let body = "y".repeat(2000);
    let reader = tokio::spawn(async move {
        let mut n = 0;
        while n < 10_000 {
            let c = fast.next().await;
            assert_eq!(c["change_type"], "insert", "{c}");
            n += c["rows"].as_array().unwrap().len();
        }
        (n, fast)
    });
    for batch in 0..20 {
        let values: Vec<String> = (0..500)
            .map(|i| format!("({}, '{body}')", batch * 500 + i))
            .collect();
        s.ok(
            &root,
            &format!("INSERT INTO app.feed VALUES {}", values.join(", ")),
        )
        .await;
    }
    let (n, fast) = reader.await.unwrap();
    assert_eq!(n, 10_000, "the fast subscriber got every change");
    // The slow connection was closed; its subscription is gone.
    let mut left = Vec::new();
    for _ in 0..50 {
        left = live_rows(&s, &root).await;
        if left.len() == 1 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(
        left.iter().map(|r| r[0].clone()).collect::<Vec<_>>(),
        vec![json!("fast")]
    );
    drop((slow, fast));
}

/// Applies one server message to a materialized row set keyed by `id`.
pub(crate) fn apply(rows: &mut std::collections::BTreeMap<i64, Value>, msg: &Value) {
    let id = |r: &Value| r["id"].as_i64().unwrap();
    match (msg["type"].as_str(), msg["change_type"].as_str()) {
        (Some("initial_data_batch"), _) | (Some("change"), Some("insert" | "update")) => {
            for r in msg["rows"].as_array().unwrap() {
                rows.insert(id(r), r.clone());
            }
        }
        (Some("change"), Some("delete")) => {
            for r in msg["old_values"].as_array().unwrap() {
                rows.remove(&id(r));
            }
        }
        _ => panic!("unexpected message {msg}"),
    }
}

/// A model test's table and workload: subscribers with each filter must end equal to a
/// fresh SELECT with it.
struct Model {
    /// `CREATE USER TABLE app.mt (…)`: an INT `id` primary key first.
    ddl: &'static str,
    filters: &'static [&'static str],
    /// The next write to `app.mt`.
    write: fn(&mut crate::support::Rng) -> String,
    /// Writes per user.
    writes: usize,
}

/// Runs `model` with three users writing while each subscribes with a random filter.
async fn run_model(model: Model) {
    let s = TestServer::start().await;
    let root = s.root_token().await;
    s.ok(&root, &format!("CREATE NAMESPACE app; {}", model.ddl))
        .await;
    let users = s.users_with_tokens(&root, &["u1", "u2", "u3"]).await;
    for seed in [11u64, 4242] {
        let mut rng = crate::support::Rng(seed);
        s.ok(&root, "DROP TABLE app.mt").await;
        s.ok(&root, model.ddl).await;
        // Writers run while subscriptions start, so some begin mid-stream.
        let writers: Vec<_> = users
            .iter()
            .enumerate()
            .map(|(u, token)| {
                let (base, http, token) = (s.base.clone(), s.http.clone(), token.clone());
                let mut rng = crate::support::Rng(seed * 31 + u as u64);
                let (write, writes) = (model.write, model.writes);
                tokio::spawn(async move {
                    for _ in 0..writes {
                        let sql = write(&mut rng);
                        // PK collisions are expected; any other failure is not.
                        let (status, body) =
                            crate::support::post_sql(&http, &base, &token, &sql).await;
                        assert!(
                            status == 200 || body.to_string().contains("Primary key"),
                            "{sql}: {body}"
                        );
                    }
                })
            })
            .collect();
        let mut subs = Vec::new();
        for (u, token) in users.iter().enumerate() {
            for _ in 0..2 {
                let mut ws = Ws::authed(&s, token).await;
                let filter = model.filters[rng.next(model.filters.len() as u64) as usize];
                let sql = format!("SELECT * FROM app.mt{filter}");
                let mut rows = std::collections::BTreeMap::new();
                for r in ws.subscribe_all("m", &sql, json!({"batch_size": 3})).await {
                    rows.insert(r["id"].as_i64().unwrap(), r);
                }
                subs.push((u, ws, sql, rows));
                tokio::time::sleep(Duration::from_millis(rng.next(30))).await;
            }
        }
        for w in writers {
            w.await.unwrap();
        }
        for (u, ws, sql, rows) in &mut subs {
            while let Some(msg) = ws.try_next(Duration::from_millis(300)).await {
                apply(rows, &msg);
            }
            let fresh = s.ok(&users[*u], &format!("{sql} ORDER BY id")).await;
            let names: Vec<String> = fresh["schema"]
                .as_array()
                .unwrap()
                .iter()
                .map(|c| c["name"].as_str().unwrap().to_string())
                .filter(|n| !n.starts_with('_'))
                .collect();
            let want: Vec<Vec<Value>> = crate::support::rows(&fresh)
                .into_iter()
                .map(|r| r[..names.len()].to_vec())
                .collect();
            let got: Vec<Vec<Value>> = rows
                .values()
                .map(|r| names.iter().map(|n| r[n.as_str()].clone()).collect())
                .collect();
            assert_eq!(got, want, "seed {seed}, user {u}, {sql}");
        }
    }
}

#[tokio::test]
async fn model_subscribers_end_equal_to_a_fresh_select() {
    run_model(Model {
        ddl: "CREATE USER TABLE app.mt (id INT PRIMARY KEY, v INT, tag TEXT)",
        filters: &[
            "",
            " WHERE v > 50",
            " WHERE tag = 'a' OR v < 10",
            " WHERE id BETWEEN 5 AND 15",
            " WHERE tag LIKE 'b%' AND NOT (v = 3)",
            " WHERE tag IS NULL",
        ],
        write: |rng| {
            let id = rng.next(20);
            let tag = ["'a'", "'b1'", "'b2'", "NULL"][rng.next(4) as usize];
            match rng.next(3) {
                0 => format!("INSERT INTO app.mt VALUES ({id}, {}, {tag})", rng.next(100)),
                1 => format!(
                    "UPDATE app.mt SET v = {}, tag = {tag} WHERE id = {id}",
                    rng.next(100)
                ),
                _ => format!("DELETE FROM app.mt WHERE id = {id}"),
            }
        },
        writes: 120,
    })
    .await;
}

/// JSON documents under filters a live query evaluates with the SQL path's functions:
/// JSON paths and operators, casts, arithmetic, functions and `CURRENT_ROLE()`.
#[tokio::test]
async fn model_json_path_filters_deliver_what_a_select_returns() {
    run_model(Model {
        ddl: "CREATE USER TABLE app.mt (id INT PRIMARY KEY, doc JSON, note TEXT)",
        filters: &[
            " WHERE json_get_int(doc, 'n') > 50",
            " WHERE doc->>'tag' = 'a' OR json_get_int(doc, 'n') < 10",
            " WHERE json_contains(doc, 'extra')",
            " WHERE json_length(doc, 'items') >= 2 AND CURRENT_ROLE() = 'user'",
            " WHERE json_get_int(doc, 'n') < 50 OR CURRENT_USER() = 'u2'",
            " WHERE CAST(doc->>'n' AS INT) % 3 = 0",
            " WHERE doc->'nested'->>'k' LIKE 'b%'",
            " WHERE upper(json_get_str(doc, 'tag')) IN ('A', 'B2') AND note IS NOT NULL",
        ],
        write: |rng| {
            let id = rng.next(20);
            let tag = ["a", "b1", "b2", "c"][rng.next(4) as usize];
            let items = (0..rng.next(4)).map(|i| i.to_string()).collect::<Vec<_>>();
            let extra = if rng.next(3) == 0 {
                r#", "extra": null"#
            } else {
                ""
            };
            let doc = format!(
                r#"{{"n": {}, "tag": "{tag}", "items": [{}], "nested": {{"k": "{tag}x"}}{extra}}}"#,
                rng.next(100),
                items.join(", ")
            );
            let note = ["'x'", "NULL"][rng.next(2) as usize];
            match rng.next(3) {
                0 => format!("INSERT INTO app.mt VALUES ({id}, '{doc}', {note})"),
                1 => format!("UPDATE app.mt SET doc = '{doc}', note = {note} WHERE id = {id}"),
                _ => format!("DELETE FROM app.mt WHERE id = {id}"),
            }
        },
        writes: 100,
    })
    .await;
}

#[tokio::test]
async fn stream_table_subscriptions_see_appends_of_their_user() {
    let s = TestServer::start().await;
    let root = s.root_token().await;
    s.ok(&root, "CREATE NAMESPACE app; CREATE STREAM TABLE app.typing (room TEXT, at INT) WITH (TTL_SECONDS = 60)").await;
    let users = s.users_with_tokens(&root, &["gus", "hal"]).await;
    s.ok(&users[0], "INSERT INTO app.typing VALUES ('r1', 1)")
        .await;
    let mut ws = Ws::authed(&s, &users[0]).await;
    let rows = ws
        .subscribe_all(
            "t",
            "SELECT room, at FROM app.typing WHERE room = 'r1'",
            json!({}),
        )
        .await;
    assert_eq!(
        rows.iter().map(|r| r["at"].clone()).collect::<Vec<_>>(),
        vec![json!(1)]
    );
    s.ok(&users[1], "INSERT INTO app.typing VALUES ('r1', 99)")
        .await;
    s.ok(
        &users[0],
        "INSERT INTO app.typing VALUES ('r2', 2), ('r1', 3)",
    )
    .await;
    let c = ws.next().await;
    assert_eq!(
        (
            c["change_type"].as_str(),
            c["rows"].as_array().map(Vec::len)
        ),
        (Some("insert"), Some(1)),
        "{c}"
    );
    assert_eq!(c["rows"][0]["at"], 3);
    s.ok(&users[0], "DELETE FROM app.typing WHERE at = 3").await;
    let c = ws.next().await;
    assert_eq!(
        (c["change_type"].as_str(), c["old_values"][0]["at"].as_i64()),
        (Some("delete"), Some(3)),
        "{c}"
    );
    assert_eq!(
        ws.try_next(Duration::from_millis(200)).await,
        None,
        "hal's append is not gus's"
    );
}

/// The next message, which must be a change of `kind` on subscription `id`.
async fn next_change(ws: &mut Ws, id: &str, kind: &str) -> Value {
    let c = ws.next().await;
    assert_eq!(
        (
            c["type"].as_str(),
            c["subscription_id"].as_str(),
            c["change_type"].as_str()
        ),
        (Some("change"), Some(id), Some(kind)),
        "{c}"
    );
    c
}

#[tokio::test]
async fn admins_subscribe_to_system_tables_and_see_catalog_changes() {
    let s = TestServer::start().await;
    let root = s.root_token().await;
    s.ok(&root, "CREATE NAMESPACE app").await;
    let mut ws = Ws::authed(&s, &root).await;

    // system.users: initial rows, then CREATE USER (insert), ALTER USER (update, old values
    // included), an update that leaves the filter (delete).
    let rows = ws
        .subscribe_all(
            "users",
            "SELECT user_id, role FROM system.users WHERE role <> 'dba'",
            json!({}),
        )
        .await;
    assert!(rows.iter().any(|r| r["user_id"] == "root"), "{rows:?}");
    assert!(rows.iter().all(|r| r.get("password_hash").is_none()));
    s.ok(
        &root,
        "CREATE USER dora WITH PASSWORD 'Dora-pass-123' ROLE 'user'",
    )
    .await;
    let c = next_change(&mut ws, "users", "insert").await;
    assert_eq!(c["rows"][0]["user_id"], "dora");
    assert_eq!(c["rows"][0]["role"], "user");
    s.ok(&root, "ALTER USER dora SET ROLE 'service'").await;
    let c = next_change(&mut ws, "users", "update").await;
    assert_eq!(c["rows"][0]["role"], "service");
    assert_eq!(c["old_values"][0]["role"], "user");
    s.ok(&root, "ALTER USER dora SET ROLE 'dba'").await;
    let c = next_change(&mut ws, "users", "delete").await;
    assert_eq!(c["old_values"][0]["user_id"], "dora");

    // system.tables: CREATE TABLE inserts, DROP TABLE deletes; the users subscription hears
    // nothing of it.
    ws.subscribe_all(
        "tables",
        "SELECT namespace_id, table_name, table_type FROM system.tables WHERE namespace_id = 'app'",
        json!({}),
    )
    .await;
    s.ok(&root, "CREATE SHARED TABLE app.t (id BIGINT PRIMARY KEY)")
        .await;
    let c = next_change(&mut ws, "tables", "insert").await;
    assert_eq!(c["rows"][0]["table_name"], "t");
    s.ok(&root, "DROP TABLE app.t").await;
    let c = next_change(&mut ws, "tables", "delete").await;
    assert_eq!(c["old_values"][0]["table_name"], "t");

    // The audit log is appended to by DDL.
    ws.subscribe_all(
        "audit",
        "SELECT action, target FROM system.audit_log WHERE action = 'CREATE_NAMESPACE'",
        json!({}),
    )
    .await;
    s.ok(&root, "CREATE NAMESPACE other").await;
    let c = next_change(&mut ws, "audit", "insert").await;
    assert_eq!(c["rows"][0]["target"], "other");

    // Unknown system tables are not found; plain users are refused (tested above).
    ws.subscribe("nope", "SELECT * FROM system.nope", json!({}))
        .await;
    assert_eq!(ws.next().await["code"], "NOT_FOUND");
    ws.send(json!({"type": "unsubscribe", "subscription_id": "users"}))
        .await;
    ws.send(json!({"type": "unsubscribe", "subscription_id": "tables"}))
        .await;
    ws.send(json!({"type": "unsubscribe", "subscription_id": "audit"}))
        .await;
    s.ok(
        &root,
        "CREATE USER eve WITH PASSWORD 'Eve-pass-12345' ROLE 'user'",
    )
    .await;
    assert_eq!(ws.try_next(Duration::from_millis(300)).await, None);
}

#[tokio::test]
async fn nan_and_infinity_are_strings_in_initial_rows_and_changes() {
    let s = TestServer::start().await;
    let root = s.root_token().await;
    s.ok(&root, "CREATE NAMESPACE app; CREATE SHARED TABLE app.f (id BIGINT PRIMARY KEY, x DOUBLE, y REAL); INSERT INTO app.f VALUES (1, CAST('NaN' AS DOUBLE), CAST('-Infinity' AS REAL))").await;
    // HTTP and WebSocket spell them the same way.
    let http = s.ok(&root, "SELECT x, y FROM app.f").await;
    assert_eq!(http["rows"][0], json!(["NaN", "-Infinity"]), "{http}");
    let mut ws = Ws::authed(&s, &root).await;
    let rows = ws
        .subscribe_all("all", "SELECT id, x, y FROM app.f", json!({}))
        .await;
    assert_eq!(rows.len(), 1, "{rows:?}");
    assert_eq!(
        (&rows[0]["x"], &rows[0]["y"]),
        (&json!("NaN"), &json!("-Infinity"))
    );

    // Changes carrying them are delivered; the subscription goes on.
    s.ok(
        &root,
        "INSERT INTO app.f VALUES (2, CAST('Infinity' AS DOUBLE), 1.5)",
    )
    .await;
    let c = ws.next().await;
    assert_eq!(
        (c["change_type"].as_str(), &c["rows"][0]["x"]),
        (Some("insert"), &json!("Infinity")),
        "{c}"
    );
    s.ok(&root, "UPDATE app.f SET x = 2.5 WHERE id = 1").await;
    let c = ws.next().await;
    assert_eq!(
        (
            c["change_type"].as_str(),
            &c["rows"][0]["x"],
            &c["old_values"][0]["x"]
        ),
        (Some("update"), &json!(2.5), &json!("NaN")),
        "{c}"
    );
}

#[tokio::test]
async fn dropping_a_table_ends_its_subscriptions_and_a_new_table_of_that_name_starts_clean() {
    let s = TestServer::start().await;
    let root = s.root_token().await;
    s.ok(
        &root,
        "CREATE NAMESPACE app; CREATE USER TABLE app.d (id BIGINT PRIMARY KEY, v TEXT); \
         CREATE SHARED TABLE app.keep (id BIGINT PRIMARY KEY)",
    )
    .await;
    let users = s.users_with_tokens(&root, &["ann"]).await;
    s.ok(&users[0], "INSERT INTO app.d VALUES (1, 'old')").await;
    s.ok(&root, "STORAGE FLUSH TABLE app.d").await;
    s.ok(&users[0], "INSERT INTO app.d VALUES (2, 'old hot')")
        .await;
    let mut ws = Ws::authed(&s, &users[0]).await;
    let initial = ws
        .subscribe_all("d", "SELECT * FROM app.d", json!({}))
        .await;
    assert_eq!(initial.len(), 2);
    let mut other = Ws::authed(&s, &root).await;
    other
        .subscribe_all("k", "SELECT * FROM app.keep", json!({}))
        .await;

    s.ok(&root, "DROP TABLE app.d").await;
    let msg = ws.next().await;
    assert_eq!(
        (&msg["type"], &msg["subscription_id"], &msg["code"]),
        (&json!("error"), &json!("d"), &json!("NOT_FOUND")),
        "{msg}"
    );
    assert!(msg["message"].as_str().unwrap().contains("app.d"), "{msg}");
    let live = live_rows(&s, &root).await;
    assert_eq!(
        live.len(),
        1,
        "only the other table's subscription is left: {live:?}"
    );

    // Same name again: no old rows, files or subscriptions leak in.
    s.ok(
        &root,
        "CREATE USER TABLE app.d (id BIGINT PRIMARY KEY, v TEXT)",
    )
    .await;
    s.ok(&users[0], "INSERT INTO app.d VALUES (3, 'new')").await;
    assert!(
        ws.try_next(Duration::from_millis(300)).await.is_none(),
        "the ended subscription hears nothing of the new table"
    );
    let r = s.ok(&users[0], "SELECT id, v FROM app.d").await;
    assert_eq!(
        crate::support::rows(&r),
        vec![vec![json!("3"), json!("new")]]
    );
    let fresh = ws
        .subscribe_all("d2", "SELECT * FROM app.d", json!({}))
        .await;
    assert_eq!(fresh.len(), 1);
}

#[tokio::test]
async fn subscriptions_survive_an_alter_unless_a_column_they_read_is_dropped() {
    let s = TestServer::start().await;
    let root = s.root_token().await;
    s.ok(
        &root,
        "CREATE NAMESPACE app; CREATE SHARED TABLE app.l (id BIGINT PRIMARY KEY, v TEXT, w TEXT)",
    )
    .await;
    let mut ws = Ws::authed(&s, &root).await;
    ws.subscribe_all("v", "SELECT id, v FROM app.l WHERE v <> 'skip'", json!({}))
        .await;
    ws.subscribe_all("w", "SELECT id, w FROM app.l", json!({}))
        .await;

    s.ok(&root, "ALTER TABLE app.l ADD COLUMN extra INT").await;
    s.ok(&root, "INSERT INTO app.l VALUES (1, 'a', 'b', 5)")
        .await;
    let mut got = Vec::new();
    for _ in 0..2 {
        let m = ws.next().await;
        assert_eq!(m["type"], "change", "{m}");
        got.push(m["subscription_id"].as_str().unwrap().to_string());
    }
    got.sort();
    assert_eq!(got, ["v", "w"], "both go on after an added column");

    // Dropping w ends the subscription that reads it, and only that one.
    s.ok(&root, "ALTER TABLE app.l DROP COLUMN w").await;
    let m = ws.next().await;
    assert_eq!(
        (&m["type"], &m["subscription_id"], &m["code"]),
        (&json!("error"), &json!("w"), &json!("SUBSCRIPTION_FAILED")),
        "{m}"
    );
    assert!(m["message"].as_str().unwrap().contains("'w'"), "{m}");
    s.ok(&root, "INSERT INTO app.l VALUES (2, 'c', 6)").await;
    let m = ws.next().await;
    assert_eq!(
        (&m["type"], &m["subscription_id"]),
        (&json!("change"), &json!("v")),
        "{m}"
    );
    assert!(ws.try_next(Duration::from_millis(200)).await.is_none());
}

#[tokio::test]
async fn subscriptions_follow_renames_widenings_and_access_changes() {
    let s = TestServer::start().await;
    let root = s.root_token().await;
    s.ok(
        &root,
        "CREATE NAMESPACE app; \
         CREATE SHARED TABLE app.m (id BIGINT PRIMARY KEY, name TEXT, qty INT) \
           WITH (ACCESS_LEVEL = 'PUBLIC'); \
         INSERT INTO app.m VALUES (0, 'z', 9)",
    )
    .await;
    let users = s.users_with_tokens(&root, &["ann"]).await;
    let mut ws = Ws::authed(&s, &root).await;
    ws.subscribe_all("star", "SELECT * FROM app.m", json!({}))
        .await;
    ws.subscribe_all(
        "big",
        "SELECT id, name FROM app.m WHERE qty > 5 AND name <> 'skip'",
        json!({}),
    )
    .await;
    let mut user_ws = Ws::authed(&s, &users[0]).await;
    user_ws
        .subscribe_all("u", "SELECT id, name FROM app.m", json!({}))
        .await;

    // RENAME: both go on, rows carry the new name, the WHERE still reads the column.
    // Widening INT -> BIGINT: the WHERE still matches rows written with the wider type.
    // ADD COLUMN: SELECT * rows carry it.
    s.ok(
        &root,
        "ALTER TABLE app.m RENAME COLUMN name TO title; \
         ALTER TABLE app.m MODIFY COLUMN qty BIGINT; \
         ALTER TABLE app.m ADD COLUMN tag TEXT DEFAULT 'none'",
    )
    .await;
    s.ok(
        &root,
        "INSERT INTO app.m (id, title, qty) VALUES (1, 'a', 9)",
    )
    .await;
    let mut by_id = std::collections::HashMap::new();
    for _ in 0..2 {
        let m = ws.next().await;
        assert_eq!(m["type"], "change", "{m}");
        by_id.insert(m["subscription_id"].as_str().unwrap().to_string(), m);
    }
    let star = &by_id["star"]["rows"][0];
    assert_eq!(
        (&star["title"], &star["qty"], &star["tag"]),
        (&json!("a"), &json!("9"), &json!("none")),
        "{star}"
    );
    assert!(star.get("name").is_none(), "{star}");
    let big = &by_id["big"]["rows"][0];
    assert_eq!(
        (&big["id"], &big["title"]),
        (&json!("1"), &json!("a")),
        "{big}"
    );
    let u = next_change(&mut user_ws, "u", "insert").await;
    assert_eq!(u["rows"][0]["title"], json!("a"), "{u}");

    // A row the WHERE refuses under the new names is not sent to "big".
    s.ok(
        &root,
        "INSERT INTO app.m (id, title, qty) VALUES (2, 'skip', 50)",
    )
    .await;
    next_change(&mut ws, "star", "insert").await;
    assert!(ws.try_next(Duration::from_millis(200)).await.is_none());
    next_change(&mut user_ws, "u", "insert").await;

    // A row written before the widening (qty stored as INT) still matches `qty > 5`.
    s.ok(&root, "UPDATE app.m SET title = 'zz' WHERE id = 0")
        .await;
    let mut updated = Vec::new();
    for _ in 0..2 {
        let m = ws.next().await;
        assert_eq!(m["change_type"], "update", "{m}");
        updated.push(m["subscription_id"].as_str().unwrap().to_string());
    }
    updated.sort();
    assert_eq!(updated, ["big", "star"]);
    next_change(&mut user_ws, "u", "update").await;

    // A table made private ends the plain user's subscription; the admin's go on.
    s.ok(&root, "ALTER TABLE app.m SET ACCESS_LEVEL 'PRIVATE'")
        .await;
    let m = user_ws.next().await;
    assert_eq!(
        (&m["type"], &m["subscription_id"], &m["code"]),
        (&json!("error"), &json!("u"), &json!("UNAUTHORIZED")),
        "{m}"
    );
    s.ok(
        &root,
        "INSERT INTO app.m (id, title, qty) VALUES (3, 'c', 1)",
    )
    .await;
    next_change(&mut ws, "star", "insert").await;
    assert!(
        user_ws.try_next(Duration::from_millis(200)).await.is_none(),
        "the ended subscription gets nothing more"
    );

    // Initial rows still to be sent when a column is added go out with its default.
    ws.subscribe("slow", "SELECT * FROM app.m", json!({"batch_size": 1}))
        .await;
    assert_eq!(ws.next().await["type"], "subscription_ack");
    let first = ws.next().await;
    assert_eq!(first["batch_control"]["has_more"], true, "{first}");
    s.ok(&root, "ALTER TABLE app.m ADD COLUMN flag TEXT DEFAULT 'f'")
        .await;
    ws.send(json!({"type": "next_batch", "subscription_id": "slow"}))
        .await;
    let second = ws.next().await;
    assert_eq!(second["rows"][0]["flag"], json!("f"), "{second}");
}

/// A subscribe that resolved its table just before an ALTER committed (and registers just
/// after it) subscribes to the new version: new column names, and the access the new
/// version grants.
#[tokio::test]
async fn a_subscribe_overtaken_by_an_alter_uses_the_new_version() {
    use kalamdb_commons::{NamespaceId, TableId, TableName};
    use kalamdb_tables::faults::{Pause, PausePoint};
    use std::sync::Arc;
    let s = TestServer::start().await;
    let root = s.root_token().await;
    s.ok(
        &root,
        "CREATE NAMESPACE app; \
         CREATE SHARED TABLE app.p (id BIGINT PRIMARY KEY, name TEXT) WITH (ACCESS_LEVEL = 'PUBLIC'); \
         INSERT INTO app.p VALUES (1, 'a')",
    )
    .await;
    let table = TableId::new(NamespaceId::new("app"), TableName::new("p"));
    let paused = |pause: &Arc<Pause>| {
        s.faults().pause_at(
            PausePoint::SubscribeBeforeLock,
            table.clone(),
            Arc::clone(pause),
        );
    };

    // RENAME while an admin's subscribe is between compile and register.
    let pause = Arc::new(Pause::default());
    paused(&pause);
    let mut ws = Ws::authed(&s, &root).await;
    ws.subscribe(
        "r",
        "SELECT id, name FROM app.p WHERE name = 'a'",
        json!({}),
    )
    .await;
    pause.reached.notified().await;
    s.ok(&root, "ALTER TABLE app.p RENAME COLUMN name TO title")
        .await;
    pause.resume.notify_one();
    let ack = ws.next().await;
    assert_eq!(ack["type"], "subscription_ack", "{ack}");
    assert_eq!(ack["schema"][1]["name"], "title", "{ack}");
    let batch = ws.next().await;
    assert_eq!(batch["rows"][0]["title"], "a", "{batch}");

    // Made private while a plain user's subscribe is in flight: refused.
    let users = s.users_with_tokens(&root, &["ann"]).await;
    let pause = Arc::new(Pause::default());
    paused(&pause);
    let mut user_ws = Ws::authed(&s, &users[0]).await;
    user_ws
        .subscribe("u", "SELECT id FROM app.p", json!({}))
        .await;
    pause.reached.notified().await;
    s.ok(&root, "ALTER TABLE app.p SET ACCESS_LEVEL 'PRIVATE'")
        .await;
    pause.resume.notify_one();
    let m = user_ws.next().await;
    assert_eq!(
        (&m["type"], &m["subscription_id"], &m["code"]),
        (&json!("error"), &json!("u"), &json!("UNAUTHORIZED")),
        "{m}"
    );
}

#[tokio::test]
async fn a_client_close_is_echoed_and_revoked_users_are_disconnected() {
    let s = TestServer::start().await;
    let root = s.root_token().await;
    s.ok(
        &root,
        "CREATE NAMESPACE app; CREATE USER TABLE app.n (id BIGINT PRIMARY KEY, v TEXT)",
    )
    .await;
    let users = s.users_with_tokens(&root, &["ann", "bo"]).await;

    // The server answers a client's Close with a Close of the same code.
    let mut ws = Ws::authed(&s, &users[1]).await;
    ws.close().await;
    assert_eq!(ws.next().await, json!({"type": "close", "code": 1000}));

    // DROP USER: the user's open connection gets an error and is closed (its identity is
    // stale, it must not go on subscribing).
    let mut ws = Ws::authed(&s, &users[0]).await;
    ws.subscribe_all("n", "SELECT * FROM app.n", json!({}))
        .await;
    s.ok(&root, "DROP USER ann").await;
    let m = ws.next().await;
    assert_eq!(
        (&m["type"], &m["code"]),
        (&json!("error"), &json!("UNAUTHORIZED")),
        "{m}"
    );
    assert_eq!(ws.next().await, json!({"type": "close", "code": 1008}));

    // A role change does the same (a demoted dba loses system-table subscriptions).
    s.ok(
        &root,
        "CREATE USER d1 WITH PASSWORD 'd1-pass-1234' ROLE dba",
    )
    .await;
    let dba = s.token("d1", "d1-pass-1234").await;
    let mut ws = Ws::authed(&s, &dba).await;
    ws.subscribe_all("u", "SELECT * FROM system.users", json!({}))
        .await;
    s.ok(&root, "ALTER USER d1 SET ROLE user").await;
    let mut got = ws.next().await;
    while got["type"] == "change" {
        got = ws.next().await; // the role change itself, seen by the subscription
    }
    assert_eq!(got["code"], "UNAUTHORIZED", "{got}");
    assert_eq!(ws.next().await, json!({"type": "close", "code": 1008}));
}

/// Initial loads read both tiers through the streaming scan, a batch at a time: flushed rows,
/// rows updated or deleted after the flush and new rows come out once each, as their newest
/// version, in `_seq` order; `last_rows` keeps the newest and a resume reports what left.
#[tokio::test]
async fn initial_loads_merge_flushed_and_hot_rows() {
    let s = TestServer::start().await;
    let root = s.root_token().await;
    s.ok(
        &root,
        "CREATE NAMESPACE app; CREATE SHARED TABLE app.t (id BIGINT PRIMARY KEY, v TEXT)",
    )
    .await;
    // More rows than one scan chunk (8,192), so the load spans several batches of the scan.
    for start in (1..=12_000).step_by(2_000) {
        let values: Vec<String> = (start..start + 2_000)
            .map(|i| format!("({i}, 'a')"))
            .collect();
        s.ok(
            &root,
            &format!("INSERT INTO app.t VALUES {}", values.join(", ")),
        )
        .await;
    }
    s.ok(&root, "STORAGE FLUSH TABLE app.t").await;
    let (_, body) = s.sql(&root, "SELECT max(_seq) FROM app.t").await;
    let flushed_at: i64 = match &body["results"][0]["rows"][0][0] {
        Value::String(t) => t.parse().unwrap(),
        other => other.as_i64().unwrap(),
    };
    s.ok(
        &root,
        "UPDATE app.t SET v = 'b' WHERE id % 3 = 0; DELETE FROM app.t WHERE id % 5 = 0; \
         INSERT INTO app.t VALUES (30000, 'a')",
    )
    .await;
    // BIGINT cells travel as strings (JavaScript-safe), small ones may be numbers.
    let int = |v: &Value| -> i64 {
        v.as_i64()
            .or_else(|| v.as_str().and_then(|t| t.parse().ok()))
            .unwrap()
    };
    let ids = |rows: &[Value]| -> Vec<i64> { rows.iter().map(|r| int(&r["id"])).collect() };
    let sql_ids = |sql: String| {
        let s = &s;
        let root = &root;
        async move {
            rows(&s.ok(root, &sql).await)
                .iter()
                .map(|r| int(&r[0]))
                .collect::<Vec<_>>()
        }
    };

    let mut ws = Ws::authed(&s, &root).await;
    let all = ws
        .subscribe_all(
            "a",
            "SELECT id, v FROM app.t WHERE v = 'a'",
            json!({"batch_size": 5000}),
        )
        .await;
    assert!(
        all.windows(2).all(|w| seq(&w[0]) < seq(&w[1])),
        "_seq order"
    );
    let mut got = ids(&all);
    got.sort_unstable();
    let expected: Vec<i64> = (1..=12_000)
        .filter(|i| i % 3 != 0 && i % 5 != 0)
        .chain([30000])
        .collect();
    assert_eq!(got, expected);

    let last = ws
        .subscribe_all(
            "l",
            "SELECT id FROM app.t WHERE v = 'b'",
            json!({"last_rows": 3}),
        )
        .await;
    let mut newest =
        sql_ids("SELECT id FROM app.t WHERE v = 'b' ORDER BY _seq DESC LIMIT 3".into()).await;
    newest.reverse();
    assert_eq!(ids(&last), newest);

    // Resuming from before the changes: the updated rows that still match come as data, and
    // the deleted ones (and those updated away from the filter) as deletes.
    ws.subscribe(
        "r",
        "SELECT id FROM app.t WHERE v = 'a'",
        json!({"from": flushed_at}),
    )
    .await;
    let ack = ws.next().await;
    assert_eq!(ack["type"], "subscription_ack", "{ack}");
    let mut data = Vec::new();
    loop {
        let batch = ws.next().await;
        assert_eq!(batch["type"], "initial_data_batch", "{batch}");
        data.extend(ids(batch["rows"].as_array().unwrap()));
        if !batch["batch_control"]["has_more"].as_bool().unwrap() {
            break;
        }
        ws.send(json!({"type": "next_batch", "subscription_id": "r"}))
            .await;
    }
    assert_eq!(
        data,
        [30000],
        "only the row added after the point still matches"
    );
    let mut gone = Vec::new();
    while let Some(msg) = ws.try_next(Duration::from_millis(500)).await {
        assert_eq!(msg["change_type"], "delete", "{msg}");
        gone.extend(
            msg["old_values"]
                .as_array()
                .unwrap()
                .iter()
                .map(|r| int(&r["id"])),
        );
    }
    gone.sort_unstable();
    let left: Vec<i64> = (1..=12_000).filter(|i| i % 3 == 0 || i % 5 == 0).collect();
    assert_eq!(gone, left);
}

/// Non-reserved keywords as column names work in subscriptions too: projection, filter and
/// the change events.
#[tokio::test]
async fn subscriptions_read_columns_named_by_keywords() {
    let s = TestServer::start().await;
    let root = s.root_token().await;
    s.ok(
        &root,
        "CREATE NAMESPACE app; CREATE SHARED TABLE app.kv (key TEXT PRIMARY KEY, value TEXT, type TEXT) WITH (ACCESS_LEVEL = 'PUBLIC'); \
         INSERT INTO app.kv VALUES ('a', 'one', 'x'), ('b', 'two', 'y')",
    )
    .await;
    let mut ws = Ws::authed(&s, &root).await;
    let rows = ws
        .subscribe_all(
            "k",
            "SELECT key, value FROM app.kv WHERE type = 'x'",
            json!({}),
        )
        .await;
    assert_eq!(rows.len(), 1, "{rows:?}");
    assert_eq!(
        (rows[0]["key"].clone(), rows[0]["value"].clone()),
        (json!("a"), json!("one"))
    );
    // system.stats counts the connection and its subscription.
    let stats = s
        .ok(
            &root,
            "SELECT metric_name, metric_value FROM system.stats WHERE metric_name IN \
             ('active_connections', 'connections_with_subscriptions', 'active_subscriptions') \
             ORDER BY metric_name",
        )
        .await;
    assert_eq!(
        crate::support::rows(&stats),
        vec![
            vec![json!("active_connections"), json!("1")],
            vec![json!("active_subscriptions"), json!("1")],
            vec![json!("connections_with_subscriptions"), json!("1")],
        ]
    );
    s.ok(
        &root,
        "INSERT INTO app.kv VALUES ('c', 'three', 'x'), ('d', 'four', 'z')",
    )
    .await;
    let c = ws.next().await;
    assert_eq!(c["change_type"], "insert", "{c}");
    assert_eq!(c["rows"].as_array().map(Vec::len), Some(1), "{c}");
    assert_eq!(c["rows"][0]["key"], "c");
    assert_eq!(c["rows"][0]["value"], "three");
}
