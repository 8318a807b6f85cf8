//! A Knossos-style linearizability check of one register on a 3-member cluster: three clients,
//! each on its own member, write unique values to one row of a SHARED table (forwarded to the
//! group's leader) and read it with `x-kalamdb-consistency: linearizable`, while the
//! leadership moves half way (CLUSTER TRANSFER LEADER), or the SHARED group's leader is killed
//! half way (its clients move on to another member). The recorded history (each operation's
//! invocation and completion time, and what it wrote or read) must have a linearization: an
//! order consistent with real time in which every read returns the latest write. A write that
//! failed may or may not have taken effect (it never completes); a failed read says nothing.

use crate::cluster::{Cluster, PASSWORD, leader_of, login, ok, sql};
use std::collections::HashSet;
use std::time::Instant;

/// What an operation did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Op {
    Write(i64),
    Read(i64),
}

/// One operation of the history: invoked at `call`, completed at `ret` (`None`: unknown
/// outcome, a write that may take effect at any time after `call`).
#[derive(Debug, Clone, Copy)]
struct Event {
    op: Op,
    call: u128,
    ret: Option<u128>,
}

/// Whether `history` of a register starting at `initial` is linearizable (Wing & Gong's
/// search with Lowe's memoization of (linearized set, value)). At most 128 operations.
fn linearizable(history: &[Event], initial: i64) -> bool {
    assert!(history.len() <= 128, "the checker handles 128 operations");
    let done: u128 = history
        .iter()
        .enumerate()
        .filter(|(_, e)| e.ret.is_some())
        .fold(0, |acc, (i, _)| acc | (1 << i));
    let mut seen = HashSet::new();
    search(history, done, 0, initial, &mut seen)
}

fn search(
    history: &[Event],
    done: u128,
    taken: u128,
    value: i64,
    seen: &mut HashSet<(u128, i64)>,
) -> bool {
    if taken & done == done {
        return true; // every completed operation is placed; pending writes may never happen
    }
    if !seen.insert((taken, value)) {
        return false;
    }
    // The next operation must have been invoked before every remaining one completed.
    let horizon = history
        .iter()
        .enumerate()
        .filter(|(i, _)| taken & (1 << i) == 0)
        .filter_map(|(_, e)| e.ret)
        .min()
        .unwrap_or(u128::MAX);
    for (i, e) in history.iter().enumerate() {
        if taken & (1 << i) != 0 || e.call > horizon {
            continue;
        }
        let next = match e.op {
            Op::Write(v) => v,
            Op::Read(v) if v == value => value,
            Op::Read(_) => continue,
        };
        if search(history, done, taken | (1 << i), next, seen) {
            return true;
        }
    }
    false
}

#[test]
fn the_checker_accepts_concurrent_histories_and_refuses_stale_reads() {
    let ev = |op, call, ret| Event { op, call, ret };
    // Overlapping write and read: the read may see either value.
    let overlap = [
        ev(Op::Write(1), 0, Some(10)),
        ev(Op::Read(0), 5, Some(6)),
        ev(Op::Read(1), 11, Some(12)),
    ];
    assert!(linearizable(&overlap, 0));
    // A read after a completed write returns the old value: not linearizable.
    let stale = [ev(Op::Write(1), 0, Some(10)), ev(Op::Read(0), 11, Some(12))];
    assert!(!linearizable(&stale, 0));
    // Two reads that disagree on the order of two writes.
    let flip = [
        ev(Op::Write(1), 0, Some(100)),
        ev(Op::Write(2), 0, Some(100)),
        ev(Op::Read(1), 10, Some(20)),
        ev(Op::Read(2), 30, Some(40)),
        ev(Op::Read(1), 50, Some(60)),
    ];
    assert!(!linearizable(&flip, 0));
    // A failed write may show up late, or never.
    let pending = [
        ev(Op::Write(7), 0, None),
        ev(Op::Read(0), 5, Some(6)),
        ev(Op::Read(7), 50, Some(60)),
    ];
    assert!(linearizable(&pending, 0));
    assert!(linearizable(&pending[..2], 0));
}

/// What happens to the cluster half way through the operations.
#[derive(Debug, Clone, Copy)]
enum Disruption {
    /// `CLUSTER TRANSFER LEADER 2`: every group's leadership moves.
    Transfer,
    /// The SHARED group's leader is killed (SIGKILL); its clients move on to the next member.
    KillLeader,
}

/// `q` on `url`, optionally with a consistency header; `None` when the member cannot be
/// reached or does not answer in time.
async fn try_sql(
    http: &reqwest::Client,
    url: &str,
    token: &str,
    q: &str,
    consistency: Option<&str>,
) -> Option<serde_json::Value> {
    let mut request = http
        .post(format!("{url}/v1/api/sql"))
        .bearer_auth(token)
        .json(&serde_json::json!({ "sql": q }))
        .timeout(std::time::Duration::from_secs(15));
    if let Some(c) = consistency {
        request = request.header("x-kalamdb-consistency", c);
    }
    request.send().await.ok()?.json().await.ok()
}

