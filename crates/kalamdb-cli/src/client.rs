//! The CLI's HTTP side of the wire protocol (`docs/protocol.md` §3-4): login, token refresh,
//! SQL requests, health; saved credentials kept current when a refresh renews them.

use crate::config::{Credential, Credentials};
use crate::error::{CliError, Result};
use kalamdb_commons::wire::{LoginResponse, ResponseStatus, SqlRequest, SqlResponse};
use serde_json::{Value, json};

/// Who the client is logged in as, and where.
#[derive(Debug, Clone)]
pub struct Session {
    /// Base URL, without a trailing `/`.
    pub url: String,
    /// Name of the instance (the key of its saved credentials).
    pub instance: String,
    /// The user.
    pub user: String,
    /// Access token.
    pub access_token: String,
    /// Refresh token, when the session came from a login.
    pub refresh_token: Option<String>,
    /// Access-token expiry.
    pub expires_at: Option<String>,
}

impl Session {
    /// The saved form of this session.
    pub fn credential(&self) -> Credential {
        Credential {
            url: self.url.clone(),
            user: self.user.clone(),
            access_token: self.access_token.clone(),
            refresh_token: self.refresh_token.clone(),
            expires_at: self.expires_at.clone(),
        }
    }
}

/// An HTTP client of one server.
#[derive(Debug, Clone)]
pub struct Client {
    http: reqwest::Client,
    /// The login in use.
    pub session: Session,
    /// Default namespace of requests (`\use`, `--namespace`).
    pub namespace: Option<String>,
    /// Whether a refreshed session is written back to `credentials.toml`.
    pub persist: bool,
    /// The open transaction requests run in (a lone `BEGIN` opened it; `docs/protocol.md`
    /// §4.2.1).
    pub transaction: Option<String>,
}

/// What a transport failure means to a user.
fn unreachable(url: &str, e: &reqwest::Error) -> CliError {
    let reason = if e.is_connect() {
        "connection refused".to_string()
    } else if e.is_timeout() {
        "timed out".to_string()
    } else {
        e.to_string()
    };
    CliError::Connect {
        url: url.to_string(),
        reason,
    }
}

/// Logs `user` in at `url`.
pub async fn login(
    http: &reqwest::Client,
    url: &str,
    user: &str,
    password: &str,
) -> Result<LoginResponse> {
    let resp = http
        .post(format!("{url}/v1/api/auth/login"))
        .json(&json!({"user": user, "password": password}))
        .send()
        .await
        .map_err(|e| unreachable(url, &e))?;
    auth_reply(resp, url).await
}

async fn auth_reply(resp: reqwest::Response, url: &str) -> Result<LoginResponse> {
    let status = resp.status();
    let body: Value = resp.json().await.map_err(|e| unreachable(url, &e))?;
    if status.is_success() {
        return serde_json::from_value(body)
            .map_err(|e| CliError::Other(format!("unexpected login reply: {e}")));
    }
    let code = body["error"].as_str().unwrap_or("error");
    Err(CliError::Auth(match code {
        "unauthorized" => "login failed: wrong user or password (or the session expired)".into(),
        "account_locked" => "login refused: too many failed attempts, try again later".into(),
        "setup_required" => {
            "the server is not set up yet: set KALAMDB_ROOT_PASSWORD, or run its setup".into()
        }
        _ => format!("login failed: {}", body["message"].as_str().unwrap_or(code)),
    }))
}

impl Client {
    /// A client of `session`.
    pub fn new(http: reqwest::Client, session: Session) -> Self {
        Self {
            http,
            session,
            namespace: None,
            persist: false,
            transaction: None,
        }
    }

    /// The HTTP client (for routes this type has no method for).
    pub fn http(&self) -> &reqwest::Client {
        &self.http
    }

    /// Runs `sql` (one or more statements); an error envelope becomes [`CliError::Server`].
    /// An expired access token is refreshed once and the request sent again.
    pub async fn sql(&mut self, sql: &str) -> Result<SqlResponse> {
        match self.sql_once(sql).await {
            Err(CliError::Server { code, .. })
                if code == "TOKEN_EXPIRED" && self.session.refresh_token.is_some() =>
            {
                self.refresh().await?;
                self.sql_once(sql).await
            }
            other => other,
        }
    }

