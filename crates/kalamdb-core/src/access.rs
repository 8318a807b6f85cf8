//! Permission rules of the roles `user`, `service`, `dba`, `system` (see `docs/protocol.md` §3.1), in one
//! place. Every statement path asks here; nothing else compares roles.

use crate::auth::Identity;
use kalamdb_catalog::error::{KalamError, Result};
use kalamdb_commons::{AccessLevel, Role, TableDefinition, TableType};

fn deny(what: &str, identity: &Identity) -> KalamError {
    KalamError::PermissionDenied(format!(
        "Permission denied: role '{}' may not {what}",
        identity.role
    ))
}

/// DDL on namespaces, SHARED tables and users: dba and system only.
pub fn check_admin(identity: &Identity, what: &str) -> Result<()> {
    if identity.role.is_admin() {
        Ok(())
    } else {
        Err(deny(what, identity))
    }
}

/// Storage maintenance (`STORAGE FLUSH`, `STORAGE COMPACT`): service, dba and system.
pub fn check_storage_maintenance(identity: &Identity) -> Result<()> {
    if identity.role >= Role::Service {
        Ok(())
    } else {
        Err(deny("run storage maintenance", identity))
    }
}

/// Creating a table of `table_type`.
pub fn check_create_table(identity: &Identity, table_type: TableType) -> Result<()> {
    let ok = match table_type {
        TableType::User | TableType::Stream => identity.role >= Role::User,
        TableType::Shared => identity.role >= Role::Service,
        TableType::System => false,
    };
    if ok {
        Ok(())
    } else {
        Err(deny(&format!("create {table_type} tables"), identity))
    }
}

/// Altering a table: service, dba and system. A change applies to every user's rows (a
/// dropped column is gone for all), so a plain user may not make it even on a USER table
/// they could create.
pub fn check_alter_table(identity: &Identity) -> Result<()> {
    if identity.role >= Role::Service {
        Ok(())
    } else {
        Err(deny("alter tables", identity))
    }
}

/// Dropping a table: dba and system only.
pub fn check_drop_table(identity: &Identity) -> Result<()> {
    check_admin(identity, "drop tables")
}

fn min_role(level: AccessLevel) -> Role {
    match level {
        AccessLevel::Public => Role::Anonymous,
        AccessLevel::Private | AccessLevel::Restricted => Role::Service,
        AccessLevel::Dba => Role::Dba,
    }
}

/// Reading a SHARED table.
pub fn check_shared_read(identity: &Identity, def: &TableDefinition) -> Result<()> {
    let level = def.access_level.unwrap_or(AccessLevel::Private);
    if identity.role >= min_role(level) {
        Ok(())
    } else {
        Err(deny(
            &format!("read {} table {}", level.as_str(), def.table_id()),
            identity,
        ))
    }
}

/// Writing a SHARED table: service and above (dba for DBA-level tables).
pub fn check_shared_write(identity: &Identity, def: &TableDefinition) -> Result<()> {
    let level = def.access_level.unwrap_or(AccessLevel::Private);
    let min = min_role(level).max(Role::Service);
    if identity.role >= min {
        Ok(())
    } else {
        Err(deny(
            &format!("write {} table {}", level.as_str(), def.table_id()),
            identity,
        ))
    }
}

/// Reading `system.*`: dba and system only.
pub fn check_system_read(identity: &Identity) -> Result<()> {
    check_admin(identity, "read system tables")
}

/// `EXECUTE AS USER`: whom the caller may act as, by the target's role. A service account may
/// act as users and services, a dba also as dbas, system as anyone; plain users only as
/// themselves (checked by the caller before this).
pub fn check_impersonate(identity: &Identity, target: Role) -> Result<()> {
    let ok = match identity.role {
        Role::System => true,
        Role::Dba => target <= Role::Dba,
        Role::Service => target <= Role::Service,
        Role::User | Role::Anonymous => false,
    };
    if ok {
        Ok(())
    } else {
        Err(deny(
            &format!("execute as a user with role '{target}'"),
            identity,
        ))
    }
}
