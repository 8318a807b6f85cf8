//! The auth model: users and passwords ([`password`]), our JWTs ([`tokens`]), external OIDC
//! tokens (`oidc`, `[auth.oidc]`), and [`AuthService`], which turns credentials or a bearer
//! token into an [`Identity`].
//!
//! Error messages never tell an unknown user from a wrong password. bcrypt work runs on the
//! blocking pool so logins never stall the async runtime.

mod oidc;
pub mod password;
mod session_cache;
mod throttle;
pub mod tokens;

use crate::config::AuthConfig;
use kalamdb_catalog::audit::{AuditEvent, AuditLog};
use kalamdb_catalog::catalog::{Catalog, UserRecord};
use kalamdb_commons::{Role, UserId};
use session_cache::SessionCache;
use std::net::IpAddr;
use std::sync::Arc;
use throttle::LoginThrottle;
use tokens::{TokenError, TokenKind, TokenService};

/// Who is making a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    /// The user.
    pub user_id: UserId,
    /// The user's role.
    pub role: Role,
}

/// Why authentication failed. The wire mapping lives in the API crate.
#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    /// Too many failed logins; refused until the lock expires.
    #[error("Account is temporarily locked after too many failed logins")]
    AccountLocked,
    /// Unknown user, wrong password, deleted user, bad token: one answer for all.
    #[error("Invalid credentials")]
    InvalidCredentials,
    /// The access token expired.
    #[error("Invalid credentials")]
    TokenExpired,
    /// root has no password yet.
    #[error("Server requires initial setup. Root password is not configured.")]
    SetupRequired,
    /// Setup was done already.
    #[error("Server is already configured")]
    AlreadyConfigured,
    /// A password that breaks the policy.
    #[error("{0}")]
    WeakPassword(String),
    /// A bad user name.
    #[error("{0}")]
    InvalidUser(String),
    /// The user exists already.
    #[error("user '{0}' already exists")]
    UserExists(String),
    /// Storage or hashing failed.
    #[error("{0}")]
    Internal(String),
    /// The engine refused a write (a cluster member that does not lead its group, or a group
    /// without quorum): kept whole, so its code reaches the client.
    #[error("{0}")]
    Engine(kalamdb_catalog::error::KalamError),
}

impl From<kalamdb_catalog::error::KalamError> for AuthError {
    fn from(e: kalamdb_catalog::error::KalamError) -> Self {
        match e {
            kalamdb_catalog::error::KalamError::Store(
                kalamdb_store::StoreError::NotLeader { .. }
                | kalamdb_store::StoreError::Unavailable(_),
            ) => AuthError::Engine(e),
            other => AuthError::Internal(other.to_string()),
        }
    }
}

impl AuthError {
    /// As a statement's error: the engine's own kept, the rest an internal failure.
    pub fn into_statement_error(self) -> kalamdb_catalog::error::KalamError {
        match self {
            AuthError::Engine(e) => e,
            other => kalamdb_catalog::error::KalamError::Internal(other.to_string()),
        }
    }
}

/// How a new user signs in.
#[derive(Debug, Clone)]
pub enum Login {
    /// With this password (hashed before it is stored).
    Password(String),
    /// With tokens of an OIDC issuer for this subject.
    OAuth(kalamdb_catalog::catalog::OAuthIdentity),
}

/// A successful login.
#[derive(Debug, Clone)]
pub struct LoginGrant {
    /// The user.
    pub user: UserRecord,
    /// Access token and its expiry (Unix seconds).
    pub access: (String, i64),
    /// Refresh token and its expiry (Unix seconds).
    pub refresh: (String, i64),
}

/// Authentication service.
#[derive(Debug)]
pub struct AuthService {
    catalog: Catalog,
    tokens: TokenService,
    config: AuthConfig,
    sessions: SessionCache,
    audit: AuditLog,
    throttle: LoginThrottle,
    /// A hash checked for unknown names, so they cost a login the same time as real ones.
    decoy_hash: String,
    /// Trusted OIDC issuers; `None` when none are configured.
    oidc: Option<oidc::Oidc>,
}

fn now_micros() -> i64 {
    chrono::Utc::now().timestamp_micros()
}

impl AuthService {
    /// Creates the service and makes sure `root` exists with the configured password.
    pub async fn start(
        catalog: Catalog,
        config: AuthConfig,
        audit: AuditLog,
    ) -> Result<Arc<Self>, AuthError> {
        let tokens = TokenService::new(&config.jwt_secret, config.jwt_expiry_hours);
        let throttle = LoginThrottle::new(
            config.max_failed_logins,
            std::time::Duration::from_secs(config.lockout_seconds),
        );
        let decoy_hash = password::hash("decoy-password".into(), config.bcrypt_cost).await?;
        let oidc = oidc::Oidc::new(&config.oidc).map_err(AuthError::Internal)?;
        let svc = Arc::new(Self {
            oidc,
            catalog,
            tokens,
            config,
            sessions: SessionCache::default(),
            audit,
            throttle,
            decoy_hash,
        });
        svc.bootstrap_root().await?;
        Ok(svc)
    }

