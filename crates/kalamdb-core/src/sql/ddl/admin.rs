//! `KILL JOB` and `KILL LIVE QUERY`: stopping work another statement or connection started.

use crate::access;
use crate::app_context::AppContext;
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
/// vote for it once they no longer hear a leader), `CLUSTER TRANSFER LEADER` (refused: see
/// below) (docs/cluster.md §9).
pub fn cluster(
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
        ClusterCommand::Snapshot => None,
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
        // openraft 0.9 has no leadership transfer, and a healthy leader's lease makes the
        // other members refuse a challenger's votes: refused rather than pretended.
        ClusterCommand::TransferLeader { .. } => Err(KalamError::Unsupported(
            "CLUSTER TRANSFER LEADER is not supported yet (the Raft library has no leadership \
             transfer); restart the leader to move its groups"
                .into(),
        )),
        ClusterCommand::TriggerElection(_) => Ok(Output::Message(format!(
            "Node {} stands for leader of {} groups",
            view.node_id(),
            view.elect(group)
        ))),
    }
}