/// Runs three clients (one per member at first) of one register while `disruption` happens,
/// and answers their history and what the disruption answered.
async fn history(disruption: Disruption) -> (Vec<Event>, String) {
    let cluster = Cluster::up(3);
    let http = reqwest::Client::new();
    let urls: Vec<String> = cluster.urls.clone();
    let root = login(&http, &urls[0], "root", PASSWORD).await;
    ok(&http, &urls[0], &root, "CREATE NAMESPACE lz").await;
    ok(
        &http,
        &urls[0],
        &root,
        "CREATE TABLE lz.reg (id BIGINT PRIMARY KEY, v BIGINT) WITH (TYPE = 'SHARED')",
    )
    .await;
    ok(
        &http,
        &urls[0],
        &root,
        "INSERT INTO lz.reg (id, v) VALUES (1, 0)",
    )
    .await;

    const OPS: usize = 30;
    let start = Instant::now();
    let mut clients = Vec::new();
    for c in 0..urls.len() {
        let (http, urls, token) = (http.clone(), urls.clone(), root.clone());
        clients.push(tokio::spawn(async move {
            let mut events = Vec::new();
            let mut at = c;
            let mut seed = 0x9e37_79b9_u64.wrapping_mul(c as u64 + 1);
            for i in 0..OPS {
                seed = seed.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1);
                let url = &urls[at];
                let call = start.elapsed().as_micros();
                let write = seed >> 62 == 0;
                let v = (c * 1000 + i + 1) as i64;
                let answer = match write {
                    true => {
                        let q = format!("UPDATE lz.reg SET v = {v} WHERE id = 1");
                        try_sql(&http, url, &token, &q, None).await
                    }
                    false => {
                        let q = "SELECT v FROM lz.reg WHERE id = 1";
                        try_sql(&http, url, &token, q, Some("linearizable")).await
                    }
                };
                let ret = start.elapsed().as_micros();
                let Some(answer) = answer else {
                    // The member is gone: this client goes on with the next one. A write
                    // sent to it may or may not have taken effect.
                    at = (at + 1) % urls.len();
                    if write {
                        events.push(Event {
                            op: Op::Write(v),
                            call,
                            ret: None,
                        });
                    }
                    continue;
                };
                if write {
                    let done = answer["status"] == "success";
                    events.push(Event {
                        op: Op::Write(v),
                        call,
                        ret: done.then_some(ret),
                    });
                    continue;
                }
                // BIGINT values come as numbers or strings.
                let cell = &answer["results"][0]["rows"][0][0];
                if let Some(read) = cell.as_i64().or_else(|| cell.as_str()?.parse().ok()) {
                    events.push(Event {
                        op: Op::Read(read),
                        call,
                        ret: Some(ret),
                    });
                }
            }
            events
        }));
    }
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    let disrupted = match disruption {
        Disruption::Transfer => sql(&http, &urls[0], &root, "CLUSTER TRANSFER LEADER 2")
            .await
            .to_string(),
        Disruption::KillLeader => {
            let shared_group = 1 + crate::cluster::USER_SHARDS;
            let leader = leader_of(&http, &urls[0], &root, shared_group).await;
            cluster.signal(leader, libc::SIGKILL);
            format!("killed node {leader}")
        }
    };
    let mut history = Vec::new();
    for client in clients {
        history.extend(client.await.unwrap());
    }
    (history, disrupted)
}

/// Checks `history` after a run, with enough of each kind of operation to mean something.
fn check(history: &[Event], disrupted: &str, min_writes: usize, min_reads: usize) {
    let writes = history
        .iter()
        .filter(|e| matches!(e.op, Op::Write(_)))
        .count();
    let pending = history.iter().filter(|e| e.ret.is_none()).count();
    let reads = history.len() - writes;
    eprintln!("{writes} writes ({pending} of unknown outcome), {reads} reads; {disrupted}");
    assert!(
        writes - pending >= min_writes && reads >= min_reads,
        "{writes} writes ({pending} unknown), {reads} reads"
    );
    assert!(linearizable(history, 0), "not linearizable: {history:#?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn reads_and_writes_of_one_row_are_linearizable_across_members_and_a_leader_move() {
    let (history, moved) = history(Disruption::Transfer).await;
    check(&history, &moved, 5, 20);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn reads_and_writes_of_one_row_stay_linearizable_when_the_leader_is_killed() {
    let (history, killed) = history(Disruption::KillLeader).await;
    check(&history, &killed, 3, 10);
}
