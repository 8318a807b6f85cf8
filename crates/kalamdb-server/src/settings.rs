//! The server's configuration file, `server.toml`: the engine's sections
//! ([`kalamdb_core::config::Config`]) and the transport's `[websocket]`
//! ([`kalamdb_api::WebSocketConfig`]) and `[security.cors]` ([`kalamdb_api::SecurityConfig`]),
//! composed here so that neither crate reads the other's.
//! Loading order: the file (missing = built-in defaults), then `KALAMDB_*` variables, then
//! validation of both parts.

use kalamdb_api::{SecurityConfig, WebSocketConfig};
use kalamdb_core::config::{Config, ConfigError, apply_env};
use std::path::Path;

/// The transport's sections.
const WEBSOCKET: &str = "websocket";
const SECURITY: &str = "security";

/// Everything `server.toml` configures.
#[derive(Debug, Clone, Default)]
pub struct Settings {
    /// The engine's sections (`[server]`, `[storage]`, `[auth]`, `[limits]`, …).
    pub engine: Config,
    /// `[websocket]`.
    pub websocket: WebSocketConfig,
    /// `[security]` (`[security.cors]`).
    pub security: SecurityConfig,
}

impl Settings {
    /// Loads `path` if it exists, applies `KALAMDB_*` variables from `env`, and validates.
    pub fn load(
        path: &Path,
        env: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Self, ConfigError> {
        let settings = Self::from_toml(&Config::read_file(path)?)?.with_env(env)?;
        settings.validate()?;
        Ok(settings)
    }

    /// Parses TOML text (no environment, no validation); unknown sections and keys are errors.
    pub fn from_toml(text: &str) -> Result<Self, ConfigError> {
        let table: toml::Table = toml::from_str(text).map_err(parse_error)?;
        Self::from_table(table)
    }

    /// Applies `KALAMDB_<SECTION>_<KEY>` variables and upstream's aliases to every section.
    pub fn with_env(
        self,
        env: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Self, ConfigError> {
        let mut table = self.to_table()?;
        let env: Vec<(String, String)> = env.into_iter().collect();
        // The nested `[security.cors]` list, by upstream's variable name (comma-separated).
        if let Some((_, origins)) = env
            .iter()
            .find(|(k, _)| k == "KALAMDB_SECURITY_CORS_ALLOWED_ORIGINS")
            && let Some(toml::Value::Table(security)) = table.get_mut(SECURITY)
            && let Some(toml::Value::Table(cors)) = security.get_mut("cors")
        {
            let list = origins
                .split(',')
                .map(str::trim)
                .filter(|o| !o.is_empty())
                .map(|o| toml::Value::String(o.to_string()))
                .collect();
            cors.insert("allowed_origins".into(), toml::Value::Array(list));
        }
        let env = env
            .into_iter()
            .filter(|(k, _)| !k.starts_with("KALAMDB_SECURITY_"));
        apply_env(&mut table, env)?;
        Self::from_table(table)
    }

    /// Checks both parts.
    pub fn validate(&self) -> Result<(), ConfigError> {
        self.engine.validate()?;
        self.security.cors.validate()?;
        self.websocket.validate()
    }

    /// Every `section.key` the file may hold.
    pub fn keys() -> Vec<(String, String)> {
        let table = Self::default().to_table().unwrap_or_default();
        let mut keys = Vec::new();
        for (section, value) in table {
            if let toml::Value::Table(t) = value {
                keys.extend(t.keys().map(|k| (section.clone(), k.clone())));
            }
        }
        keys
    }

    /// The settings as one TOML table of sections.
    pub fn to_table(&self) -> Result<toml::Table, ConfigError> {
        let mut table = toml::Table::try_from(&self.engine).map_err(parse_error)?;
        let websocket = toml::Table::try_from(&self.websocket).map_err(parse_error)?;
        table.insert(WEBSOCKET.into(), toml::Value::Table(websocket));
        let security = toml::Table::try_from(&self.security).map_err(parse_error)?;
        table.insert(SECURITY.into(), toml::Value::Table(security));
        Ok(table)
    }

    fn from_table(mut table: toml::Table) -> Result<Self, ConfigError> {
        let websocket = match table.remove(WEBSOCKET) {
            Some(section) => section.try_into().map_err(parse_error)?,
            None => WebSocketConfig::default(),
        };
        let security = match table.remove(SECURITY) {
            Some(section) => section.try_into().map_err(parse_error)?,
            None => SecurityConfig::default(),
        };
        Ok(Self {
            engine: table.try_into().map_err(parse_error)?,
            websocket,
            security,
        })
    }
}

fn parse_error(e: impl std::fmt::Display) -> ConfigError {
    ConfigError::Parse(e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn example_file_lists_every_key_with_its_default() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../server.example.toml");
        let text = std::fs::read_to_string(&path).unwrap();
        let example: toml::Table = toml::from_str(&text).unwrap();
        let mut listed: Vec<(String, String)> = example
            .iter()
            .flat_map(|(s, t)| {
                t.as_table()
                    .unwrap()
                    .keys()
                    .map(move |k| (s.clone(), k.clone()))
            })
            .collect();
        let mut declared = Settings::keys();
        listed.sort();
        declared.sort();
        assert_eq!(
            listed, declared,
            "server.example.toml must list exactly the declared keys"
        );
        let parsed = Settings::from_toml(&text).unwrap();
        assert_eq!(
            parsed.to_table().unwrap(),
            Settings::default().to_table().unwrap(),
            "the example shows the defaults"
        );
    }

    #[test]
    fn sections_of_both_parts_parse_and_take_env_overrides() {
        let s = Settings::from_toml("[websocket]\noutbound_queue = 7\n[server]\nport = 9\n")
            .unwrap()
            .with_env([
                ("KALAMDB_WEBSOCKET_AUTH_TIMEOUT_SECS".into(), "11".into()),
                ("KALAMDB_DATA_DIR".into(), "/tmp/x".into()),
            ])
            .unwrap();
        assert_eq!(s.websocket.outbound_queue, 7);
        assert_eq!(s.websocket.auth_timeout_secs, 11);
        assert_eq!(s.engine.server.port, 9);
        assert_eq!(s.engine.storage.data_path, "/tmp/x");
        assert!(Settings::from_toml("[websocket]\nqueue = 1\n").is_err());
        assert!(Settings::from_toml("[nonsense]\nx = 1\n").is_err());
        let mut zero = Settings::default();
        zero.websocket.outbound_queue = 0;
        assert!(
            zero.validate()
                .unwrap_err()
                .to_string()
                .contains("outbound_queue")
        );
    }
}