    async fn bootstrap_root(&self) -> Result<(), AuthError> {
        let root = UserId::new("root");
        let existing = self.catalog.user(&root)?;
        let configured = self.config.root_password.clone();
        let now = now_micros();
        let mut user = match existing {
            Some(u) => u,
            None => UserRecord::new(
                "root",
                String::new(),
                Role::System,
                Some("root@localhost".into()),
                "internal",
                now,
            ),
        };
        if !configured.is_empty() {
            let matches = !user.password_hash.is_empty()
                && password::verify(configured.clone(), user.password_hash.clone()).await;
            if !matches {
                user.password_hash = password::hash(configured, self.config.bcrypt_cost).await?;
                user.updated_at = now;
                user.revoke_tokens(now);
            }
        }
        self.catalog.put_user(&user)?;
        Ok(())
    }

    /// Whether root still has no password.
    pub fn needs_setup(&self) -> Result<bool, AuthError> {
        Ok(self
            .catalog
            .user(&UserId::new("root"))?
            .is_none_or(|u| u.password_hash.is_empty()))
    }

    /// Checks a user name and password.
    pub async fn login(
        &self,
        user: &str,
        pw: &str,
        ip: Option<IpAddr>,
    ) -> Result<LoginGrant, AuthError> {
        let result = self.check_login(user, pw, ip).await;
        let (action, details) = match &result {
            Ok(_) => ("LOGIN", None),
            Err(e) => ("LOGIN_FAILED", Some(e.to_string())),
        };
        // The name as given, cut short: it is attacker-controlled when the login fails.
        let name: String = user.chars().take(128).collect();
        self.audit.record(AuditEvent {
            actor: &name,
            action,
            target: &name,
            details,
            ip,
            ..AuditEvent::default()
        });
        result
    }

    async fn check_login(
        &self,
        user: &str,
        pw: &str,
        ip: Option<IpAddr>,
    ) -> Result<LoginGrant, AuthError> {
        // Refused before the password is looked at, whether or not the name exists.
        if self.throttle.is_locked(user, ip) {
            return Err(AuthError::AccountLocked);
        }
        let failed = |e: AuthError| {
            if matches!(e, AuthError::InvalidCredentials) && self.throttle.failed(user, ip) {
                tracing::warn!(user = %user.chars().take(128).collect::<String>(), ?ip,
                    "logins of this name from this address locked after failures");
            }
            e
        };
        let record = match UserId::parse(user) {
            Ok(id) => self.catalog.user(&id)?,
            Err(_) => None,
        };
        let Some(record) = record.filter(|r| r.deleted_at.is_none()) else {
            // Same work and answer as a wrong password.
            password::verify(pw.to_string(), self.decoy_hash.clone()).await;
            return Err(failed(AuthError::InvalidCredentials));
        };
        let id = UserId::new(record.user_id.as_str());
        if record.password_hash.is_empty() {
            return Err(if record.user_id == "root" && pw.is_empty() {
                AuthError::SetupRequired
            } else {
                failed(AuthError::InvalidCredentials)
            });
        }
        let now = now_micros();
        let verified = password::verify(pw.to_string(), record.password_hash.clone()).await;
        // The bookkeeping goes onto the record as stored now: a DROP USER, role or password
        // change that landed during the (slow) hash check is kept, and refuses the login.
        let checked = record.password_hash;
        let updated = self.catalog.update_user(&id, |stored| {
            if stored.deleted_at.is_some() || stored.password_hash != checked {
                return Err(AuthError::InvalidCredentials);
            }
            if verified {
                stored.last_login_at = Some(now);
                stored.locked_until = None;
                stored.failed_login_attempts = 0;
                return Ok(true);
            }
            // Shown in system.users; the lockout itself is per (name, address).
            stored.failed_login_attempts = stored.failed_login_attempts.saturating_add(1);
            Ok(false)
        });
        match updated {
            Ok(Some((record, true))) => {
                self.throttle.succeeded(user, ip);
                self.grant(record)
            }
            Ok(_) => Err(failed(AuthError::InvalidCredentials)),
            Err(e) => Err(failed(e)),
        }
    }

