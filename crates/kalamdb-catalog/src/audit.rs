//! The audit trail (`system.audit_log`): who did what, as whom, from where, and when.
//!
//! One writer for every source: the SQL executor (DDL, user management, SHOW/DESCRIBE,
//! EXECUTE AS) and the auth service (logins). Passwords never reach it. A failure to record is
//! logged as an error; it does not fail the audited operation.

use crate::catalog::{AuditEntry, Catalog};
use crate::seq::SeqGenerator;
use std::net::IpAddr;
use std::sync::Arc;

/// One thing to record.
#[derive(Debug, Default)]
pub struct AuditEvent<'a> {
    /// The authenticated caller (for a login: the user name given).
    pub actor: &'a str,
    /// `CREATE_TABLE`, `LOGIN_FAILED`, `EXECUTE_AS` …
    pub action: &'a str,
    /// The object acted on.
    pub target: &'a str,
    /// Extra detail.
    pub details: Option<String>,
    /// For `EXECUTE_AS`: the user acted as.
    pub subject: Option<&'a str>,
    /// The client's address, when the request came over the network.
    pub ip: Option<IpAddr>,
}

/// Appends audit entries.
#[derive(Debug, Clone)]
pub struct AuditLog {
    catalog: Catalog,
    seq: Arc<SeqGenerator>,
}

impl AuditLog {
    /// A log writing through `catalog`, with ids from `seq`.
    pub fn new(catalog: Catalog, seq: Arc<SeqGenerator>) -> Self {
        Self { catalog, seq }
    }

    /// Records `event`.
    pub fn record(&self, event: AuditEvent<'_>) {
        let entry = AuditEntry {
            audit_id: self.seq.next_id(),
            timestamp: chrono::Utc::now().timestamp_micros(),
            actor_user_id: event.actor.to_string(),
            action: event.action.to_string(),
            target: event.target.to_string(),
            details: event.details,
            subject_user_id: event.subject.map(str::to_string),
            ip_address: event.ip.map(|ip| ip.to_string()),
        };
        if let Err(e) = self.catalog.append_audit(&entry) {
            tracing::error!(error = %e, action = event.action, target = event.target, "cannot write audit entry");
        }
    }
}
