//! The files under `~/.kalam` (or `$KALAM_HOME`): `config.toml` (defaults for flags),
//! `credentials.toml` (saved tokens per instance, readable by the owner only) and `history`.

use crate::error::{CliError, Result};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// `~/.kalam/config.toml`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// Server URL.
    pub url: Option<String>,
    /// User to log in as.
    pub user: Option<String>,
    /// Output format (`table`, `json`, `csv`).
    pub format: Option<String>,
    /// Default namespace.
    pub namespace: Option<String>,
    /// Print statement times.
    pub timing: Option<bool>,
}

/// One saved login.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Credential {
    /// The server.
    pub url: String,
    /// Who logged in.
    pub user: String,
    /// The access token.
    pub access_token: String,
    /// The refresh token.
    #[serde(default)]
    pub refresh_token: Option<String>,
    /// When the access token expires (RFC 3339, as the server said).
    #[serde(default)]
    pub expires_at: Option<String>,
}

/// `~/.kalam/credentials.toml`: saved logins by instance name.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Credentials {
    /// By instance name.
    #[serde(default)]
    pub instances: BTreeMap<String, Credential>,
}

/// The folder of the CLI's files.
pub fn home() -> PathBuf {
    if let Some(dir) = std::env::var_os("KALAM_HOME") {
        return PathBuf::from(dir);
    }
    std::env::home_dir()
        .unwrap_or_else(|| PathBuf::from("."))
        .join(".kalam")
}

fn read_toml<T: for<'de> Deserialize<'de> + Default>(path: &Path) -> Result<T> {
    match std::fs::read_to_string(path) {
        Ok(text) => toml::from_str(&text).map_err(|e| CliError::file(path, e)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(T::default()),
        Err(e) => Err(CliError::file(path, e)),
    }
}

impl Config {
    /// Reads `config.toml` (defaults when absent).
    pub fn load() -> Result<Self> {
        read_toml(&home().join("config.toml"))
    }
}

impl Credentials {
    fn path() -> PathBuf {
        home().join("credentials.toml")
    }

    /// Reads `credentials.toml` (none when absent).
    pub fn load() -> Result<Self> {
        read_toml(&Self::path())
    }

    /// Writes `credentials.toml` with mode 0600 (owner read/write only).
    pub fn save(&self) -> Result<()> {
        let path = Self::path();
        let text = toml::to_string(self).map_err(|e| CliError::file(&path, e))?;
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(|e| CliError::file(dir, e))?;
        }
        write_private(&path, text.as_bytes()).map_err(|e| CliError::file(&path, e))
    }
}

/// Writes `bytes` to `path`, readable and writable by the owner only (also when it existed).
fn write_private(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    #[cfg(unix)]
    {
        use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(path)?;
        file.set_permissions(std::fs::Permissions::from_mode(0o600))?;
        file.write_all(bytes)
    }
    #[cfg(not(unix))]
    {
        std::fs::File::create(path)?.write_all(bytes)
    }
}
