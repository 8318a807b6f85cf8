//! Isolation model test: random INSERT/UPDATE/DELETE/SELECT sequences by several users on a
//! USER table, checked after every step against an in-memory model of each user's rows. No
//! user ever sees, changes or deletes another user's row; the same key in two users'
//! partitions is allowed. Seeds are fixed so a failure reproduces.

use crate::support::{Rng, TestServer, rows};
use serde_json::json;
use std::collections::BTreeMap;

#[tokio::test]
async fn users_never_see_or_touch_each_others_rows() {
    let s = TestServer::start().await;
    let root = s.root_token().await;
    s.ok(
        &root,
        "CREATE NAMESPACE app; CREATE USER TABLE app.m (id INT PRIMARY KEY, v INT)",
    )
    .await;
    let users = ["ua", "ub", "uc"];
    let tokens = s.users_with_tokens(&root, &users).await;
    for seed in [7u64, 1234, 987_654_321] {
        s.ok(
            &root,
            "DROP TABLE app.m; CREATE USER TABLE app.m (id INT PRIMARY KEY, v INT)",
        )
        .await;
        let mut model: Vec<BTreeMap<i64, i64>> = vec![BTreeMap::new(); users.len()];
        let mut rng = Rng(seed);
        for step in 0..150 {
            let u = rng.next(users.len() as u64) as usize;
            let id = rng.next(6) as i64;
            let v = rng.next(4) as i64;
            let t = &tokens[u];
            let ctx = format!("seed {seed} step {step} user {}", users[u]);
            match rng.next(4) {
                0 => {
                    let (status, body) = s
                        .sql(t, &format!("INSERT INTO app.m VALUES ({id}, {v})"))
                        .await;
                    match model[u].entry(id) {
                        std::collections::btree_map::Entry::Occupied(_) => {
                            assert_eq!(status, 400, "{ctx}: duplicate key must fail: {body}");
                        }
                        std::collections::btree_map::Entry::Vacant(slot) => {
                            assert_eq!(status, 200, "{ctx}: {body}");
                            slot.insert(v);
                        }
                    }
                }
                1 => {
                    let r = s
                        .ok(t, &format!("UPDATE app.m SET v = {v} WHERE id = {id}"))
                        .await;
                    let expected = match model[u].get_mut(&id) {
                        Some(old) if *old != v => {
                            *old = v;
                            1
                        }
                        _ => 0,
                    };
                    assert_eq!(r["row_count"], expected, "{ctx}: update count");
                }
                2 => {
                    let r = s.ok(t, &format!("DELETE FROM app.m WHERE id = {id}")).await;
                    let expected = usize::from(model[u].remove(&id).is_some());
                    assert_eq!(r["row_count"], expected, "{ctx}: delete count");
                }
                _ => {}
            }
            // Every user's view equals their model after every step.
            for (i, token) in tokens.iter().enumerate() {
                let r = s.ok(token, "SELECT id, v FROM app.m ORDER BY id").await;
                let expected: Vec<Vec<serde_json::Value>> = model[i]
                    .iter()
                    .map(|(k, v)| vec![json!(k), json!(v)])
                    .collect();
                assert_eq!(rows(&r), expected, "{ctx}: view of {}", users[i]);
            }
        }
    }
}

#[tokio::test]
async fn stream_rows_stay_with_their_writer() {
    let s = TestServer::start().await;
    let root = s.root_token().await;
    s.ok(
        &root,
        "CREATE NAMESPACE app; CREATE STREAM TABLE app.ev (v INT) WITH (TTL_SECONDS = 3600)",
    )
    .await;
    let users = ["sa", "sb", "sc"];
    let tokens = s.users_with_tokens(&root, &users).await;
    let mut model: Vec<Vec<i64>> = vec![Vec::new(); users.len()];
    let mut rng = Rng(42);
    for step in 0..150 {
        let u = rng.next(users.len() as u64) as usize;
        let v = rng.next(5) as i64;
        let ctx = format!("step {step} user {}", users[u]);
        if rng.next(3) == 0 {
            let r = s
                .ok(&tokens[u], &format!("DELETE FROM app.ev WHERE v = {v}"))
                .await;
            let before = model[u].len();
            model[u].retain(|x| *x != v);
            assert_eq!(
                r["row_count"],
                before - model[u].len(),
                "{ctx}: hard delete count"
            );
        } else {
            s.ok(&tokens[u], &format!("INSERT INTO app.ev VALUES ({v})"))
                .await;
            model[u].push(v);
        }
        for (i, token) in tokens.iter().enumerate() {
            let r = s.ok(token, "SELECT v FROM app.ev ORDER BY _seq").await;
            let expected: Vec<Vec<serde_json::Value>> =
                model[i].iter().map(|v| vec![json!(v)]).collect();
            assert_eq!(rows(&r), expected, "{ctx}: view of {}", users[i]);
        }
    }
}