    /// Runs `sql` once, without renewing an expired token (`TOKEN_EXPIRED` comes back as
    /// [`CliError::Server`]).
    pub async fn sql_once(&self, sql: &str) -> Result<SqlResponse> {
        let body = SqlRequest {
            sql: sql.to_string(),
            namespace_id: self.namespace.clone(),
            transaction_id: self.transaction.clone(),
            ..SqlRequest::default()
        };
        let url = &self.session.url;
        let resp = self
            .http
            .post(format!("{url}/v1/api/sql"))
            .bearer_auth(&self.session.access_token)
            .json(&body)
            .send()
            .await
            .map_err(|e| unreachable(url, &e))?;
        let text = resp.text().await.map_err(|e| unreachable(url, &e))?;
        let reply: SqlResponse = serde_json::from_str(&text).map_err(|e| {
            CliError::Other(format!("the server's reply is not a SQL response ({e})"))
        })?;
        if reply.status == ResponseStatus::Success {
            return Ok(reply);
        }
        let (code, message) = reply
            .error
            .map(|e| {
                let code = serde_json::to_value(e.code)
                    .ok()
                    .and_then(|v| v.as_str().map(str::to_string))
                    .unwrap_or_else(|| "ERROR".into());
                (code, e.message)
            })
            .unwrap_or_else(|| ("ERROR".into(), "the statement failed".into()));
        if code == "INVALID_CREDENTIALS" || code == "MISSING_AUTHORIZATION" {
            return Err(CliError::Auth(format!(
                "{code}: not logged in or the session is no longer valid; log in again with --user"
            )));
        }
        Err(CliError::Server { code, message })
    }

    /// Renews the access token with the refresh token (and saves it, when persisting).
    pub async fn refresh(&mut self) -> Result<()> {
        let Some(refresh) = self.session.refresh_token.clone() else {
            return Err(CliError::Auth(
                "the session expired; log in again with --user".into(),
            ));
        };
        let url = self.session.url.clone();
        let resp = self
            .http
            .post(format!("{url}/v1/api/auth/refresh"))
            .bearer_auth(refresh)
            .send()
            .await
            .map_err(|e| unreachable(&url, &e))?;
        let login = auth_reply(resp, &url).await.map_err(|_| {
            CliError::Auth(
                "the session expired and could not be renewed; log in again with --user".into(),
            )
        })?;
        self.session.access_token = login.access_token;
        self.session.refresh_token = login.refresh_token.or(self.session.refresh_token.take());
        self.session.expires_at = Some(login.expires_at);
        if self.persist {
            let mut saved = Credentials::load()?;
            saved
                .instances
                .insert(self.session.instance.clone(), self.session.credential());
            saved.save()?;
        }
        Ok(())
    }

    /// `GET path` as JSON (health, auth/me).
    pub async fn get_json(&self, path: &str) -> Result<Value> {
        let url = &self.session.url;
        let resp = self
            .http
            .get(format!("{url}{path}"))
            .bearer_auth(&self.session.access_token)
            .send()
            .await
            .map_err(|e| unreachable(url, &e))?;
        resp.json().await.map_err(|e| unreachable(url, &e))
    }

    /// `POST path` with a JSON body, as JSON; a non-2xx reply is an error.
    pub async fn post_json(&self, path: &str, body: &Value) -> Result<Value> {
        let url = &self.session.url;
        let resp = self
            .http
            .post(format!("{url}{path}"))
            .bearer_auth(&self.session.access_token)
            .json(body)
            .send()
            .await
            .map_err(|e| unreachable(url, &e))?;
        let status = resp.status();
        let body: Value = resp.json().await.map_err(|e| unreachable(url, &e))?;
        if status.is_success() {
            return Ok(body);
        }
        let error = &body["error"];
        Err(CliError::Server {
            code: error["code"].as_str().unwrap_or("ERROR").to_string(),
            message: error["message"]
                .as_str()
                .map_or_else(|| body.to_string(), str::to_string),
        })
    }
}
