//! A Knossos-style linearizability check of one register on a 3-member cluster: three clients,
//! each on its own member, write unique values to one row of a SHARED table (forwarded to the
//! group's leader) and read it with `x-kalamdb-consistency: linearizable`, while the
//! leadership moves half way (CLUSTER TRANSFER LEADER). The recorded history (each operation's
//! invocation and completion time, and what it wrote or read) must have a linearization: an
//! order consistent with real time in which every read returns the latest write. A write that
//! failed may or may not have taken effect (it never completes); a failed read says nothing.

use crate::cluster::{Cluster, PASSWORD, login, ok, sql, sql_with_consistency};
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

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn reads_and_writes_of_one_row_are_linearizable_across_members_and_a_leader_move() {
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
    for (c, url) in urls.iter().enumerate() {
        let (http, url, token) = (http.clone(), url.clone(), root.clone());
        clients.push(tokio::spawn(async move {
            let mut events = Vec::new();
            let mut seed = 0x9e37_79b9_u64.wrapping_mul(c as u64 + 1);
            for i in 0..OPS {
                seed = seed.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1);
                let call = start.elapsed().as_micros();
                if seed >> 62 == 0 {
                    let v = (c * 1000 + i + 1) as i64;
                    let q = format!("UPDATE lz.reg SET v = {v} WHERE id = 1");
                    let answer = sql(&http, &url, &token, &q).await;
                    let ret = (answer["status"] == "success").then(|| start.elapsed().as_micros());
                    events.push(Event {
                        op: Op::Write(v),
                        call,
                        ret,
                    });
                } else {
                    let q = "SELECT v FROM lz.reg WHERE id = 1";
                    let answer = sql_with_consistency(&http, &url, &token, q, "linearizable").await;
                    let ret = start.elapsed().as_micros();
                    // BIGINT values come as numbers or strings.
                    let cell = &answer["results"][0]["rows"][0][0];
                    let read = cell.as_i64().or_else(|| cell.as_str()?.parse().ok());
                    if let Some(v) = read {
                        events.push(Event {
                            op: Op::Read(v),
                            call,
                            ret: Some(ret),
                        });
                    }
                }
            }
            events
        }));
    }
    // Half way, every group's leadership moves to another member.
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    let moved = sql(&http, &urls[0], &root, "CLUSTER TRANSFER LEADER 2").await;
    let mut history = Vec::new();
    for client in clients {
        history.extend(client.await.unwrap());
    }
    let writes = history
        .iter()
        .filter(|e| matches!(e.op, Op::Write(_)))
        .count();
    let reads = history.len() - writes;
    eprintln!("{writes} writes, {reads} reads; transfer: {moved}");
    assert!(writes > 5 && reads > 20, "{writes} writes, {reads} reads");
    assert!(linearizable(&history, 0), "not linearizable: {history:#?}");
}
