//! DataFusion integration: the `kalam` catalog ([`catalog`]), application-table providers
//! ([`table`]), system-table providers ([`system`], read when their plan runs: [`deferred`]),
//! views ([`view`]) and [`information_schema`].
//!
//! Per-request identity travels in the DataFusion session config as a [`SessionIdentity`]
//! extension (one shared `SessionContext`, no per-user context). Providers read it in `scan`
//! to pick the caller's scope and check access.

pub mod catalog;
pub mod deferred;
pub mod deps;
pub mod flushed_audit;
pub mod information_schema;
pub mod system;
mod system_ops;
pub(crate) use system_ops::metric_figures;
mod system_rows;
pub mod system_schema;
pub mod table;
pub mod view;

use crate::auth::Identity;
use datafusion::catalog::Session;
use datafusion::error::Result as DfResult;
use kalamdb_catalog::error::KalamError;

/// The caller of the statement being planned, stored as a session-config extension.
#[derive(Debug, Clone)]
pub struct SessionIdentity(pub Identity);

/// The transaction a statement runs in, stored as a session-config extension: scans read
/// through its snapshot and staged rows.
#[derive(Debug, Clone)]
pub struct SessionTx(pub std::sync::Arc<crate::transactions::Transaction>);

/// The identity of the session, or a permission error if none was set.
pub fn identity_of(state: &dyn Session) -> DfResult<Identity> {
    state
        .config()
        .get_extension::<SessionIdentity>()
        .map(|i| i.0.clone())
        .ok_or_else(|| {
            KalamError::PermissionDenied("no identity on session".into()).into_datafusion()
        })
}
