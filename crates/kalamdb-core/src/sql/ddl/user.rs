//! `CREATE USER`, `ALTER USER` and `DROP USER` (a soft delete), and the purge of a dropped
//! account's rows when a new account takes its name.

use super::now;
use crate::access;
use crate::app_context::AppContext;
use crate::auth::password;
use crate::sql::parse::{UserChange, UserLogin};
use crate::sql::session::{ExecCtx, Output};
use kalamdb_catalog::error::{KalamError, Result};
use kalamdb_commons::{Role, TableType, UserId};

/// `CREATE USER`.
pub async fn create_user(
    app: &AppContext,
    ctx: &ExecCtx,
    name: &str,
    login: UserLogin,
    role: Option<&str>,
    email: Option<String>,
) -> Result<Output> {
    access::check_admin(&ctx.identity, "manage users")?;
    let id = UserId::parse(name).map_err(|e| KalamError::InvalidSql(e.to_string()))?;
    let role = match role {
        None => Role::User,
        Some(r) => Role::parse(r).ok_or_else(|| {
            KalamError::InvalidSql(format!(
                "Unknown role '{r}': use user, service, dba or system"
            ))
        })?,
    };
    if role == Role::System && ctx.identity.role != Role::System {
        return Err(KalamError::PermissionDenied(
            "Only a system user may create system users".into(),
        ));
    }
    match &login {
        UserLogin::Password(pw) => password::check_policy(pw, app.auth().min_password_length())
            .map_err(KalamError::InvalidInput)?,
        UserLogin::OAuth { provider, subject } => {
            if !app.auth().knows_provider(provider) {
                return Err(KalamError::InvalidInput(format!(
                    "No OIDC provider '{provider}' is configured (the `name` of an \
                     [[auth.oidc.issuers]] entry, or its issuer URL when it has no name)"
                )));
            }
            if subject.is_empty() {
                return Err(KalamError::InvalidInput("SUBJECT must not be empty".into()));
            }
            let identity = kalamdb_catalog::catalog::OAuthIdentity {
                provider: provider.clone(),
                subject: subject.clone(),
            };
            let taken = match app.catalog().user_by_oauth(&identity)? {
                Some(id) => app
                    .catalog()
                    .user(&id)?
                    .filter(|u| u.deleted_at.is_none() && u.oauth.as_ref() == Some(&identity)),
                None => None,
            };
            if let Some(u) = taken {
                return Err(KalamError::InvalidInput(format!(
                    "User '{}' already signs in as that {provider} subject",
                    u.user_id
                )));
            }
        }
    }
    let mut note = "";
    match app.catalog().user(&id)? {
        Some(u) if u.deleted_at.is_none() => {
            return Err(KalamError::AlreadyExists {
                kind: "User",
                name: id.to_string(),
            });
        }
        // The user id is the name: a new account must not inherit a dropped one's rows.
        Some(_) => {
            purge_user_rows(app, &id).await?;
            note = " (rows of the dropped account of that name were removed)";
        }
        None => {}
    }
    app.auth()
        .create_user(&id, login_of(login), role, email)
        .await
        .map_err(crate::auth::AuthError::into_statement_error)?;
    Ok(Output::Message(format!(
        "User '{id}' created with role '{role}'{note}"
    )))
}

fn login_of(login: UserLogin) -> crate::auth::Login {
    match login {
        UserLogin::Password(pw) => crate::auth::Login::Password(pw),
        UserLogin::OAuth { provider, subject } => {
            crate::auth::Login::OAuth(kalamdb_catalog::catalog::OAuthIdentity { provider, subject })
        }
    }
}

/// Removes every row `user` holds in USER and STREAM tables, hot and flushed.
async fn purge_user_rows(app: &AppContext, user: &UserId) -> Result<()> {
    let scope = kalamdb_tables::rows::Scope::User(user.clone());
    for def in app.catalog().tables(None)? {
        if def.table_type != TableType::Shared {
            app.tables().remove_scope_data(&def, &scope).await?;
        }
    }
    Ok(())
}

