//! `KILL JOB` and `KILL LIVE QUERY`: stopping work another statement or connection started;
//! the `CLUSTER …` statements.

use crate::access;
use crate::app_context::AppContext;
use crate::cluster_view::{ClusterOpError, ClusterView, MembershipChange};
use crate::sql::session::{ExecCtx, Output};
use kalamdb_catalog::error::{KalamError, Result};

/// `KILL JOB 'id'`: asks a running job to stop at its next checkpoint (dba/system).
pub fn kill_job(app: &AppContext, ctx: &ExecCtx, job_id: &str) -> Result<Output> {
    access::check_admin(&ctx.identity, "kill jobs")?;
    if !app.jobs().kill(job_id) {
        return Err(KalamError::NotFound {
            kind: "Running job",
            name: job_id.to_string(),
        });
    }
    Ok(Output::Message(format!("Job '{job_id}' asked to stop")))
}

/// `KILL LIVE QUERY 'live_id'`: admins end any subscription, others only their own.
pub fn kill_live_query(app: &AppContext, ctx: &ExecCtx, live_id: &str) -> Result<Output> {
    let not_found = || KalamError::NotFound {
        kind: "Live query",
        name: live_id.to_string(),
    };
    let listener = app.tables().change_listener().ok_or_else(not_found)?;
    let owner = listener
        .live_queries()
        .into_iter()
        .find(|q| q.live_id == live_id)
        .map(|q| q.user_id)
        .ok_or_else(not_found)?;
    if owner != ctx.identity.user_id.as_str() {
        access::check_admin(&ctx.identity, "kill other users' live queries")?;
    }
    if !listener.kill_live_query(live_id) {
        return Err(not_found());
    }
    Ok(Output::Message(format!("Live query '{live_id}' killed")))
}

/// `CLUSTER SNAPSHOT`, `CLUSTER TRIGGER ELECTION` (this node stands for leader; the others
/// vote for it once they no longer hear a leader), `CLUSTER ADD NODE` / `REMOVE NODE` (every
/// group, each on its leader), `CLUSTER TRANSFER LEADER` (see kalamdb-cluster's leadership
/// module) (docs/cluster.md §9).
pub async fn cluster(
    app: &AppContext,
    ctx: &ExecCtx,
    cmd: crate::sql::parse::ClusterCommand,
) -> Result<Output> {
    use crate::sql::parse::ClusterCommand;
    access::check_admin(&ctx.identity, "manage the cluster")?;
    let view = app.cluster_view().ok_or_else(|| {
        KalamError::Unsupported("CLUSTER statements need a cluster member ([cluster])".into())
    })?;
    let group = match &cmd {
        ClusterCommand::Snapshot
        | ClusterCommand::AddNode { .. }
        | ClusterCommand::RemoveNode(_) => None,
        ClusterCommand::TriggerElection(g) | ClusterCommand::TransferLeader { group: g, .. } => *g,
    };
    if let Some(g) = group
        && !view.groups().iter().any(|i| i.group == g)
    {
        return Err(KalamError::NotFound {
            kind: "Cluster group",
            name: g.to_string(),
        });
    }
    match cmd {
        ClusterCommand::Snapshot => Ok(Output::Message(format!(
            "Snapshots of {} groups started",
            view.snapshot()
        ))),
        ClusterCommand::TransferLeader { node, .. } => {
            if !view.members().iter().any(|m| m.node_id == node) {
                return Err(KalamError::NotFound {
                    kind: "Cluster node",
                    name: node.to_string(),
                });
            }
            view.transfer_leader(node, group)
                .await
                .map_err(|e| op_error("leadership transfer", e))?;
            Ok(Output::Message(match group {
                Some(g) => format!("Node {node} leads group {g}"),
                None => format!("Node {node} leads every group"),
            }))
        }
        ClusterCommand::TriggerElection(_) => Ok(Output::Message(format!(
            "Node {} stands for leader of {} groups",
            view.node_id(),
            view.elect(group)
        ))),
        ClusterCommand::AddNode {
            node,
            rpc_addr,
            api_url,
        } => {
            check_new_member(node, &rpc_addr, &api_url)?;
            let change = MembershipChange::Add {
                node_id: node,
                rpc_addr,
                api_url,
            };
            change_members(view.as_ref(), change).await?;
            Ok(Output::Message(format!(
                "Node {node} is a voting member of every group"
            )))
        }
        ClusterCommand::RemoveNode(node) => {
            if !view.members().iter().any(|m| m.node_id == node) {
                return Err(KalamError::NotFound {
                    kind: "Cluster node",
                    name: node.to_string(),
                });
            }
            change_members(view.as_ref(), MembershipChange::Remove { node_id: node }).await?;
            Ok(Output::Message(format!("Node {node} left every group")))
        }
    }
}

/// Refuses a node to add with an id of 0 or malformed addresses.
fn check_new_member(node: u64, rpc_addr: &str, api_url: &str) -> Result<()> {
    if node == 0 {
        return Err(KalamError::InvalidInput("node ids start at 1".into()));
    }
    if rpc_addr.parse::<std::net::SocketAddr>().is_err() {
        return Err(KalamError::InvalidInput(format!(
            "RPC address '{rpc_addr}' is not an ip:port address"
        )));
    }
    if !(api_url.starts_with("http://") || api_url.starts_with("https://")) {
        return Err(KalamError::InvalidInput(format!(
            "API address '{api_url}' is not an http(s):// URL"
        )));
    }
    Ok(())
}

/// A cluster operation that did not complete: refused as asked, or retryable like an
/// unavailable cluster.
fn op_error(what: &str, e: ClusterOpError) -> KalamError {
    match e {
        ClusterOpError::Invalid(why) => KalamError::InvalidInput(format!("{what} refused: {why}")),
        ClusterOpError::Unavailable(why) => {
            KalamError::Store(kalamdb_store::StoreError::Unavailable(format!(
                "{what} failed (run it again once the cluster is healthy): {why}"
            )))
        }
    }
}

/// Runs a membership change.
async fn change_members(view: &dyn ClusterView, change: MembershipChange) -> Result<()> {
    view.change_members(change)
        .await
        .map_err(|e| op_error("membership change", e))
}