    /// Issues a fresh token pair for a user.
    pub fn grant(&self, user: UserRecord) -> Result<LoginGrant, AuthError> {
        let access = self.tokens.issue(&user, TokenKind::Access)?;
        let refresh = self.tokens.issue(&user, TokenKind::Refresh)?;
        Ok(LoginGrant {
            user,
            access,
            refresh,
        })
    }

    /// The identity behind an access token (ours, or an OIDC issuer's): the user record
    /// is not returned, and answers come from a cache of verified tokens while no user has
    /// changed.
    pub async fn identify(&self, token: &str) -> Result<Identity, AuthError> {
        let epoch = self.catalog.users_epoch();
        let now = chrono::Utc::now().timestamp();
        if let Some(identity) = self.sessions.get(token, epoch, now) {
            return Ok(identity);
        }
        let (identity, _, exp) = self.verify_any(token, TokenKind::Access).await?;
        self.sessions.put(token, identity.clone(), exp, epoch);
        Ok(identity)
    }

    /// Validates a token of the given kind and loads its user. External (OIDC) tokens are
    /// access tokens.
    pub async fn authenticate(
        &self,
        token: &str,
        kind: TokenKind,
    ) -> Result<(Identity, UserRecord), AuthError> {
        let (identity, user, _) = self.verify_any(token, kind).await?;
        Ok((identity, user))
    }

    /// [`AuthService::verify`], or for a token of a trusted OIDC issuer, its checks and the
    /// user it maps to (created on first sign-in when the issuer allows).
    async fn verify_any(
        &self,
        token: &str,
        kind: TokenKind,
    ) -> Result<(Identity, UserRecord, i64), AuthError> {
        let Some((oidc, issuer)) = self
            .oidc
            .as_ref()
            .and_then(|o| o.issuer_of(token).map(|i| (o, i)))
        else {
            return self.verify(token, kind);
        };
        if kind != TokenKind::Access {
            return Err(AuthError::InvalidCredentials);
        }
        let login = oidc.verify(issuer, token).await.map_err(|e| match e {
            oidc::ExternalError::Expired => AuthError::TokenExpired,
            oidc::ExternalError::Invalid(why) => {
                tracing::debug!(issuer = %issuer.config().issuer, %why, "OIDC token refused");
                AuthError::InvalidCredentials
            }
        })?;
        let user = match self.oauth_user(&login.provider, &login.subject)? {
            Some(user) => user,
            None if issuer.config().auto_create_users => self.provision(&login, issuer.config())?,
            None => {
                tracing::debug!(provider = %login.provider, subject = %login.subject,
                    "OIDC sign-in of a subject no user is mapped to");
                return Err(AuthError::InvalidCredentials);
            }
        };
        if user.deleted_at.is_some() {
            return Err(AuthError::InvalidCredentials);
        }
        let identity = Identity {
            user_id: UserId::new(user.user_id.as_str()),
            role: user.role,
        };
        Ok((identity, user, login.exp))
    }

    /// The user (dropped ones too) mapped to `provider`'s `subject`: the account stored last
    /// with that identity, if it still has it.
    fn oauth_user(&self, provider: &str, subject: &str) -> Result<Option<UserRecord>, AuthError> {
        let identity = kalamdb_catalog::catalog::OAuthIdentity {
            provider: provider.to_string(),
            subject: subject.to_string(),
        };
        let Some(id) = self.catalog.user_by_oauth(&identity)? else {
            return Ok(None);
        };
        Ok(self
            .catalog
            .user(&id)?
            .filter(|u| u.oauth.as_ref() == Some(&identity)))
    }

    /// Creates the user of a first OIDC sign-in, named by the issuer's `username_claim`.
    /// Refused when that name is taken (by any account, dropped ones too: an account an
    /// admin dropped is not re-created by signing in again).
    fn provision(
        &self,
        login: &oidc::ExternalLogin,
        issuer: &crate::config::OidcIssuerConfig,
    ) -> Result<UserRecord, AuthError> {
        let refuse = |why: String| {
            tracing::warn!(provider = %login.provider, subject = %login.subject, %why,
                "OIDC sign-in cannot create a user");
            AuthError::InvalidCredentials
        };
        let name = login.username.as_deref().ok_or_else(|| {
            refuse(format!(
                "the token has no '{}' claim",
                issuer.username_claim
            ))
        })?;
        let id = UserId::parse(name).map_err(|e| refuse(format!("'{name}': {e}")))?;
        let role = Role::parse(&issuer.default_role).unwrap_or(Role::User);
        let mut record = UserRecord::new(
            id.as_str(),
            String::new(),
            role,
            login.email.clone(),
            "oauth",
            now_micros(),
        );
        record.oauth = Some(kalamdb_catalog::catalog::OAuthIdentity {
            provider: login.provider.clone(),
            subject: login.subject.clone(),
        });
        if !self.catalog.insert_user_if_absent(&record)? {
            // A concurrent first sign-in of the same subject created it: use that.
            return match self.catalog.user(&id)? {
                Some(u) if u.oauth == record.oauth && u.deleted_at.is_none() => Ok(u),
                _ => Err(refuse(format!("the user name '{id}' is taken"))),
            };
        }
        self.audit.record(AuditEvent {
            actor: id.as_str(),
            action: "CREATE_USER",
            target: id.as_str(),
            details: Some(format!(
                "first sign-in through OIDC provider {}",
                login.provider
            )),
            ..AuditEvent::default()
        });
        Ok(record)
    }