/// `DROP USER`: a soft delete; the user's tokens stop working at once.
pub fn drop_user(app: &AppContext, ctx: &ExecCtx, name: &str, if_exists: bool) -> Result<Output> {
    access::check_admin(&ctx.identity, "manage users")?;
    let id = UserId::new(name);
    if name == "root" || id == ctx.identity.user_id {
        return Err(KalamError::PermissionDenied(format!(
            "User '{name}' cannot be dropped"
        )));
    }
    match app.catalog().user(&id)? {
        Some(u)
            if u.deleted_at.is_none()
                && u.role == Role::System
                && ctx.identity.role != Role::System =>
        {
            Err(KalamError::PermissionDenied(format!(
                "Only a system user may drop '{id}'"
            )))
        }
        Some(mut u) if u.deleted_at.is_none() => {
            u.deleted_at = Some(now());
            u.updated_at = now();
            app.catalog().put_user(&u)?;
            if let Some(listener) = app.tables().change_listener() {
                listener.user_revoked(&id);
            }
            Ok(Output::Message(format!("User '{id}' dropped")))
        }
        _ if if_exists => Ok(Output::Message(format!("User '{id}' does not exist"))),
        _ => Err(KalamError::NotFound {
            kind: "User",
            name: id.to_string(),
        }),
    }
}

/// `ALTER USER`: a user may change their own password and email; role changes and changes to
/// other users need dba/system. A role change makes tokens carrying the old role stop working.
pub async fn alter_user(
    app: &AppContext,
    ctx: &ExecCtx,
    name: &str,
    change: UserChange,
) -> Result<Output> {
    let id = UserId::new(name);
    let is_self = id == ctx.identity.user_id;
    if !is_self || matches!(change, UserChange::Role(_)) {
        access::check_admin(&ctx.identity, "manage users")?;
    }
    let mut user = match app.catalog().user(&id)? {
        Some(u) if u.deleted_at.is_none() => u,
        _ => {
            return Err(KalamError::NotFound {
                kind: "User",
                name: id.to_string(),
            });
        }
    };
    if user.role == Role::System && ctx.identity.role != Role::System {
        return Err(KalamError::PermissionDenied(format!(
            "Only a system user may alter '{id}'"
        )));
    }
    let what = match change {
        UserChange::Password(pw) => {
            password::check_policy(&pw, app.auth().min_password_length())
                .map_err(KalamError::InvalidInput)?;
            user.password_hash = app
                .auth()
                .hash_password(&pw)
                .await
                .map_err(crate::auth::AuthError::into_statement_error)?;
            user.failed_login_attempts = 0;
            user.locked_until = None;
            user.revoke_tokens(now());
            "password"
        }
        UserChange::Role(r) => {
            let role = Role::parse(&r).ok_or_else(|| {
                KalamError::InvalidSql(format!(
                    "Unknown role '{r}': use user, service, dba or system"
                ))
            })?;
            if name == "root" {
                return Err(KalamError::PermissionDenied(
                    "The role of 'root' cannot be changed".into(),
                ));
            }
            if role == Role::System && ctx.identity.role != Role::System {
                return Err(KalamError::PermissionDenied(
                    "Only a system user may grant the system role".into(),
                ));
            }
            user.role = role;
            user.revoke_tokens(now());
            "role"
        }
        UserChange::Email(e) => {
            user.email = Some(e);
            "email"
        }
    };
    user.updated_at = now();
    app.catalog().put_user(&user)?;
    // Connections opened with the account's earlier tokens end with them.
    if what != "email"
        && let Some(listener) = app.tables().change_listener()
    {
        listener.user_revoked(&id);
    }
    Ok(Output::Message(format!("User '{id}' {what} updated")))
}
