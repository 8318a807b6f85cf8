//! Live queries over `GET /v1/ws`, spoken to with a plain WebSocket client: authentication,
//! initial batches, changes, per-user routing, unsubscribe, compression and errors.

use crate::support::TestServer;
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
        let url = format!("{}/v1/ws{query}", s.base.replacen("http", "ws", 1));
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
}
