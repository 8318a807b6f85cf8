//! `failover`: how long writes stop when a cluster leader dies. Against a cluster started by
//! `scripts/cluster.sh up N BASE_PORT DIR` (`--cluster-dir DIR`), each of `--rounds` rounds
//! finds the leader of the SHARED table's group, kills it with SIGKILL, and times until an
//! INSERT sent to the other members is acknowledged again; then restarts the node with
//! `scripts/cluster.sh start` and waits until it is ready. The latency figures are those
//! outage times.

use crate::report::WorkloadResult;
use crate::{Args, Client, create_table};
use hdrhistogram::Histogram;
use std::path::Path;
use std::time::{Duration, Instant};

/// A member of the cluster: its client URL and the file holding its pid.
struct Member {
    id: u64,
    url: String,
    dir: std::path::PathBuf,
}

fn members(dir: &Path) -> Result<Vec<Member>, String> {
    let mut out = Vec::new();
    for i in 1.. {
        let node = dir.join(format!("node-{i}"));
        let Ok(config) = std::fs::read_to_string(node.join("server.toml")) else {
            break;
        };
        let port = config
            .lines()
            .find_map(|l| l.strip_prefix("port = "))
            .ok_or_else(|| format!("no port in {}", node.display()))?;
        out.push(Member {
            id: i,
            url: format!("http://127.0.0.1:{}", port.trim()),
            dir: node,
        });
    }
    if out.len() < 3 {
        return Err(format!("{} holds fewer than 3 nodes", dir.display()));
    }
    Ok(out)
}

async fn leader_of_shared(client: &Client) -> Result<u64, String> {
    let until = Instant::now() + Duration::from_secs(30);
    loop {
        // A member just restarted may answer on a pooled connection of its previous life
        // once with an error: asked again.
        let asked = client
            .sql(
                "SELECT current_leader FROM system.cluster_groups WHERE group_type = \
                 'shared_shard'"
                    .into(),
                None,
            )
            .await;
        let leader = asked.ok().and_then(|r| {
            r.results
                .first()
                .and_then(|r| r.rows.as_ref())
                .and_then(|rows| rows.first())
                .and_then(|row| row.first())
                .and_then(|v| v.as_str())
                .and_then(|v| v.parse().ok())
        });
        if let Some(leader) = leader {
            return Ok(leader);
        }
        if Instant::now() > until {
            return Err("the shared group has no leader".into());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

pub(crate) async fn failover(args: &Args, client: &Client) -> Result<WorkloadResult, String> {
    let dir = args
        .cluster_dir
        .as_deref()
        .ok_or("failover needs --cluster-dir (a cluster of scripts/cluster.sh)")?;
    let members = members(Path::new(dir))?;
    let ns = args.namespace.clone();
    create_table(client, &ns, "failover", "SHARED").await?;
    let mut hist =
        Histogram::<u64>::new_with_bounds(1, 600_000_000, 3).map_err(|e| e.to_string())?;
    let mut id = 0u64;
    let started = Instant::now();
    for round in 0..args.rounds {
        // Asked of a member that stays up: the first one that is not the leader.
        let mut asker = client.clone();
        let leader = leader_of_shared(client).await?;
        if let Some(m) = members.iter().find(|m| m.id != leader) {
            asker.url = m.url.clone();
        }
        let leader = leader_of_shared(&asker).await?;
        let victim = members
            .iter()
            .find(|m| m.id == leader)
            .ok_or_else(|| format!("leader {leader} is not in the cluster folder"))?;
        let pid = std::fs::read_to_string(victim.dir.join("pid"))
            .map_err(|e| e.to_string())?
            .trim()
            .to_string();
        std::process::Command::new("kill")
            .args(["-9", &pid])
            .status()
            .map_err(|e| e.to_string())?;
        let killed = Instant::now();
        let others: Vec<&Member> = members.iter().filter(|m| m.id != leader).collect();
        let mut attempt = 0usize;
        loop {
            id += 1;
            let mut c = client.clone();
            c.url = others[attempt % others.len()].url.clone();
            attempt += 1;
            let sql = format!("INSERT INTO {ns}.failover VALUES {}", crate::row_values(id));
            let sent = tokio::time::timeout(Duration::from_secs(3), c.sql(sql, None)).await;
            if matches!(sent, Ok(Ok(_))) {
                break;
            }
            if killed.elapsed() > Duration::from_secs(60) {
                return Err("no write acknowledged within 60 s of the kill".into());
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let outage = killed.elapsed();
        hist.saturating_record(outage.as_micros() as u64);
        eprintln!(
            "failover round {}: node {leader} killed, writes again after {:.3} s",
            round + 1,
            outage.as_secs_f64()
        );
        let status = std::process::Command::new("bash")
            .arg(&args.cluster_script)
            .args(["start", dir, &leader.to_string()])
            .stdout(std::process::Stdio::null())
            .status()
            .map_err(|e| e.to_string())?;
        if !status.success() {
            return Err(format!("restarting node {leader} failed"));
        }
    }
    let mut result = WorkloadResult::new(
        "failover",
        1,
        started.elapsed().as_secs_f64(),
        &hist,
        args.rounds as u64,
        0,
    );
    result.notes.push(
        "latencies are outages: SIGKILL of the leader until the next acknowledged INSERT".into(),
    );
    Ok(result)
}
