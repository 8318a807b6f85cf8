//! Read-your-writes across the members of a cluster (docs/cluster.md §5). Every SQL answer a
//! member runs or forwards carries [`APPLIED`]: each group's applied log index on the
//! node that ran the statement (`group:index,…`). A request that carries marks back as
//! [`MIN_APPLIED`] runs once the member it reaches applied that far (at most [`WAIT`]; else
//! `CLUSTER_UNAVAILABLE`, and nothing ran); a forwarded request takes them to the leader. A
//! member that forwarded a statement to a leader waits for the leader's marks itself (at most
//! [`FOLLOW_WAIT`]) before it answers, so a client that stays on one member reads its own
//! writes without doing anything; one that moves between members keeps the highest mark per
//! group it was sent and passes them along.
//!
//! A request with [`CONSISTENCY`]` = linearizable` goes further: before it runs, the member
//! asks every group's leader for its read index (the leader confirms its leadership with a
//! quorum: Raft's ReadIndex) and waits until it applied that far, so the statement sees every
//! write acknowledged before the request arrived, wherever it was written. Without a quorum it
//! is refused (`CLUSTER_UNAVAILABLE`), never answered from a stale member.

use axum::http::{HeaderMap, HeaderValue};
use axum::response::Response;
use kalamdb_core::cluster_view::ClusterView;
use std::time::Duration;

/// The marks of the node that answered.
pub const APPLIED: &str = "x-kalamdb-applied";

/// Marks a request needs applied before it runs.
pub const MIN_APPLIED: &str = "x-kalamdb-min-applied";

/// Asks for a consistency level: `linearizable`, or `local` (the default: this member's
/// applied state).
pub const CONSISTENCY: &str = "x-kalamdb-consistency";

/// How long a member waits to catch up with a request's marks.
pub const WAIT: Duration = Duration::from_secs(5);

/// How long a member that forwarded a statement waits for the leader's marks (every group's:
/// a group lagging here would otherwise delay every forwarded statement by [`WAIT`]).
pub const FOLLOW_WAIT: Duration = Duration::from_secs(1);

/// `group:index,…`.
fn encode(marks: &[(u64, u64)]) -> String {
    marks
        .iter()
        .map(|(g, i)| format!("{g}:{i}"))
        .collect::<Vec<_>>()
        .join(",")
}

/// Reads `group:index,…`; an error names what is wrong.
fn parse(value: &str) -> Result<Vec<(u64, u64)>, String> {
    value
        .split(',')
        .map(str::trim)
        .filter(|part| !part.is_empty())
        .map(|part| {
            let (g, i) = part
                .split_once(':')
                .ok_or_else(|| format!("'{part}' is not group:index"))?;
            match (g.trim().parse(), i.trim().parse()) {
                (Ok(g), Ok(i)) => Ok((g, i)),
                _ => Err(format!("'{part}' is not group:index (whole numbers)")),
            }
        })
        .collect()
}

/// The marks in `headers`' `name`, if any; an error when they do not parse.
fn marks_in(headers: &HeaderMap, name: &str) -> Result<Option<Vec<(u64, u64)>>, String> {
    let Some(value) = headers.get(name) else {
        return Ok(None);
    };
    let text = value.to_str().map_err(|_| format!("{name} is not text"))?;
    parse(text).map(Some).map_err(|e| format!("{name}: {e}"))
}

/// Whether `headers` ask for a linearizable read; an error names a bad value.
fn linearizable(headers: &HeaderMap) -> Result<bool, String> {
    let Some(value) = headers.get(CONSISTENCY) else {
        return Ok(false);
    };
    match value.to_str().map(str::trim) {
        Ok(v) if v.eq_ignore_ascii_case("linearizable") => Ok(true),
        Ok(v) if v.eq_ignore_ascii_case("local") => Ok(false),
        _ => Err(format!(
            "{CONSISTENCY} is 'linearizable' or 'local', not {value:?}"
        )),
    }
}

/// Before a statement runs: waits until this member applied the request's
/// [`MIN_APPLIED`] marks, and every group's read index when it asks for a [`CONSISTENCY`] of
/// `linearizable`. `Err` says why it may not run (a bad header: the first element is true;
/// not caught up in time, or no read index: false).
pub async fn before(view: &dyn ClusterView, headers: &HeaderMap) -> Result<(), (bool, String)> {
    let asked = marks_in(headers, MIN_APPLIED).map_err(|e| (true, e))?;
    let mut marks = asked.unwrap_or_default();
    if linearizable(headers).map_err(|e| (true, e))? {
        let read = view.read_marks().await.map_err(|e| {
            (
                false,
                format!("a linearizable read needs every group's leader and a quorum: {e}"),
            )
        })?;
        marks.extend(read);
    }
    if marks.is_empty() {
        return Ok(());
    }
    if view.wait_applied(&marks, WAIT).await {
        Ok(())
    } else {
        Err((
            false,
            format!(
                "this member did not apply {MIN_APPLIED} or the read index ({}) within {} s; \
                 retry, or send the request to another member",
                encode(&marks),
                WAIT.as_secs()
            ),
        ))
    }
}

/// Stamps `response` with this member's marks.
pub fn stamp(view: &dyn ClusterView, response: &mut Response) {
    if let Ok(value) = HeaderValue::from_str(&encode(&view.applied())) {
        response.headers_mut().insert(APPLIED, value);
    }
}

/// After a leader answered a forwarded statement: waits (at most [`FOLLOW_WAIT`]) until this member
/// applied the leader's marks, so the client's next read here sees what the statement wrote.
/// The answer keeps the leader's marks.
pub async fn follow(view: &dyn ClusterView, answer: &HeaderMap) {
    let Ok(Some(marks)) = marks_in(answer, APPLIED) else {
        return;
    };
    if !view.wait_applied(&marks, FOLLOW_WAIT).await {
        tracing::warn!(
            marks = %encode(&marks),
            "a forwarded statement's writes were not applied here within the wait"
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn marks_round_trip_and_bad_ones_are_named() {
        let marks = vec![(0, 12), (9, 40_000)];
        assert_eq!(encode(&marks), "0:12,9:40000");
        assert_eq!(parse("0:12, 9:40000").unwrap(), marks);
        assert_eq!(parse("").unwrap(), vec![]);
        assert!(parse("0-12").unwrap_err().contains("'0-12'"));
        assert!(parse("a:1").is_err());
    }
}