    /// Whether `provider` is a configured OIDC issuer's name.
    pub fn knows_provider(&self, provider: &str) -> bool {
        self.config
            .oidc
            .issuers
            .iter()
            .any(|i| i.provider() == provider)
    }

    /// Checks a token and its user; returns the identity, the user and the token's expiry.
    fn verify(
        &self,
        token: &str,
        kind: TokenKind,
    ) -> Result<(Identity, UserRecord, i64), AuthError> {
        let claims = self.tokens.verify(token, kind).map_err(|e| match e {
            TokenError::Expired => AuthError::TokenExpired,
            TokenError::Invalid => AuthError::InvalidCredentials,
        })?;
        let id = UserId::parse(&claims.sub).map_err(|_| AuthError::InvalidCredentials)?;
        let user = self
            .catalog
            .user(&id)?
            .ok_or(AuthError::InvalidCredentials)?;
        if user.deleted_at.is_some()
            || claims.role.is_some_and(|r| r != user.role)
            || claims.tgen != user.token_generation
        {
            return Err(AuthError::InvalidCredentials);
        }
        Ok((
            Identity {
                user_id: id,
                role: user.role,
            },
            user,
            claims.exp,
        ))
    }

    /// First-run setup: sets root's password and creates a dba user.
    pub async fn setup(
        &self,
        user: &str,
        pw: &str,
        root_password: &str,
        email: Option<String>,
    ) -> Result<UserRecord, AuthError> {
        if !self.needs_setup()? {
            return Err(AuthError::AlreadyConfigured);
        }
        let id = UserId::parse(user).map_err(|e| AuthError::InvalidUser(e.to_string()))?;
        if id.as_str() == "root" {
            return Err(AuthError::InvalidUser(
                "the dba user cannot be 'root'".into(),
            ));
        }
        password::check_policy(pw, self.config.min_password_length)
            .map_err(|m| AuthError::WeakPassword(format!("DBA user password: {m}")))?;
        password::check_policy(root_password, self.config.min_password_length)
            .map_err(|m| AuthError::WeakPassword(format!("Root password: {m}")))?;
        if self
            .catalog
            .user(&id)?
            .is_some_and(|u| u.deleted_at.is_none())
        {
            return Err(AuthError::UserExists(id.to_string()));
        }
        let dba = self
            .create_user(&id, Login::Password(pw.to_string()), Role::Dba, email)
            .await?;
        let mut root = self
            .catalog
            .user(&UserId::new("root"))?
            .ok_or(AuthError::InvalidCredentials)?;
        root.password_hash =
            password::hash(root_password.to_string(), self.config.bcrypt_cost).await?;
        root.updated_at = now_micros();
        root.revoke_tokens(root.updated_at);
        self.catalog.put_user(&root)?;
        Ok(dba)
    }

    /// Creates (or re-creates a deleted) user; the policy is checked by the caller.
    pub async fn create_user(
        &self,
        id: &UserId,
        login: Login,
        role: Role,
        email: Option<String>,
    ) -> Result<UserRecord, AuthError> {
        let now = now_micros();
        let record = match login {
            Login::Password(pw) => {
                let hash = password::hash(pw, self.config.bcrypt_cost).await?;
                UserRecord::new(id.as_str(), hash, role, email, "password", now)
            }
            Login::OAuth(identity) => {
                let mut r = UserRecord::new(id.as_str(), String::new(), role, email, "oauth", now);
                r.oauth = Some(identity);
                r
            }
        };
        self.catalog.put_user(&record)?;
        Ok(record)
    }

    /// Hashes a password with the configured bcrypt cost.
    pub async fn hash_password(&self, pw: &str) -> Result<String, AuthError> {
        password::hash(pw.to_string(), self.config.bcrypt_cost).await
    }

    /// Minimum password length from the config.
    pub fn min_password_length(&self) -> usize {
        self.config.min_password_length
    }
}
